"""Image remix: reference images steer the prior through their CLIP image embeddings.

Stable Cascade's prior takes CLIP ViT-L/14 image embeddings beside the text
(``clip_img``); diffusers' prior pipeline accepts them as ``image_embeds``. Each
reference image is encoded once (cached by its content), scaled by its
strength, and the scaled embeddings are concatenated. Strength 0 leaves an
image out, so references all at 0 give exactly the image without references.

The encoder is the prior folder's own ``image_encoder`` + ``feature_extractor``
when it has them, else ``openai/clip-vit-large-patch14`` (the encoder Stable
Cascade was built with), downloaded from the Hub on the first remix only.

Example::

    encoder = load_image_encoder(folders.prior, torch.float32)   # on first use
    embeds = encoder.embed(open_image("ref.png"))                 # (1, 1, 768)
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image

from .models import ModelError

FALLBACK_ENCODER = "openai/clip-vit-large-patch14"
_ENCODER_FILES = ["config.json", "preprocessor_config.json", "model.safetensors"]
ENCODER_MAX_SIDE = 1024  # the encoder sees 224x224; a larger picture is shrunk first to save memory


def content_hash(path: str | Path) -> str:
    """SHA-256 of a file's bytes, read in blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass
class ImageEncoder:
    """A CLIP vision tower with projection, and its image processor."""

    model: object  # CLIPVisionModelWithProjection
    processor: object  # CLIPImageProcessor
    source: str

    @property
    def dim(self) -> int:
        return int(self.model.config.projection_dim)

    @torch.no_grad()
    def embed(self, image: Image.Image, device: str | torch.device = "cpu") -> torch.Tensor:
        """The image's projected CLIP embedding, ``(1, 1, dim)`` in fp32 on the CPU."""
        image = image.convert("RGB")
        if max(image.size) > ENCODER_MAX_SIDE:
            image = image.copy()
            image.thumbnail((ENCODER_MAX_SIDE, ENCODER_MAX_SIDE))
        pixels = self.processor(images=image, return_tensors="pt").pixel_values
        param = next(self.model.parameters())
        original = param.device
        moved = str(original) != str(device)
        if moved:
            self.model.to(device)
        try:
            embeds = self.model(pixels.to(device=device, dtype=param.dtype)).image_embeds
        finally:
            if moved:
                self.model.to(original)
        return embeds.float().cpu().unsqueeze(1)


def _encoder_folder(prior_folder: Path, on_status) -> tuple[Path, Path, str]:
    """(model folder, processor folder, label): the prior's own encoder, or the fallback from the Hub."""
    own, extractor = prior_folder / "image_encoder", prior_folder / "feature_extractor"
    if (own / "config.json").is_file() and (extractor / "preprocessor_config.json").is_file():
        return own, extractor, f"{prior_folder.name}/image_encoder"
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    if on_status:
        on_status(f"image remix needs a CLIP image encoder: fetching {FALLBACK_ENCODER} (about 1.7 GB, first use only)")
    try:
        folder = Path(snapshot_download(FALLBACK_ENCODER, allow_patterns=_ENCODER_FILES))
    except LocalEntryNotFoundError:
        raise ModelError(
            f"image remix needs {FALLBACK_ENCODER}, which is not in the local cache and the Hub can't be reached "
            "(offline?); connect once to download it, or use a prior folder that has image_encoder/"
        ) from None
    except (HfHubHTTPError, OSError) as exc:
        raise ModelError(f"downloading {FALLBACK_ENCODER} failed: {str(exc).splitlines()[0][:160]}") from None
    return folder, folder, FALLBACK_ENCODER


def image_processor_class():
    """transformers' CLIP image processor; its Pillow backend where torchvision is not installed."""
    try:
        from transformers import CLIPImageProcessorPil as processor
    except ImportError:  # older transformers: one class for every backend
        from transformers import CLIPImageProcessor as processor
    try:
        import torchvision  # noqa: F401
    except ImportError:
        return processor
    from transformers import CLIPImageProcessor

    return CLIPImageProcessor


def load_image_encoder(prior_folder: Path, dtype: torch.dtype, on_status=None) -> ImageEncoder:
    """Load the image encoder for ``prior_folder`` on the CPU in ``dtype``."""
    from transformers import CLIPVisionModelWithProjection

    model_dir, processor_dir, label = _encoder_folder(Path(prior_folder), on_status)
    try:
        processor = image_processor_class().from_pretrained(processor_dir)
        model = CLIPVisionModelWithProjection.from_pretrained(model_dir, dtype=dtype).eval()
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise ModelError(f"loading the image encoder {label} failed: {str(exc).splitlines()[0][:200]}") from None
    model.requires_grad_(False)
    return ImageEncoder(model, processor, label)
