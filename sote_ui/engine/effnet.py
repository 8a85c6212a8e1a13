"""Stability's EfficientNet encoder: pixels to stage C's latent space, for image to image.

Stage C (the prior) samples in the latent space of the encoder Stable Cascade
was trained with (Stability's ``modules/effnet.py``): the ``features`` of
EfficientNetV2-S, then a mapper (a 1x1 convolution to 16 channels and a
BatchNorm without affine, which leaves the latent at mean 0 and std 1). Its
weights are ``effnet_encoder.safetensors`` at the root of
``stabilityai/stable-cascade`` (about 82 MB, fp32).

The architecture is written here, with torchvision's module names, rather
than imported from torchvision: the key names of the published file are
torchvision's (``backbone.N.M.block.K...``, ``mapper.0.weight``,
``mapper.1.running_mean``...), and torchvision is not always installable
beside the torch build the app runs on. :class:`EffnetConfig` describes the
stage table; :data:`V2_S` is the published one, and a smaller table (the
tiny encoder of the tests and the demo) keeps the same naming scheme. A
file that is not the published layout carries its table in the
safetensors metadata (``effnet_config``).

The input is RGB in 0..1, normalised with ImageNet's mean and std as
Stability's training code does; the encoder downsamples 32 times, so an
image of ``32 h x 32 w`` pixels gives an ``h x w`` latent.

Example::

    encoder = load_effnet(None, "cuda", torch.bfloat16)    # the Hub file, downloaded on first use
    latent = encoder.encode(image)                         # (1, 16, image.height // 32, image.width // 32)
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from ..core.errors import InputError, ModelError
from . import hub
from .module_files import build_strict, read_tensors, save_module

HUB_REPO = "stabilityai/stable-cascade"
HUB_FILE = "effnet_encoder.safetensors"
LAYOUT = "Stability's EfficientNet encoder"  # what a foreign file is said not to be
METADATA_KEY = "effnet_config"  # our own files' stage table; the published file has none
DOWNSCALE = 32  # five stride-2 layers
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_BACKBONE_EPS = 1e-3  # torchvision builds EfficientNetV2 with BatchNorm2d(eps=1e-3); the mapper's keeps 1e-5


@dataclass(frozen=True)
class StageConfig:
    """One stage of EfficientNet: ``layers`` blocks, the first with ``stride`` and the channel change."""

    fused: bool  # FusedMBConv (a full convolution expands) or MBConv (1x1 expand, depthwise, squeeze-excite)
    expand_ratio: int
    kernel: int
    stride: int
    channels: int  # output channels
    layers: int


@dataclass(frozen=True)
class EffnetConfig:
    """The stem's channels, the stage table, the head's channels and the latent's."""

    stem: int
    stages: tuple[StageConfig, ...]
    head: int
    latent_channels: int = 16

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> EffnetConfig:
        data = json.loads(text)
        return cls(int(data["stem"]), tuple(StageConfig(**stage) for stage in data["stages"]), int(data["head"]),
                   int(data.get("latent_channels", 16)))


# EfficientNetV2-S (Tan & Le 2021, table 4), as torchvision builds it and Stability trained on it.
V2_S = EffnetConfig(
    stem=24,
    stages=(
        StageConfig(True, 1, 3, 1, 24, 2),
        StageConfig(True, 4, 3, 2, 48, 4),
        StageConfig(True, 4, 3, 2, 64, 4),
        StageConfig(False, 4, 3, 2, 128, 6),
        StageConfig(False, 6, 3, 1, 160, 9),
        StageConfig(False, 6, 3, 2, 256, 15),
    ),
    head=1280,
)

# The tiny encoder: every kind of block (fused with and without expansion, MBConv with squeeze-excite, a
# residual block) and the five stride-2 layers, so it downsamples 32 times like the real one.
TINY = EffnetConfig(
    stem=8,
    stages=(
        StageConfig(True, 1, 3, 1, 8, 1),
        StageConfig(True, 2, 3, 2, 8, 1),
        StageConfig(True, 2, 3, 2, 16, 1),
        StageConfig(False, 2, 3, 2, 16, 2),
        StageConfig(False, 2, 3, 2, 24, 1),
    ),
    head=32,
)


def _divisible(value: float, divisor: int = 8) -> int:
    # torchvision's _make_divisible: channel counts rounded to a multiple of 8, never down by more than 10%.
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


class _ConvNormAct(nn.Sequential):
    """Conv2d (no bias), BatchNorm, and SiLU unless ``act`` is False: keys ``0.weight``, ``1.*``."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int = 1, groups: int = 1, act: bool = True):
        layers = [nn.Conv2d(c_in, c_out, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
                  nn.BatchNorm2d(c_out, eps=_BACKBONE_EPS)]
        if act:
            layers.append(nn.SiLU(inplace=True))
        super().__init__(*layers)


class _SqueezeExcite(nn.Module):
    def __init__(self, channels: int, squeezed: int):
        super().__init__()
        self.fc1 = nn.Conv2d(channels, squeezed, 1)
        self.fc2 = nn.Conv2d(squeezed, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = self.fc2(nn.functional.silu(self.fc1(nn.functional.adaptive_avg_pool2d(x, 1))))
        return x * torch.sigmoid(scale)


class _Block(nn.Module):
    """One MBConv or FusedMBConv block; a residual where its shape is unchanged.

    Stochastic depth, a training-time drop of the residual branch, is the
    identity at inference and has no weights, so it is left out.
    """

    def __init__(self, stage: StageConfig, c_in: int, stride: int):
        super().__init__()
        c_out = stage.channels
        expanded = _divisible(c_in * stage.expand_ratio)
        if stage.fused:
            if expanded != c_in:
                layers = [_ConvNormAct(c_in, expanded, stage.kernel, stride),
                          _ConvNormAct(expanded, c_out, 1, act=False)]
            else:
                layers = [_ConvNormAct(c_in, c_out, stage.kernel, stride)]
        else:
            layers = [_ConvNormAct(c_in, expanded, 1)] if expanded != c_in else []
            layers += [_ConvNormAct(expanded, expanded, stage.kernel, stride, groups=expanded),
                       _SqueezeExcite(expanded, max(1, c_in // 4)),
                       _ConvNormAct(expanded, c_out, 1, act=False)]
        self.block = nn.Sequential(*layers)
        self.residual = stride == 1 and c_in == c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block(x) if self.residual else self.block(x)


class EfficientNetEncoder(nn.Module):
    """EfficientNet ``features`` (``backbone``) and Stability's ``mapper``, in Stability's key layout."""

    def __init__(self, config: EffnetConfig = V2_S):
        super().__init__()
        self.config = config
        layers: list[nn.Module] = [_ConvNormAct(3, config.stem, 3, stride=2)]
        c_in = config.stem
        for stage in config.stages:
            blocks = []
            for index in range(stage.layers):
                blocks.append(_Block(stage, c_in, stage.stride if index == 0 else 1))
                c_in = stage.channels
            layers.append(nn.Sequential(*blocks))
        layers.append(_ConvNormAct(c_in, config.head, 1))
        self.backbone = nn.Sequential(*layers)
        self.mapper = nn.Sequential(nn.Conv2d(config.head, config.latent_channels, 1, bias=False),
                                    nn.BatchNorm2d(config.latent_channels, affine=False))
        self.eval()

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """``pixels``: (B, 3, H, W) RGB in 0..1. Returns (B, latent_channels, H / 32, W / 32)."""
        mean = torch.tensor(IMAGENET_MEAN, device=pixels.device, dtype=pixels.dtype).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD, device=pixels.device, dtype=pixels.dtype).view(1, 3, 1, 1)
        return self.mapper(self.backbone((pixels - mean) / std))

    @property
    def device(self) -> torch.device:
        return self.mapper[0].weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.mapper[0].weight.dtype

    @torch.no_grad()
    def encode(self, image: Image.Image, device: str | torch.device | None = None) -> torch.Tensor:
        """The latent of ``image`` (sides multiples of 32), in fp32 on the CPU.

        With ``device`` the encoder visits it for this call only and goes back
        where it was (model offload keeps it in CPU memory between uses).
        """
        if image.width % DOWNSCALE or image.height % DOWNSCALE:
            raise InputError(f"the encoder takes sides that are multiples of {DOWNSCALE}, not "
                             f"{image.width}x{image.height}")
        array = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
        home = self.device
        target = torch.device(device) if device is not None else home
        pixels = torch.from_numpy(array).permute(2, 0, 1).unsqueeze(0).to(target, self.dtype)
        moved = target != home
        if moved:
            self.to(target)
        try:
            return self(pixels).float().cpu()
        finally:
            if moved:
                self.to(home)


def latent_size(width: int, height: int, resolution_multiple: float = 42.67) -> tuple[int, int]:
    """(latent height, latent width) the prior samples for ``width`` x ``height``.

    diffusers' ``StableCascadePriorPipeline`` rounds up (``ceil(height /
    resolution_multiple)``) and Stability's ``calculate_latent_sizes`` does
    the same, so 1024x1536 gives 24x36.
    """
    return math.ceil(height / resolution_multiple), math.ceil(width / resolution_multiple)


def encoder_size(width: int, height: int, resolution_multiple: float = 42.67) -> tuple[int, int]:
    """(width, height) in pixels the encoder sees for a ``width`` x ``height`` image: 32 x its latent.

    ComfyUI's ``StableCascade_StageC_VAEEncode`` resizes to ``(side //
    compression) * 32``, which gives a latent one smaller than the prior's
    for most sizes (1024 // 42 = 24, but 1000 // 42 = 23 where diffusers samples 24);
    here it is the prior's own shape, rounded up.
    """
    rows, cols = latent_size(width, height, resolution_multiple)
    return cols * DOWNSCALE, rows * DOWNSCALE


def resize_for_encoder(image: Image.Image, width: int, height: int,
                       resolution_multiple: float = 42.67) -> Image.Image:
    """``image`` (already ``width`` x ``height``) resized to what the encoder sees for that size.

    Bicubic, as ComfyUI's encode node: Pillow's bicubic filter widens with
    the scale, so a downscale is antialiased.
    """
    size = encoder_size(width, height, resolution_multiple)
    return image if image.size == size else image.resize(size, Image.BICUBIC)


def _what(path: Path | None) -> str:
    return f"the EfficientNet encoder {path.name[:80]!r}" if path is not None else \
        f"the EfficientNet encoder {HUB_FILE} of {HUB_REPO}"


_OFFLINE_HINT = (f"pass a local copy with --effnet PATH, or download it once: "
                 f"huggingface-cli download {HUB_REPO} {HUB_FILE}")


def load_effnet(path: str | Path | None, device: str | torch.device = "cpu",
                dtype: torch.dtype = torch.float32) -> EfficientNetEncoder:
    """Load the encoder from ``path`` (a local ``effnet_encoder.safetensors``), else from the Hub.

    Without ``path`` the published file is downloaded into the Hugging Face
    cache on first use. Every key and shape must match (strict): a missing,
    damaged or foreign file is a one-line :class:`ModelError`.
    """
    if path is None:
        file = hub.file(HUB_REPO, HUB_FILE, f"{HUB_FILE} of {HUB_REPO} (the image-to-image encoder)",
                        _OFFLINE_HINT)
        source = None
    else:
        file = source = Path(path).expanduser()
        if not file.is_file():
            raise ModelError(f"{_what(source)} does not exist or is not a file; {_OFFLINE_HINT}")
    tensors, metadata = read_tensors(file, _what(source),
                                     f"download it again: huggingface-cli download {HUB_REPO} {HUB_FILE}")
    try:
        config = EffnetConfig.from_json(metadata[METADATA_KEY]) if METADATA_KEY in metadata else V2_S
    except (ValueError, KeyError, TypeError):
        raise ModelError(f"{_what(source)} has an unreadable {METADATA_KEY} in its metadata") from None
    return build_strict(lambda: EfficientNetEncoder(config), tensors, _what(source), LAYOUT, device, dtype)


def save_effnet(model: EfficientNetEncoder, path: str | Path) -> Path:
    """Write ``model`` as a safetensors file in Stability's key layout (its table in the metadata)."""
    return save_module(model, path, {METADATA_KEY: model.config.to_json()} if model.config != V2_S else None)


__all__ = ["EfficientNetEncoder", "EffnetConfig", "StageConfig", "TINY", "V2_S", "encoder_size", "latent_size",
           "load_effnet", "resize_for_encoder", "save_effnet"]
