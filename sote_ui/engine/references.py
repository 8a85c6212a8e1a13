"""Image remix: reference images steer the prior through their CLIP image embeddings.

Stable Cascade's prior takes CLIP ViT-L/14 image embeddings beside the text
(``clip_img``); diffusers' prior pipeline accepts them as ``image_embeds``. Each
reference image is encoded once (cached by its content) and the embeddings are
concatenated, one per reference. Strength 0 leaves an image out, so
references all at 0 give exactly the image without references.

Strength acts where the prior reads the image: each embedding becomes
``clip_seq`` tokens through a linear map and a LayerNorm without affine. A
LayerNorm ignores scale, so scaling the embedding (as ComfyUI does) barely
moves those tokens (cosine >= 0.995 between strengths 0.5, 1 and 2). Here
the strength interpolates the normalised tokens between what a zero
embedding gives (strength 0: no image) and the image's own tokens (strength
1, exactly the prior's usual input), and extrapolates past 1: the tokens
move in proportion to the strength (:func:`reference_strengths`).

Under classifier-free guidance the unconditional branch sees one zero image
embedding, however many references there are: Stable Cascade was trained
with one image embedding per sample, zeros in nine samples of ten and in its
unconditional samples (Stability's ``train/base.py``), and ComfyUI does the
same. diffusers passes one zero embedding per reference, an input the prior
never saw in training for two references or more.

The encoder is the prior folder's own ``image_encoder`` + ``feature_extractor``
when it has them, else ``openai/clip-vit-large-patch14`` (the encoder Stable
Cascade was built with), downloaded from the Hub on the first remix only.

Example::

    encoder = load_image_encoder(folders.prior, torch.float32)   # on first use
    embeds = encoder.embed(load_reference("ref.png"))             # (1, 1, 768)
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image, ImageOps

from ..core.errors import InputError, ModelError
from ..core.files import file_sha256
from ..core.outputs import open_image
from . import hub
from .caches import LruCache

FALLBACK_ENCODER = "openai/clip-vit-large-patch14"
_ENCODER_FILES = ["config.json", "preprocessor_config.json", "model.safetensors"]
ENCODER_MAX_SIDE = 1024  # the encoder sees 224x224; a larger picture is shrunk first to save memory


def load_reference(path: str | Path) -> Image.Image:
    """A reference image as the encoder should see it: upright, RGB, transparency on white.

    Phones store a portrait photo sideways with an EXIF orientation tag;
    diffusers' ``load_image`` turns it upright, and so do we. Transparent
    areas become white, not black: anime art with a transparent background
    is drawn for a light page, and CLIP saw such images flattened on white.
    """
    try:
        image = open_image(path)
    except InputError as exc:
        raise InputError(f"reference image {Path(path).name[:80]!r}: {exc}") from None
    image = ImageOps.exif_transpose(image)
    if image.has_transparency_data:
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return image.convert("RGB")


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
    if on_status:
        on_status(f"image remix needs a CLIP image encoder: fetching {FALLBACK_ENCODER} (about 1.7 GB, first use only)")
    folder = hub.snapshot(FALLBACK_ENCODER, _ENCODER_FILES, f"{FALLBACK_ENCODER} (the image encoder image remix needs)",
                          "connect once to download it, or use a prior folder that has image_encoder/")
    return folder, folder, FALLBACK_ENCODER


def encoder_source(prior_folder: Path) -> str:
    """Where image remix's encoder will come from, found without downloading; ModelError if it can't be had."""
    own = Path(prior_folder) / "image_encoder"
    if (own / "config.json").is_file() and (Path(prior_folder) / "feature_extractor" / "preprocessor_config.json").is_file():
        return f"the prior's own ({Path(prior_folder).name}/image_encoder)"
    if hub.cached_snapshot(FALLBACK_ENCODER, _ENCODER_FILES) is not None:
        return f"{FALLBACK_ENCODER} (in the local cache)"
    if hub.offline():
        raise ModelError(f"image remix needs the image encoder {FALLBACK_ENCODER}, which is not in the local cache, "
                         "and the Hub is switched off (HF_HUB_OFFLINE): connect once to download it, or use a prior "
                         "folder that has image_encoder/")
    return f"{FALLBACK_ENCODER} (about 1.7 GB, downloaded at the first remix)"


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


class ReferenceEmbeddings:
    """The embeddings of a run's reference images, cached by file content; file hashes cached by mtime and size.

    ``encoder()`` gives the image encoder (loaded by the engine on first use).
    """

    def __init__(self, size: int):
        self._embeds = LruCache(size)  # content hash -> (1, 1, dim) fp32 embedding

    def digest(self, path: str) -> str:
        """The file's content hash (read again only when its mtime or size changed)."""
        try:
            return file_sha256(path)
        except (InputError, OSError):
            raise InputError(f"reference image {Path(path).name[:80]!r} can't be read") from None

    def active(self, request) -> list[tuple]:
        """The references that act (strength above 0), each with its content hash."""
        return [(ref, self.digest(ref.path)) for ref in request.references if ref.strength > 0]

    def prepare(self, jobs, encoder, device) -> int:
        """Encode every reference image the jobs use (once per content), before any denoising; return how many."""
        encoded = 0
        for job in jobs:
            for ref, digest in self.active(job):
                if self._embeds.get(digest) is not None:
                    continue
                self._embeds.put(digest, encoder().embed(load_reference(ref.path), device))
                encoded += 1
        return encoded

    def conditioning(self, request, device, dtype) -> torch.Tensor | None:
        """The concatenated embeddings of the request's active references, or None.

        Their strengths act inside the prior: see :meth:`strengths` and :func:`reference_strengths`.
        """
        active = self.active(request)
        if not active:
            return None
        embeds = torch.cat([self._embeds.get(digest) for _, digest in active], dim=1)
        return embeds.to(device=device, dtype=dtype)

    def strengths(self, request) -> list[float]:
        """The strengths of the request's active references, in the order of :meth:`conditioning`."""
        return [float(ref.strength) for ref, _ in self.active(request)]

    def note(self, request) -> str:
        """How the PNG metadata names the references: file name, content hash, strength."""
        return "; ".join(f"{Path(ref.path).name} sha256:{self.digest(ref.path)[:16]} x{ref.strength:g}"
                         for ref in request.references)

    def clear(self) -> None:
        self._embeds.clear()

    def __len__(self) -> int:
        return len(self._embeds)


@contextmanager
def reference_strengths(prior, strengths: list[float], guided: bool):
    """For the prior calls inside the block: each reference's strength, and one zero image embedding
    in the unconditional branch.

    ``prior`` is the ``StableCascadeUNet`` that gets the references' embeddings (in that order) as
    ``clip_img``; ``guided`` says the pipeline batches a conditional and an unconditional half.

    - Strength ``s`` of reference ``j``: after the prior's ``clip_norm``, its tokens become
      ``zero + s * (tokens - zero)``, ``zero`` being what a zero embedding gives there. Strength 1
      leaves the tokens as they are (the prior's usual input), 0 would be no image.
    - With two references or more under guidance, the unconditional half's extra zero-image tokens
      are masked out of every attention, so it attends to one zero embedding as in training.

    Nothing is installed when neither applies, so such a call is diffusers' own.

    Example::

        with reference_strengths(pipe.prior, [1.0, 0.5], guided=True):
            pipe(..., image_embeds=embeds)
    """
    from diffusers.models.attention_processor import Attention

    handles = []
    replaced = []  # (attention, its own processor)
    seq = int(prior.config.clip_seq)
    count = len(strengths)
    try:
        if any(s != 1 for s in strengths):
            handles.append(prior.clip_norm.register_forward_hook(_strength_hook(prior, strengths, seq)))
        if guided and count > 1:
            for attention in (m for m in prior.modules() if isinstance(m, Attention)):
                replaced.append((attention, attention.processor))
                attention.set_processor(_OneZeroImage(attention.processor, (count - 1) * seq))
        yield
    finally:
        for handle in handles:
            handle.remove()
        for attention, processor in replaced:
            attention.set_processor(processor)


def _strength_hook(prior, strengths: list[float], seq: int):
    def hook(norm, args, tokens):
        count = len(strengths)
        batch, _, width = tokens.shape
        # What a zero embedding gives after the norm: the mapper's bias, normalised. Computed through the
        # modules themselves, so any weight format and offload hook applies.
        zeros = tokens.new_zeros(1, 1, prior.config.clip_image_in_channels)
        zero = torch.nn.functional.layer_norm(prior.clip_img_mapper(zeros).view(1, seq, width).float(),
                                              norm.normalized_shape, eps=norm.eps)
        image = tokens[:, -count * seq:].float().view(batch, count, seq, width)
        scale = torch.tensor(strengths, device=tokens.device).view(1, count, 1, 1)
        mixed = torch.where(scale == 1, image, zero.unsqueeze(1) + scale * (image - zero.unsqueeze(1)))
        return torch.cat([tokens[:, :-count * seq], mixed.view(batch, count * seq, width).to(tokens.dtype)], dim=1)

    return hook


class _OneZeroImage:
    """An attention processor wrapper: the unconditional half of the batch (its second half) does not
    attend to the last ``extra`` keys, the zero-image tokens past the first embedding's."""

    def __init__(self, processor, extra: int):
        self.processor = processor
        self.extra = extra

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, **kwargs):
        if encoder_hidden_states is not None and attention_mask is None:
            batch, keys = encoder_hidden_states.shape[0], encoder_hidden_states.shape[1]
            attention_mask = hidden_states.new_zeros(batch, 1, keys)
            attention_mask[batch // 2:, :, keys - self.extra:] = float("-inf")
        return self.processor(attn, hidden_states, encoder_hidden_states, attention_mask, **kwargs)
