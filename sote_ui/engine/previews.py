"""Live previews of stage C: what the prior's latent looks like while it denoises.

Two ways to draw a 16-channel stage-C latent as a small RGB picture:

- ``previewer``: Stability's small stage-C previewer (a ~4M-parameter CNN, 8x
  upsampling), when its weights are on this machine (``SOTE_PREVIEWER``, a
  ``previewer.safetensors`` in or beside the prior folder, or the Hugging Face
  cache of ``stabilityai/stable-cascade``) or downloaded on request.
- ``fast``: no download. The latent's three principal components (over its
  16 channels) become red, green and blue. The colours are arbitrary, but
  the shapes are the composition; it costs well under a millisecond.

Example::

    previews = PreviewDecoder.create("auto", prior_folder)
    image = previews.decode(latents)          # a PIL image, 8x the latent's size
"""

from __future__ import annotations

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


@torch.no_grad()
def project_latents(latents: torch.Tensor, previous: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(16, h, w)`` latent to ``(3, h, w)`` in 0..1 through its three principal components.

    Returns the picture and the components used. An eigenvector's sign is
    arbitrary, so each is turned to agree with ``previous`` (the last preview's
    components), or without one to have its largest loading positive: the
    colours do not flip from one step to the next.
    """
    channels = latents.shape[0]
    flat = latents.reshape(channels, -1).float()
    centered = flat - flat.mean(dim=1, keepdim=True)
    covariance = centered @ centered.T / max(1, centered.shape[1] - 1)
    _, vectors = torch.linalg.eigh(covariance)  # ascending eigenvalues
    top = vectors[:, -3:].flip(1)  # (channels, 3), strongest first
    if previous is not None and previous.shape == top.shape:
        signs = torch.sign((top * previous).sum(dim=0, keepdim=True))
    else:
        signs = torch.sign(top.gather(0, top.abs().argmax(dim=0, keepdim=True)))
    top = top * torch.where(signs == 0, torch.ones_like(signs), signs)
    rgb = top.T @ centered  # (3, h*w), each row centred on 0
    spread = 2.5 * rgb.std(dim=1, keepdim=True).clamp_min(1e-6)  # +-2.5 sigma fills the 0..1 range
    rgb = (rgb / (2 * spread) + 0.5).clamp(0, 1)
    return rgb.reshape(3, *latents.shape[1:]), top


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
        self._components: torch.Tensor | None = None  # the fast projection's last components

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
        rgb, self._components = project_latents(latent.cpu(), self._components)
        return _to_image(rgb, SCALE)
