"""Live previews of stage C: what the prior's image will be, seen while it denoises.

A preview draws the prior's prediction of the clean latent (x0), not the
noisy latent of the step: four steps into forty that latent is still almost
all noise, while x0 already shows the composition and its colours (ComfyUI
previews x0 too). ``clean_latent_scheduler()`` is diffusers' Wuerstchen
scheduler that also keeps each step's x0; the engine installs it on the prior.

Two ways to draw a 16-channel stage-C latent as a small RGB picture:

- ``previewer``: Stability's small stage-C previewer (a ~4M-parameter CNN, 8x
  upsampling), when its weights are on this machine (``SOTE_PREVIEWER``, a
  ``previewer.safetensors`` in or beside the prior folder, or the Hugging Face
  cache of ``stabilityai/stable-cascade``) or downloaded on request.
- ``fast``: no download. A fixed linear map from the 16 channels to red,
  green and blue (factors fitted to Stable Cascade's stage C), so a latent
  pixel has the same colour whatever the rest of the picture holds; it costs
  well under a millisecond.

Example::

    previews = PreviewDecoder.create("auto", prior_folder)
    image = previews.decode(latents)          # a PIL image, 8x the latent's size
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import torch
from PIL import Image
from torch import nn

from ..core.errors import ModelError
from . import hub

PREVIEWER_REPO = "stabilityai/stable-cascade"
PREVIEWER_FILE = "previewer.safetensors"
KINDS = ("auto", "previewer", "fast", "off")
PREVIEW_EVERY = 4  # prior steps between two live previews (the last step always gives one)
SCALE = 8  # both ways draw the latent 8x larger (the previewer's own upsampling)


class Previewer(nn.Module):
    """Stage-C latent (16 channels) to RGB at 8x: the layer sequence of Stability's published
    previewer, so its ``previewer.safetensors`` loads as it is (``blocks.N.*`` keys)."""

    def __init__(self, c_in: int = 16, c_hidden: int = 512, c_out: int = 3):
        super().__init__()
        layers: list[nn.Module] = []

        def stage(conv: nn.Module, width: int) -> None:
            layers.extend([conv, nn.GELU(), nn.BatchNorm2d(width)])

        stage(nn.Conv2d(c_in, c_hidden, kernel_size=1), c_hidden)
        stage(nn.Conv2d(c_hidden, c_hidden, kernel_size=3, padding=1), c_hidden)
        width = c_hidden
        for out in (c_hidden // 2, c_hidden // 4, c_hidden // 4):  # three 2x upsamplings: 8x in all
            stage(nn.ConvTranspose2d(width, out, kernel_size=2, stride=2), out)
            stage(nn.Conv2d(out, out, kernel_size=3, padding=1), out)
            width = out
        layers.append(nn.Conv2d(width, c_out, kernel_size=1))
        self.blocks = nn.Sequential(*layers)

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        return self.blocks(latents)


def find_previewer(prior_folder: Path | None) -> Path | None:
    """The previewer's weights if they are on this machine; nothing is downloaded."""
    candidates = []
    if os.environ.get("SOTE_PREVIEWER"):
        candidates.append(Path(os.environ["SOTE_PREVIEWER"]).expanduser())
    if prior_folder is not None:
        candidates += [Path(prior_folder) / PREVIEWER_FILE, Path(prior_folder).parent / PREVIEWER_FILE]
    for path in candidates:
        if path.is_file():
            return path
    try:
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(PREVIEWER_REPO, PREVIEWER_FILE)
    except Exception:  # no cache, or a broken one: no previewer
        return None
    return Path(cached) if isinstance(cached, str) else None


def download_previewer() -> Path:
    """Fetch the previewer's weights (about 16 MB) from the Hub, or raise ModelError saying why not."""
    return hub.file(PREVIEWER_REPO, PREVIEWER_FILE, f"the previewer of {PREVIEWER_REPO}",
                    "connect once to download it, or use the fast projection")


def load_previewer(path: Path) -> Previewer:
    from safetensors.torch import load_file

    model = Previewer()
    try:
        model.load_state_dict(load_file(str(path)))
    except (OSError, RuntimeError, ValueError) as exc:
        raise ModelError(f"{path} is not the stage-C previewer: {str(exc).splitlines()[0][:160]}") from None
    return model.eval().requires_grad_(False)


# Stage C latent to RGB: 16 rows (channels) of (R, G, B) factors. Data published by ComfyUI
# (comfy/latent_formats.py, class SC_Prior, its "latent2rgb" previews of Stable Cascade's stage C),
# fitted there on real latents; the product lands in -1..1.
STAGE_C_RGB = (
    (-0.0326, -0.0204, -0.0127), (-0.1592, -0.0427, 0.0216), (0.0873, 0.0638, -0.0020),
    (-0.0602, 0.0442, 0.1304), (0.0800, -0.0313, -0.1796), (-0.0810, -0.0638, -0.1581),
    (0.1791, 0.1180, 0.0967), (0.0740, 0.1416, 0.0432), (-0.1745, -0.1888, -0.1373),
    (0.2412, 0.1577, 0.0928), (0.1908, 0.0998, 0.0682), (0.0209, 0.0365, -0.0092),
    (0.0448, -0.0650, -0.1728), (-0.1658, -0.1045, -0.1308), (0.0542, 0.1545, 0.1325),
    (-0.0352, -0.1672, -0.2541),
)


@torch.no_grad()
def latent_to_rgb(latent: torch.Tensor) -> torch.Tensor:
    """``(16, h, w)`` stage-C latent to ``(3, h, w)`` in 0..1 through the fixed linear map.

    Each latent pixel's colour depends on that pixel alone, so colours mean
    the same from one step, one image and one batch to the next.
    """
    factors = torch.tensor(STAGE_C_RGB, dtype=torch.float32, device=latent.device)  # (16, 3)
    rgb = torch.einsum("chw,cr->rhw", latent.float(), factors)
    return ((rgb + 1) / 2).clamp(0, 1)


@functools.cache
def clean_latent_scheduler():
    """``CleanLatentScheduler``: diffusers' ``DDPMWuerstchenScheduler`` that also keeps each step's
    predicted clean latent (made on first use, so importing this module does not load diffusers).

    The prior predicts the noise (epsilon) in ``x_t = sqrt(a_t) x0 + sqrt(1 - a_t) eps``, ``a_t`` the
    scheduler's cumulative alpha at ``t``, so ``x0 = (x_t - sqrt(1 - a_t) eps) / sqrt(a_t)``, from the
    guided prediction the pipeline hands to ``step``. The steps themselves are the parent's, unchanged:
    an image is the same with or without previews.
    """
    from diffusers import DDPMWuerstchenScheduler

    class CleanLatentScheduler(DDPMWuerstchenScheduler):
        predicted_x0: torch.Tensor | None = None

        def step(self, model_output, timestep, sample, generator=None, return_dict=True):
            alpha = self._alpha_cumprod(timestep, model_output.device).float().view(-1, 1, 1, 1)
            self.predicted_x0 = (sample.float() - (1 - alpha).sqrt() * model_output.float()) / alpha.sqrt()
            return super().step(model_output, timestep, sample, generator=generator, return_dict=return_dict)

    return CleanLatentScheduler


def watch_clean_latents(pipe) -> None:
    """Give the prior pipeline a ``CleanLatentScheduler`` with its scheduler's config (once)."""
    from diffusers import DDPMWuerstchenScheduler

    if type(pipe.scheduler) is DDPMWuerstchenScheduler:
        pipe.scheduler = clean_latent_scheduler().from_config(pipe.scheduler.config)


def clean_latents(pipe, latents: torch.Tensor) -> torch.Tensor:
    """The last step's predicted clean latent, or ``latents`` where the scheduler keeps none."""
    predicted = getattr(pipe.scheduler, "predicted_x0", None)
    return predicted if predicted is not None and predicted.shape == latents.shape else latents


def _to_image(rgb: torch.Tensor, scale: int) -> Image.Image:
    pixels = (rgb.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    image = Image.fromarray(pixels)
    if scale > 1:
        image = image.resize((image.width * scale, image.height * scale), Image.Resampling.NEAREST)
    return image


class PreviewDecoder:
    """Draws stage-C latents; ``kind`` is ``previewer`` or ``fast``."""

    def __init__(self, kind: str, previewer: Previewer | None = None, note: str = ""):
        self.kind = kind
        self.previewer = previewer
        self.note = note

    @classmethod
    def create(cls, kind: str, prior_folder: Path | None) -> "PreviewDecoder | None":
        """``auto``: the previewer if it is here, else ``fast``; ``previewer``: download it if needed
        (falling back to ``fast`` with a note when that fails); ``off``: None."""
        if kind not in KINDS:
            raise ValueError(f"unknown preview kind {kind!r}; choose one of: {', '.join(KINDS)}")
        if kind == "off":
            return None
        if kind == "fast":
            return cls("fast")
        path = find_previewer(prior_folder)
        note = ""
        if path is None and kind == "previewer":
            try:
                path = download_previewer()
            except ModelError as exc:
                note = f"{exc}; previews use the fast projection"
        if path is None:
            return cls("fast", note=note)
        try:
            return cls("previewer", load_previewer(path))
        except ModelError as exc:
            return cls("fast", note=f"{exc}; previews use the fast projection")

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> Image.Image:
        """The first latent of a ``(B, 16, h, w)`` batch as a PIL image, 8x its size."""
        latent = latents[0].detach()
        if self.previewer is not None:  # on the latent's device: a few milliseconds on a GPU
            self.previewer.to(latent.device)
            rgb = self.previewer(latent[None].float())[0]
            return _to_image(rgb, 1)
        return _to_image(latent_to_rgb(latent), SCALE)
