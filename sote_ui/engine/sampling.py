"""Samplers for both stages on Stable Cascade's cosine schedule, with shift, and our own stage-C loop.

Both stages are trained on one continuous-time cosine schedule (Stability's
``gdf``): at time ``t`` in 0..1 the latent is ``sqrt(a) x0 + sqrt(1 - a) eps``
with ``a = cos((t + s) / (1 + s) * pi/2)^2 / cos(s / (1 + s) * pi/2)^2``,
``s = 0.008``, clamped to 0.0001..0.9999. A *shift* moves every noise level:
``logSNR(t) - 2 log(shift)``; the model is then told the time ``t`` that has
that noise level on the unshifted schedule (what Stability's and ComfyUI's
Stable Cascade code does). Shift 1.0 is the schedule itself.

Every sampler runs the steps of ``t`` = 1, (N-1)/N, ..., 1/N down to 0 (the
grid of diffusers' ``DDPMWuerstchenScheduler``; in A1111's words "SGM uniform"):

- ``ddpm``: diffusers' Wuerstchen DDPM step. At shift 1.0 it *is* diffusers'
  scheduler, so images are the model card's script's, pixel for pixel.
- ``dpmpp_2m``: DPM-Solver++(2M) (Lu et al. 2022), data prediction, multistep.
- ``euler_a``: Euler ancestral (Karras et al. 2022; k-diffusion's, eta 1).
- ``lcm``: LCM's multistep sampling (Luo et al. 2023): predict x0, renoise to the next level.

Image to image starts part way: the start latent is noised to the level of
``t = k / N`` and only the last ``k`` steps run (``k = round(N * denoise)``,
see :func:`steps_for`).

Example::

    sampler = make_sampler("dpmpp_2m", steps=20, shift=2.0)
    latents = sampler.start_latents(noise)          # or sampler.start_latents(noise, init_latents, k)
    for i in sampler.indices():
        eps = model(latents, sampler.model_timestep(i))
        latents = sampler.step(i, eps, latents, generator)
"""

from __future__ import annotations

import functools
import math
from typing import Callable

import torch

from ..core.request import DECODER_SAMPLERS

COSINE_S = 0.008
CLAMP = (0.0001, 0.9999)
_INIT = math.cos(COSINE_S / (1 + COSINE_S) * math.pi * 0.5) ** 2


def steps_for(steps: int, denoise: float) -> int:
    """The steps an image-to-image run takes of a ``steps``-step schedule: ``round(steps * denoise)``."""
    return max(0, min(steps, round(steps * denoise)))


def alpha_bar(t: torch.Tensor, shift: float = 1.0) -> torch.Tensor:
    """The signal level ``a`` at time ``t`` of the shifted cosine schedule (float32)."""
    t = torch.as_tensor(t, dtype=torch.float32)
    s = torch.tensor([COSINE_S])
    init = torch.cos(s / (1 + s) * torch.pi * 0.5) ** 2
    a = torch.cos((t + s) / (1 + s) * torch.pi * 0.5) ** 2 / init
    if shift != 1.0:
        a = a.clamp(1e-12, 1 - 1e-7)  # keep the logit finite; the clamp below sets the real bounds
        a = torch.sigmoid(torch.log(a / (1 - a)) - 2 * math.log(shift))
    return a.clamp(*CLAMP)


def model_time(a: torch.Tensor) -> torch.Tensor:
    """The time the model is told for signal level ``a``: its time on the unshifted schedule."""
    a = torch.as_tensor(a, dtype=torch.float32).clamp(0, 1)
    return torch.acos((a * _INIT).sqrt()) / (torch.pi * 0.5) * (1 + COSINE_S) - COSINE_S


@functools.cache
def _wuerstchen_scheduler():
    """diffusers' ``DDPMWuerstchenScheduler`` with a shift (made on first use: importing this module does not
    load diffusers). At shift 1.0 its steps are the parent's, unchanged."""
    from diffusers import DDPMWuerstchenScheduler

    class ShiftedWuerstchenScheduler(DDPMWuerstchenScheduler):
        shift = 1.0

        def _alpha_cumprod(self, t, device):
            if self.shift == 1.0:
                return super()._alpha_cumprod(t, device)
            return alpha_bar(t.float().cpu(), self.shift).to(device)

    return ShiftedWuerstchenScheduler


class Sampler:
    """One stage's steps: the ``steps``-step grid of ``t`` from 1 to 0, a sampler and a shift.

    The latents are kept as the model sees them (``sqrt(a) x0 + sqrt(1 - a) eps``),
    as diffusers' pipelines keep them; after each :meth:`step`, ``predicted_x0``
    is the model's guess of the clean latent (what previews draw).
    """

    def __init__(self, name: str, steps: int, shift: float = 1.0):
        if name not in DECODER_SAMPLERS:
            raise ValueError(f"unknown sampler {name!r}")
        self.name, self.steps, self.shift = name, int(steps), float(shift)
        self.times = torch.linspace(1.0, 0.0, self.steps + 1)  # diffusers' grid, in float32
        self.alphas = alpha_bar(self.times, self.shift)
        self.alphas[-1] = 1.0  # t = 0 is the clean latent itself
        self.sigmas = ((1 - self.alphas) / self.alphas).sqrt()  # noise over signal, k-diffusion's sigma
        self.first = 0
        self.predicted_x0: torch.Tensor | None = None
        self._previous_x0: torch.Tensor | None = None
        self._ddpm = None
        if name == "ddpm":
            self._ddpm = _wuerstchen_scheduler()()
            self._ddpm.shift = self.shift
            self._ddpm.set_timesteps(self.steps)

    def indices(self) -> range:
        """The indices of the steps that run (the last ``k`` of an image-to-image run)."""
        return range(self.first, self.steps)

    @property
    def run_steps(self) -> int:
        return self.steps - self.first

    def model_timestep(self, i: int) -> torch.Tensor:
        """What the model is told at step ``i`` (diffusers' ``t`` itself for DDPM at shift 1.0)."""
        if self.name == "ddpm" and self.shift == 1.0:
            return self.times[i]  # diffusers' t itself
        return model_time(alpha_bar(self.times[i], self.shift)).reshape(())

    def start_latents(self, noise: torch.Tensor, init_latents: torch.Tensor | None = None,
                      steps: int | None = None) -> torch.Tensor:
        """The latent the first step starts from: ``noise`` alone (text to image), or ``init_latents`` noised to
        the level of the first of the last ``steps`` steps (image to image; 0 steps keeps them as they are)."""
        if init_latents is None or steps is None or steps >= self.steps:
            self.first = 0
            return noise
        self.first = self.steps - max(0, steps)
        a = self.alphas[self.first].to(noise.device)
        if self.first >= self.steps:
            return init_latents.to(noise.dtype)
        mixed = a.sqrt() * init_latents.float() + (1 - a).sqrt() * noise.float()
        return mixed.to(noise.dtype)

    def ddpm_time(self, i: int, dtype: torch.dtype) -> torch.Tensor:
        """Step ``i``'s time as diffusers' pipelines hand it to the scheduler: in the model's dtype."""
        return self.times[i:i + 1].to(dtype)

    def step(self, i: int, eps: torch.Tensor, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """The latent after step ``i`` given the (guided) noise prediction ``eps``."""
        from diffusers.utils.torch_utils import randn_tensor

        if self.name == "ddpm":
            t = self.ddpm_time(i, eps.dtype).to(x.device).expand(x.shape[0])
            a = self._ddpm._alpha_cumprod(t, x.device).float().view(-1, *[1] * (x.ndim - 1))
            self.predicted_x0 = (x.float() - (1 - a).sqrt() * eps.float()) / a.sqrt()
            return self._ddpm.step(eps, t, x, generator=generator).prev_sample
        a = self.alphas[i].to(x.device)
        x0 = (x.float() - (1 - a).sqrt() * eps.float()) / a.sqrt()
        self.predicted_x0 = x0
        a_next = self.alphas[i + 1].to(x.device)
        sigma, sigma_next = self.sigmas[i].item(), self.sigmas[i + 1].item()
        if self.name == "lcm":
            out = x0
            if sigma_next > 0:
                noise = randn_tensor(x.shape, generator=generator, device=x.device, dtype=x.dtype).float()
                out = a_next.sqrt() * x0 + (1 - a_next).sqrt() * noise
            return out.to(x.dtype)
        x_ve = x.float() / self.alphas[i].to(x.device).sqrt()  # k-diffusion's x = x0 + sigma * eps
        if self.name == "euler_a":
            sigma_up = min(sigma_next, math.sqrt(max(0.0, sigma_next ** 2 * (sigma ** 2 - sigma_next ** 2)
                                                     / sigma ** 2)))
            sigma_down = math.sqrt(max(0.0, sigma_next ** 2 - sigma_up ** 2))
            out = x_ve + (x_ve - x0) / sigma * (sigma_down - sigma)
            if sigma_next > 0:
                noise = randn_tensor(x.shape, generator=generator, device=x.device, dtype=x.dtype).float()
                out = out + noise * sigma_up
        else:  # dpmpp_2m
            if sigma_next == 0:
                out = x0
            else:
                h = math.log(sigma) - math.log(sigma_next)
                denoised = x0
                if self._previous_x0 is not None and i > self.first:
                    h_last = math.log(self.sigmas[i - 1].item()) - math.log(sigma)
                    r = h_last / h
                    denoised = (1 + 1 / (2 * r)) * x0 - (1 / (2 * r)) * self._previous_x0
                out = (sigma_next / sigma) * x_ve - math.expm1(-h) * denoised
            self._previous_x0 = x0
        return (out * a_next.sqrt()).to(x.dtype)


def make_sampler(name: str, steps: int, shift: float = 1.0) -> Sampler:
    """A :class:`Sampler` for ``steps`` steps of ``name`` at ``shift``."""
    return Sampler(name, steps, shift)


def decoder_scheduler(name: str, shift: float, config):
    """A scheduler for diffusers' decoder pipeline that steps with sampler ``name`` at ``shift``.

    The pipeline asks it for its timesteps, hands them to the model, and calls
    :meth:`step` with each; it is a ``DDPMWuerstchenScheduler`` to the pipeline,
    so it passes them on unchanged.
    """
    scheduler = _sampler_scheduler().from_config(config)
    scheduler.sampler_name, scheduler.shift = name, shift
    return scheduler


@functools.cache
def _sampler_scheduler():
    from diffusers import DDPMWuerstchenScheduler
    from diffusers.schedulers.scheduling_ddpm_wuerstchen import DDPMWuerstchenSchedulerOutput

    class SamplerScheduler(DDPMWuerstchenScheduler):
        sampler_name = "ddpm"
        shift = 1.0
        sampler: Sampler | None = None

        def set_timesteps(self, num_inference_steps=None, timesteps=None, device=None):
            self.sampler = Sampler(self.sampler_name, num_inference_steps, self.shift)
            # What the model is told at each step, then the end: the pipeline drops the last one.
            told = torch.stack([self.sampler.model_timestep(i) for i in range(num_inference_steps)] +
                               [torch.tensor(0.0)])
            self.timesteps = told.to(device)
            self._told = told

        def step(self, model_output, timestep, sample, generator=None, return_dict=True):
            index = int((self._told - timestep[0].float().cpu()).abs().argmin())
            prev = self.sampler.step(index, model_output, sample, generator)
            return DDPMWuerstchenSchedulerOutput(prev_sample=prev) if return_dict else (prev,)

    return SamplerScheduler


def run_prior(pipe, conditioning: dict, image_embeds: torch.Tensor | None, width: int, height: int, *, steps: int,
              guidance_scale: float, generator: torch.Generator, sampler: str = "ddpm", shift: float = 1.0,
              init_latents: torch.Tensor | None = None, run_steps: int | None = None,
              on_step: Callable[[int, int, torch.Tensor, torch.Tensor], None] | None = None) -> torch.Tensor:
    """Stage C: the prior's latent for one image, with our sampler loop around diffusers' prior model.

    ``conditioning`` is :meth:`PromptEmbeds.conditioning` (negative embeddings
    only when ``guidance_scale`` > 1); ``image_embeds`` the reference images'
    CLIP embeddings or None. With ``init_latents`` (image to image) only the
    last ``run_steps`` of the ``steps``-step schedule run. ``on_step(done,
    total, latents, predicted_x0)`` is called after each step and may raise to
    stop. The noise is drawn from ``generator`` as diffusers' pipeline draws it,
    so with ``ddpm`` at shift 1.0 the result is the pipeline's.
    """
    from diffusers.utils.torch_utils import randn_tensor

    # 1. Conditioning, as the pipeline prepares it
    device = pipe._execution_device
    dtype = next(pipe.prior.parameters()).dtype
    guided = guidance_scale > 1
    text_dtype = pipe.text_encoder.dtype
    prompt = conditioning["prompt_embeds"].to(dtype=text_dtype, device=device)
    pooled = conditioning["prompt_embeds_pooled"].to(dtype=text_dtype, device=device)
    clip_dim = pipe.prior.config.clip_image_in_channels
    if image_embeds is not None:
        image = image_embeds.to(device=device, dtype=dtype)
        uncond_image = torch.zeros_like(image)
    else:
        image = torch.zeros(1, 1, clip_dim, device=device, dtype=dtype)
        uncond_image = torch.zeros(1, 1, clip_dim, device=device, dtype=dtype)
    if guided:
        negative = conditioning["negative_prompt_embeds"].to(dtype=text_dtype, device=device)
        negative_pooled = conditioning["negative_prompt_embeds_pooled"].to(dtype=text_dtype, device=device)
        clip_text, clip_pooled = torch.cat([prompt, negative]), torch.cat([pooled, negative_pooled])
        clip_img = torch.cat([image, uncond_image])
    else:
        clip_text, clip_pooled, clip_img = prompt, pooled, image

    # 2. The start latent: the pipeline's noise, or the start image's latent noised to the first step run
    shape = (1, pipe.prior.config.in_channels, math.ceil(height / pipe.config.resolution_multiple),
             math.ceil(width / pipe.config.resolution_multiple))
    schedule = make_sampler(sampler, steps, shift)
    noise = randn_tensor(shape, generator=generator, device=device, dtype=dtype)
    if init_latents is not None and tuple(init_latents.shape) != shape:
        raise ValueError(f"the start latent is {tuple(init_latents.shape)}; this size needs {shape}")
    latents = schedule.start_latents(noise, None if init_latents is None else init_latents.to(device), run_steps)

    # 3. The steps
    total = schedule.run_steps
    for done, i in enumerate(schedule.indices(), start=1):
        r = schedule.model_timestep(i).to(device=device, dtype=dtype).expand(1)
        predicted = pipe.prior(
            sample=torch.cat([latents] * 2) if guided else latents,
            timestep_ratio=torch.cat([r] * 2) if guided else r,
            clip_text_pooled=clip_pooled,
            clip_text=clip_text,
            clip_img=clip_img,
            return_dict=False,
        )[0]
        if guided:
            cond, uncond = predicted.chunk(2)
            predicted = torch.lerp(uncond, cond, guidance_scale)
        latents = schedule.step(i, predicted, latents, generator)
        if on_step is not None:
            on_step(done, total, latents, schedule.predicted_x0)
    pipe.maybe_free_model_hooks()
    return latents


__all__ = ["Sampler", "alpha_bar", "decoder_scheduler", "make_sampler", "model_time", "run_prior", "steps_for"]
