"""The samplers of both stages, checked against references written here from the papers' formulas.

Each reference runs k-diffusion's way, in float64, on the noise-over-signal scale ``sigma`` (the
latent ``x0 + sigma * eps``), with the cosine schedule written from Stability's description: the
tiny model's own prior and decoder give the noise predictions. The engine keeps the latent as the
model sees it (``x / sqrt(1 + sigma^2)``) in float32, so the two agree to float32 rounding.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from support import SMALL, pixels

from sote_ui.core.request import build_request
from sote_ui.engine.sampling import alpha_bar, decoder_scheduler, model_time, run_prior, steps_for

STEPS = 6
GUIDANCE = 4.0


# 1. The reference: schedule and samplers from the formulas --------------------------------------

def ref_alpha(t: float, shift: float) -> float:
    """Stable Cascade's cosine schedule, its logSNR moved by -2 log(shift), clamped as in training."""
    s = 0.008
    a = math.cos((t + s) / (1 + s) * math.pi / 2) ** 2 / math.cos(s / (1 + s) * math.pi / 2) ** 2
    if shift != 1.0:
        a = min(max(a, 1e-12), 1 - 1e-7)
        log_snr = math.log(a / (1 - a)) - 2 * math.log(shift)
        a = 1 / (1 + math.exp(-log_snr))
    return min(max(a, 1e-4), 0.9999)


def ref_time(a: float) -> float:
    """The unshifted schedule's time of signal level ``a`` (what the model is conditioned on)."""
    s = 0.008
    init = math.cos(s / (1 + s) * math.pi / 2) ** 2
    return math.acos(math.sqrt(a * init)) / (math.pi / 2) * (1 + s) - s


def ref_sigmas(steps: int, shift: float) -> list[float]:
    sigmas = []
    for i in range(steps):
        a = ref_alpha(1 - i / steps, shift)
        sigmas.append(math.sqrt((1 - a) / a))
    return sigmas + [0.0]


def ref_sample(eps_fn, name: str, steps: int, shift: float, noise: torch.Tensor, draw, first: int = 0,
               start: torch.Tensor | None = None) -> torch.Tensor:
    """k-diffusion's samplers. ``eps_fn(x_model, t)`` is the model; ``draw()`` the next standard-normal noise.
    Returns the final latent (sigma 0: the clean latent)."""
    sigmas = ref_sigmas(steps, shift)
    sigma0 = sigmas[first]
    if start is None:
        x = noise.double() * math.sqrt(1 + sigma0 ** 2)  # the model's input at the first step is the noise itself
    else:
        x = start.double() + sigma0 * noise.double()

    def denoise(x, sigma):
        a = 1 / (1 + sigma ** 2)
        eps = eps_fn((x * math.sqrt(a)).float(), ref_time(a)).double()
        return x - sigma * eps

    old = None
    for i in range(first, steps):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        d0 = denoise(x, sigma)
        if name == "euler_a":  # Karras et al. (2022), ancestral: step down to sigma_down, add noise up to sigma_next
            up = min(sigma_next, math.sqrt(sigma_next ** 2 * (sigma ** 2 - sigma_next ** 2) / sigma ** 2))
            down = math.sqrt(sigma_next ** 2 - up ** 2)
            x = x + (x - d0) / sigma * (down - sigma)
            if sigma_next > 0:
                x = x + draw().double() * up
        elif name == "dpmpp_2m":  # Lu et al. (2022), DPM-Solver++(2M), lambda = -log sigma
            if sigma_next == 0:
                x = d0
            else:
                h = math.log(sigma / sigma_next)
                d = d0
                if old is not None:
                    r = math.log(sigmas[i - 1] / sigma) / h
                    d = (1 + 1 / (2 * r)) * d0 - 1 / (2 * r) * old
                x = (sigma_next / sigma) * x - math.expm1(-h) * d
            old = d0
        elif name == "lcm":  # Luo et al. (2023): the prediction, renoised to the next level
            x = d0 + (draw().double() * sigma_next if sigma_next > 0 else 0)
        else:
            raise AssertionError(name)
    return x


def ref_ddpm(eps_fn, steps: int, shift: float, noise: torch.Tensor, draw) -> torch.Tensor:
    """Ho et al. (2020)'s ancestral step on the shifted cosine schedule, in the model's own scale. Unshifted,
    the model is told t itself (diffusers' Wuerstchen convention, kept so default images stay the same)."""
    x = noise.double()
    for i in range(steps):
        t, t_next = 1 - i / steps, 1 - (i + 1) / steps
        a, a_next = ref_alpha(t, shift), ref_alpha(t_next, shift)
        eps = eps_fn(x.float(), t if shift == 1.0 else ref_time(a)).double()
        alpha = a / a_next
        mean = (x - (1 - alpha) * eps / math.sqrt(1 - a)) / math.sqrt(alpha)
        z = draw().double()
        if t_next > 0:
            x = mean + math.sqrt((1 - alpha) * (1 - a_next) / (1 - a)) * z
        else:
            x = mean
    return x


# 2. The tiny prior as the references call it -------------------------------------------------------

def _prior_eps(engine, request):
    pipe = engine.prior_pipe
    embeds = engine.encode(request)
    clip_text = torch.cat([embeds.prompt, embeds.negative])
    clip_pooled = torch.cat([embeds.prompt_pooled, embeds.negative_pooled])
    clip_img = torch.zeros(2, 1, pipe.prior.config.clip_image_in_channels)

    @torch.no_grad()
    def eps(x, t):
        out = pipe.prior(sample=torch.cat([x, x]), timestep_ratio=torch.tensor([t, t], dtype=torch.float32),
                         clip_text_pooled=clip_pooled, clip_text=clip_text, clip_img=clip_img, return_dict=False)[0]
        cond, uncond = out.chunk(2)
        return uncond + GUIDANCE * (cond - uncond)

    return eps, embeds


def _ours(engine, embeds, sampler, shift, seed, **kw):
    generator = torch.Generator("cpu").manual_seed(seed)
    with torch.no_grad():
        return run_prior(engine.prior_pipe, embeds.conditioning(guided=True), None, 256, 256, steps=STEPS,
                         guidance_scale=GUIDANCE, generator=generator, sampler=sampler, shift=shift, **kw)


def _draws(seed, shape):
    generator = torch.Generator("cpu").manual_seed(seed)
    noise = torch.randn(shape, generator=generator)
    return noise, lambda: torch.randn(shape, generator=generator)


def _close(ours, reference):
    ours, reference = ours.double(), reference.double()
    return ((ours - reference).norm() / reference.norm()).item()


SHAPE = (1, 16, 6, 6)  # 256 x 256 at the tiny prior's resolution multiple (42.67)


@pytest.mark.parametrize("sampler", ["dpmpp_2m", "euler_a"])
@pytest.mark.parametrize("shift", [1.0, 2.0])
def test_prior_samplers_match_the_reference(engine, sampler, shift):
    request = build_request({**SMALL, "prior_cfg": GUIDANCE})
    eps, embeds = _prior_eps(engine, request)
    ours = _ours(engine, embeds, sampler, shift, 5)
    noise, draw = _draws(5, SHAPE)
    reference = ref_sample(eps, sampler, STEPS, shift, noise, draw)
    assert _close(ours, reference) < 1e-4
    assert reference.norm() > 1  # a real latent, not zeros agreeing with zeros


@pytest.mark.parametrize("shift", [1.0, 2.0])
def test_ddpm_matches_the_reference_and_shift_changes_it(engine, shift):
    request = build_request({**SMALL, "prior_cfg": GUIDANCE})
    eps, embeds = _prior_eps(engine, request)
    ours = _ours(engine, embeds, "ddpm", shift, 9)
    noise, draw = _draws(9, SHAPE)
    reference = ref_ddpm(eps, STEPS, shift, noise, draw)
    assert _close(ours, reference) < 1e-4
    if shift != 1.0:
        assert _close(ours, _ours(engine, embeds, "ddpm", 1.0, 9)) > 1e-2


def test_image_to_image_starts_at_the_remaining_steps(engine):
    request = build_request({**SMALL, "prior_cfg": GUIDANCE})
    eps, embeds = _prior_eps(engine, request)
    start = torch.randn(SHAPE, generator=torch.Generator("cpu").manual_seed(3))
    k = steps_for(STEPS, 0.5)
    seen = []
    ours = _ours(engine, embeds, "dpmpp_2m", 2.0, 11, init_latents=start, run_steps=k,
                 on_step=lambda done, total, latents, x0: seen.append((done, total)))
    assert seen == [(1, 3), (2, 3), (3, 3)]
    noise, draw = _draws(11, SHAPE)
    reference = ref_sample(eps, "dpmpp_2m", STEPS, 2.0, noise, draw, first=STEPS - k, start=start)
    assert _close(ours, reference) < 1e-4
    # 0 steps: the start latent as it is; all steps: the start latent is ignored (text to image)
    assert torch.equal(_ours(engine, embeds, "euler_a", 1.0, 11, init_latents=start, run_steps=0), start)
    assert torch.equal(_ours(engine, embeds, "euler_a", 1.0, 11, init_latents=start, run_steps=STEPS),
                       _ours(engine, embeds, "euler_a", 1.0, 11))


def test_the_schedule_helpers_agree_with_the_reference():
    for shift in (0.5, 1.0, 2.0, 4.0):
        for t in (0.0, 0.1, 0.5, 0.9, 1.0):
            assert alpha_bar(torch.tensor([t]), shift).item() == pytest.approx(ref_alpha(t, shift), rel=1e-5)
    for a in (1e-4, 0.2, 0.7, 0.9999):
        assert model_time(torch.tensor([a])).item() == pytest.approx(ref_time(a), abs=1e-5)
    assert steps_for(40, 0.75) == 30 and steps_for(40, 0) == 0 and steps_for(40, 1) == 40


# 3. The decoder's samplers --------------------------------------------------------------------------

@pytest.mark.parametrize(("sampler", "shift"), [("dpmpp_2m", 1.0), ("euler_a", 1.0), ("lcm", 1.0),
                                                 ("euler_a", 2.0)])
def test_decoder_samplers_match_the_reference(engine, sampler, shift):
    engine.generate(build_request(SMALL))
    prior = engine.cached_priors()[-1].latents
    pipe = engine.decoder_pipe
    embeds = engine.encode(build_request(SMALL))
    own = pipe.scheduler
    pipe.scheduler = decoder_scheduler(sampler, shift, own.config)
    try:
        with torch.no_grad():
            ours = pipe(image_embeddings=prior, prompt_embeds=embeds.prompt, prompt_embeds_pooled=embeds.prompt_pooled,
                        num_inference_steps=4, guidance_scale=1.0, generator=torch.Generator("cpu").manual_seed(2),
                        output_type="latent").images
    finally:
        pipe.scheduler = own

    @torch.no_grad()
    def eps(x, t):
        return pipe.decoder(sample=x, timestep_ratio=torch.tensor([t], dtype=torch.float32),
                            clip_text_pooled=embeds.prompt_pooled, effnet=prior, return_dict=False)[0]

    noise, draw = _draws(2, tuple(ours.shape))
    reference = ref_sample(eps, sampler, 4, shift, noise, draw)
    assert _close(ours, reference) < 1e-4


# 4. Through the engine: defaults unchanged, shift and sampler change the image ---------------------

def test_shift_and_samplers_change_the_image_defaults_do_not(engine):
    base = engine.generate(build_request(SMALL))
    again = engine.generate(build_request({**SMALL, "prior_sampler": "ddpm", "prior_shift": 1.0,
                                           "decoder_sampler": "ddpm", "decoder_shift": 1.0}))
    assert np.array_equal(pixels(base), pixels(again))
    seen = {}
    for change in ({"prior_shift": 2.0}, {"decoder_shift": 2.0}, {"prior_sampler": "dpmpp_2m"},
                   {"prior_sampler": "euler_a"}, {"decoder_sampler": "lcm"}, {"decoder_sampler": "euler_a"}):
        result = engine.generate(build_request({**SMALL, **change}))
        image = pixels(result)
        assert not np.array_equal(image, pixels(base)), change
        assert (result.counters.prior_steps, result.counters.decoder_steps) == \
            ((SMALL["prior_steps"] if "decoder_shift" not in change and "decoder_sampler" not in change else 0),
             SMALL["decoder_steps"])
        seen[str(change)] = image
        again = engine.generate(build_request({**SMALL, **change}))
        assert np.array_equal(pixels(again), image)  # deterministic


def test_previews_draw_the_predicted_clean_latent_with_every_sampler(engine):
    for sampler in ("dpmpp_2m", "euler_a"):
        previews = []
        engine.preview_every = 1
        try:
            engine.generate_many([build_request({**SMALL, "prior_sampler": sampler, "seed": 77})],
                                 on_preview=previews.append)
        finally:
            from sote_ui.engine.previews import PREVIEW_EVERY

            engine.preview_every = PREVIEW_EVERY
        assert [p.step for p in previews] == [1, 2, 3]
        assert previews[-1].image.size == (6 * 8, 6 * 8)
