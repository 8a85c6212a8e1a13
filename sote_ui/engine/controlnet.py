"""Stability's ControlNets for stage C: the module, loading its files, and the hooks that apply it.

Stability published three ControlNets for the Stable Cascade prior in
``stabilityai/stable-cascade`` (folder ``controlnet/``): ``canny`` (an edge
map in, about 218 MB), ``inpainting`` (the image with its masked area white,
plus the mask: 4 channels, about 218 MB) and ``super_resolution`` (the
EfficientNet latent of a half-size image, about 814 MB). Each is a backbone
(EfficientNetV2-S ``features`` with its stem widened or narrowed to the
input's channels, or for super-resolution a stack of 1x1 convolutions and
residual blocks) feeding one projection head per controlled ResBlock call of
the prior. Their outputs are added to the prior's activations right before
those ResBlock calls, counted in call order over the down then the up blocks
(Stability's ``modules/stage_c.py``); the published files control calls 0, 4,
8, 12, 51, 55, 59 and 63 of the 64.

diffusers' ``StableCascadeUNet`` has no control input, so :func:`controlled`
installs forward pre-hooks on its ``SDCascadeResBlock`` modules for the
length of one prior run. Hooks sit on the modules themselves, so they work
whatever loop drives the UNet and in every memory mode (offload's hooks move
weights; quantized layers live inside the blocks).

The module is written here with Stability's key names (``backbone.*``,
``projections.N.0.weight``, ``projections.N.2.weight``), so the published
files load strictly. A smaller file (the tests' tiny ControlNets) carries its
table in the safetensors metadata (``controlnet_config``).

Example::

    net = load_controlnet(None, "canny", "cuda", torch.bfloat16)   # the Hub file, downloaded on first use
    hint = canny_hint(image, 100, 200)                             # (1, 1, H, W) in 0..1
    with controlled(prior_unet, net.project(hint), strength=1.0):
        ...  # run the prior
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from PIL import Image
from torch import nn

from ..core.errors import ModelError
from . import hub
from .effnet import TINY, V2_S, EfficientNetEncoder, EffnetConfig
from .module_files import build_strict, read_tensors, save_module

HUB_REPO = "stabilityai/stable-cascade"
# The published file of each kind (the request's ``control`` names), in the Hub repo's controlnet/ folder.
HUB_FILES = {"canny": "controlnet/canny.safetensors", "inpaint": "controlnet/inpainting.safetensors",
             "sr": "controlnet/super_resolution.safetensors"}
KINDS = tuple(HUB_FILES)
METADATA_KEY = "controlnet_config"
# Stability's configs (configs/inference/controlnet_c_3b_*.yaml): the ResBlock calls each head feeds.
PROJ_BLOCKS = (0, 4, 8, 12, 51, 55, 59, 63)
INPUT_CHANNELS = {"canny": 1, "inpaint": 4, "sr": 16}


@dataclass(frozen=True)
class ControlNetConfig:
    """The shape of one ControlNet: its kind, input channels, backbone and heads.

    ``bottleneck`` "effnet" is the EfficientNet backbone of ``effnet`` (its
    head's width feeds the projections); "large" is super-resolution's 1x1
    convolutions (``large_hidden`` wide, then ``large_width`` through
    ``large_blocks`` residual blocks) ending at ``embed`` channels.
    """

    kind: str
    c_in: int
    c_proj: int = 2048
    proj_blocks: tuple[int, ...] = PROJ_BLOCKS
    bottleneck: str = "effnet"
    effnet: EffnetConfig = field(default=V2_S)
    large_hidden: int = 4096 * 4
    large_width: int = 1024
    large_blocks: int = 8
    embed: int = 1280

    @property
    def embed_channels(self) -> int:
        return self.effnet.head if self.bottleneck == "effnet" else self.embed

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> ControlNetConfig:
        data = json.loads(text)
        data["proj_blocks"] = tuple(data["proj_blocks"])
        data["effnet"] = EffnetConfig.from_json(json.dumps(data["effnet"]))
        return cls(**data)


def full_config(kind: str) -> ControlNetConfig:
    """The published ControlNet of ``kind`` (canny, inpaint or sr)."""
    if kind == "sr":
        return ControlNetConfig("sr", INPUT_CHANNELS["sr"], bottleneck="large")
    return ControlNetConfig(kind, INPUT_CHANNELS[kind])


def tiny_config(kind: str, c_proj: int) -> ControlNetConfig:
    """A tiny ControlNet of ``kind`` for a prior ``c_proj`` wide with 4 ResBlock calls (the tests' pair)."""
    if kind == "sr":
        return ControlNetConfig("sr", INPUT_CHANNELS["sr"], c_proj, (0, 2, 3), "large", TINY, 32, 16, 2, 24)
    return ControlNetConfig(kind, INPUT_CHANNELS[kind], c_proj, (0, 2, 3), "effnet", TINY)


class _LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of an NCHW tensor (Stability's ``LayerNorm2d``)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class _ResBlock(nn.Module):
    """Super-resolution's residual block: (norm, GELU, 3x3 conv) twice; keys ``blocks.0/2/3/5``."""

    def __init__(self, channels: int):
        super().__init__()
        self.blocks = nn.Sequential(_LayerNorm2d(channels), nn.GELU(), nn.Conv2d(channels, channels, 3, padding=1),
                                    _LayerNorm2d(channels), nn.GELU(), nn.Conv2d(channels, channels, 3, padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.blocks(x)


class ControlNet(nn.Module):
    """Stability's stage-C ControlNet in its key layout: ``backbone`` and one ``projections`` head per block."""

    def __init__(self, config: ControlNetConfig):
        super().__init__()
        self.config = config
        if config.bottleneck == "effnet":
            backbone = EfficientNetEncoder(config.effnet).backbone
            if config.c_in != 3:
                # Stability swaps the stem's convolution for one of c_in channels and builds it without
                # padding; the published weights were trained that way, so it is kept.
                backbone[0][0] = nn.Conv2d(config.c_in, config.effnet.stem, 3, stride=2, bias=False)
        elif config.bottleneck == "large":
            backbone = nn.Sequential(
                nn.Conv2d(config.c_in, config.large_hidden, 1), nn.LeakyReLU(0.2),
                nn.Conv2d(config.large_hidden, config.large_width, 1),
                *[_ResBlock(config.large_width) for _ in range(config.large_blocks)],
                nn.Conv2d(config.large_width, config.embed, 1))
        else:
            raise ModelError(f"unknown ControlNet backbone {config.bottleneck!r}")
        self.backbone = backbone
        width = config.embed_channels
        self.projections = nn.ModuleList(
            nn.Sequential(nn.Conv2d(width, width, 1, bias=False), nn.LeakyReLU(0.2),
                          nn.Conv2d(width, config.c_proj, 1, bias=False))
            for _ in config.proj_blocks)
        self.eval()

    @property
    def device(self) -> torch.device:
        return self.projections[0][0].weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.projections[0][0].weight.dtype

    def forward(self, hint: torch.Tensor) -> list[torch.Tensor | None]:
        """One entry per ResBlock call up to the last controlled one: its control, or None."""
        features = self.backbone(hint)
        out: list[torch.Tensor | None] = [None] * (max(self.config.proj_blocks) + 1)
        for head, call in zip(self.projections, self.config.proj_blocks):
            out[call] = head(features)
        return out

    @torch.no_grad()
    def project(self, hint: torch.Tensor, device: str | torch.device | None = None) -> list[torch.Tensor | None]:
        """The controls for ``hint`` (B, c_in, H, W), computed on ``device`` (default: where the model is).

        With ``device`` the model visits it for this call only and goes back
        where it was (the offload modes keep it in CPU memory between uses).
        """
        if hint.shape[1] != self.config.c_in:
            raise ModelError(f"this {self.config.kind} ControlNet takes {self.config.c_in} input channels, "
                             f"not {hint.shape[1]}")
        home = self.device
        target = torch.device(device) if device is not None else home
        moved = target != home
        if moved:
            self.to(target)
        try:
            return [None if c is None else c.detach() for c in self(hint.to(target, self.dtype))]
        finally:
            if moved:
                self.to(home)


# Hooks ------------------------------------------------------------------------------------------------


def resblocks(unet: nn.Module) -> list[nn.Module]:
    """The prior's ResBlocks in the order one forward pass calls them (down blocks, then up blocks)."""
    from diffusers.models.unets.unet_stable_cascade import SDCascadeResBlock

    blocks = [m for level in unet.down_blocks for m in level if isinstance(m, SDCascadeResBlock)]
    return blocks + [m for level in unet.up_blocks for m in level if isinstance(m, SDCascadeResBlock)]


class _Deliverer:
    """Hands each ResBlock call its control: counts the calls of one UNet pass, adds ``strength`` x control."""

    def __init__(self, controls: list[torch.Tensor | None], strength: float, start: float, end: float):
        self.controls = controls
        self.strength = float(strength)
        self.start, self.end = start, end
        self.call = 0
        self.active = False
        self.applied = 0  # how many controls were added (a check for tests and the run's notes)
        self._resized: dict[tuple, torch.Tensor] = {}

    def unet_pre_hook(self, module, args, kwargs):
        ratio = kwargs.get("timestep_ratio", args[1] if len(args) > 1 else None)
        # The UNet gets its noise level as a ratio going from 1 to 0; 1 - ratio is how far the sampling
        # is, the same for any loop or sampler (ComfyUI gates its ControlNets by noise level too).
        done = 1.0 - float(ratio.flatten()[0]) if ratio is not None else 0.0
        eps = 1e-6
        self.active = self.strength != 0 and self.start - eps <= done and (done < self.end - eps or self.end >= 1)
        self.call = 0

    def block_pre_hook(self, module, args):
        index = self.call
        self.call += 1
        if not self.active or index >= len(self.controls) or self.controls[index] is None:
            return None
        x = args[0]
        key = (index, tuple(x.shape[-2:]), x.device, x.dtype)
        control = self._resized.get(key)
        if control is None:
            control = nn.functional.interpolate(self.controls[index].to(x.device, torch.float32),
                                                size=x.shape[-2:], mode="bilinear", align_corners=True)
            control = (control * self.strength).to(x.dtype)
            self._resized[key] = control
        self.applied += 1
        return (x + control,) + tuple(args[1:])


@contextmanager
def controlled(unet: nn.Module, controls: list[torch.Tensor | None], strength: float = 1.0,
               start: float = 0.0, end: float = 1.0) -> Iterator[_Deliverer]:
    """Add ``controls`` (from :meth:`ControlNet.project`) to ``unet``'s ResBlock inputs while inside.

    Control acts while the sampling is between ``start`` and ``end`` (fractions
    of the way from noise to image). Strength 0 adds nothing at all. The hooks
    are removed on leaving, also after an error or a stop.
    """
    deliverer = _Deliverer(controls, strength, start, end)
    handles = [unet.register_forward_pre_hook(deliverer.unet_pre_hook, with_kwargs=True)]
    try:
        handles += [block.register_forward_pre_hook(deliverer.block_pre_hook) for block in resblocks(unet)]
        yield deliverer
    finally:
        for handle in handles:
            handle.remove()


# Inputs -----------------------------------------------------------------------------------------------


def _rgb(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0


def inpaint_hint(image: Image.Image, mask: Image.Image) -> torch.Tensor:
    """(1, 4, H, W): the image with its masked area white, then the mask (1 = repaint), as Stability trained."""
    pixels = _rgb(image)
    repaint = (np.asarray(mask.convert("L")) >= 128).astype(np.float32)[..., None]
    filled = np.where(repaint > 0, 1.0, pixels)
    return torch.from_numpy(np.concatenate([filled, repaint], axis=2)).permute(2, 0, 1).unsqueeze(0).contiguous()


def edges_hint(edges: Image.Image) -> torch.Tensor:
    """(1, 1, H, W) in 0..1 from an edge map (white edges on black)."""
    return torch.from_numpy(np.asarray(edges.convert("L"), dtype=np.float32) / 255.0)[None, None].contiguous()


_TAN_22_5 = 0.41421356
_TAN_67_5 = 2.41421356


def canny(image: Image.Image, low: float = 100, high: float = 200) -> Image.Image:
    """The Canny edge map of ``image`` as OpenCV's ``cv2.Canny(rgb, low, high)`` computes it (L mode, 0/255).

    Stability made its training edge maps with ``cv2.Canny`` on RGB images, so this follows that
    definition: 3x3 Sobel gradients per channel (borders replicated), the channel with the largest
    L1 magnitude ``|gx| + |gy|`` at each pixel, no smoothing, non-maximum suppression along the
    gradient direction quantized to 0/45/90/135 degrees (ties kept towards the lower/right
    neighbour, as OpenCV does), then hysteresis: pixels above ``high`` seed edges that grow through
    8-connected pixels above ``low``.
    """
    pixels = np.asarray(image.convert("RGB"), dtype=np.float32)
    padded = np.pad(pixels, ((1, 1), (1, 1), (0, 0)), mode="edge")

    def at(dy: int, dx: int) -> np.ndarray:
        return padded[1 + dy:padded.shape[0] - 1 + dy, 1 + dx:padded.shape[1] - 1 + dx]

    gx = (at(-1, 1) + 2 * at(0, 1) + at(1, 1)) - (at(-1, -1) + 2 * at(0, -1) + at(1, -1))
    gy = (at(1, -1) + 2 * at(1, 0) + at(1, 1)) - (at(-1, -1) + 2 * at(-1, 0) + at(-1, 1))
    magnitude = np.abs(gx) + np.abs(gy)
    pick = magnitude.argmax(axis=2)[..., None]
    gx = np.take_along_axis(gx, pick, 2)[..., 0]
    gy = np.take_along_axis(gy, pick, 2)[..., 0]
    magnitude = np.take_along_axis(magnitude, pick, 2)[..., 0]

    m = np.pad(magnitude, 1)  # zero outside the image

    def near(dy: int, dx: int) -> np.ndarray:
        return m[1 + dy:m.shape[0] - 1 + dy, 1 + dx:m.shape[1] - 1 + dx]

    ax, ay = np.abs(gx), np.abs(gy)
    horizontal = ay < ax * _TAN_22_5
    vertical = ~horizontal & (ay > ax * _TAN_67_5)
    diagonal = ~horizontal & ~vertical
    same_sign = (gx * gy) > 0  # the gradient points down-right or up-left: compare along that diagonal
    keep = np.zeros(magnitude.shape, dtype=bool)
    keep |= horizontal & (magnitude > near(0, -1)) & (magnitude >= near(0, 1))
    keep |= vertical & (magnitude > near(-1, 0)) & (magnitude >= near(1, 0))
    keep |= diagonal & same_sign & (magnitude > near(-1, -1)) & (magnitude > near(1, 1))
    keep |= diagonal & ~same_sign & (magnitude > near(-1, 1)) & (magnitude > near(1, -1))
    candidate = keep & (magnitude > low)
    strong = candidate & (magnitude > high)

    edges = strong.copy()
    stack = list(zip(*np.nonzero(strong)))
    rows, cols = magnitude.shape
    while stack:
        y, x = stack.pop()
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                ny, nx = y + dy, x + dx
                if 0 <= ny < rows and 0 <= nx < cols and candidate[ny, nx] and not edges[ny, nx]:
                    edges[ny, nx] = True
                    stack.append((ny, nx))
    return Image.fromarray((edges * 255).astype(np.uint8), "L")


# Loading ----------------------------------------------------------------------------------------------


def _a(kind: str) -> str:
    return f"{'an' if kind[0] in 'ais' else 'a'} {kind}"  # "an inpaint", "an sr", "a canny"


def _what(kind: str, path: Path | None) -> str:
    return f"the ControlNet {path.name[:80]!r}" if path is not None else \
        f"the {kind} ControlNet {HUB_FILES[kind]} of {HUB_REPO}"


def _offline_hint(kind: str) -> str:
    return (f"pass a local copy with --controlnet PATH, or download it once: "
            f"huggingface-cli download {HUB_REPO} {HUB_FILES[kind]}")


def detect_config(tensors: dict[str, torch.Tensor], metadata: dict[str, str], what: str) -> ControlNetConfig:
    """The table of a ControlNet file: from its metadata (our own files), else from its tensors' shapes."""
    if METADATA_KEY in metadata:
        try:
            return ControlNetConfig.from_json(metadata[METADATA_KEY])
        except (ValueError, KeyError, TypeError):
            raise ModelError(f"{what} has an unreadable {METADATA_KEY} in its metadata") from None
    if "backbone.0.0.weight" in tensors:  # the EfficientNet stem: 1 channel is canny, 4 inpainting
        channels = tensors["backbone.0.0.weight"].shape[1]
        kind = {1: "canny", 4: "inpaint"}.get(channels)
    elif "backbone.0.weight" in tensors and "backbone.10.blocks.0.weight" in tensors:
        channels = tensors["backbone.0.weight"].shape[1]
        kind = "sr" if channels == 16 else None
    else:
        raise ModelError(f"{what} is not one of Stability's stage-C ControlNets (no backbone.* weights)")
    if kind is None:
        raise ModelError(f"{what} takes {channels} input channels; Stability's canny takes 1, inpainting 4, "
                         "super-resolution 16")
    return full_config(kind)


def controlnet_file(path: str | Path | None, kind: str) -> tuple[Path, Path | None]:
    """(the file to read, the user's path or None): a local file, else the Hub's file of ``kind``."""
    if path is None:
        return hub.file(HUB_REPO, HUB_FILES[kind], f"{HUB_FILES[kind]} of {HUB_REPO} (the {kind} ControlNet)",
                        _offline_hint(kind)), None
    source = Path(path).expanduser()
    if not source.is_file():
        raise ModelError(f"{_what(kind, source)} does not exist or is not a file; {_offline_hint(kind)}")
    return source, source


def load_controlnet(path: str | Path | None, kind: str, device: str | torch.device = "cpu",
                    dtype: torch.dtype = torch.float32) -> ControlNet:
    """Load the ControlNet of ``kind`` from ``path`` (Stability's layout), else the Hub's published file.

    Every key and shape must match (strict); a file of another kind, a
    damaged or foreign file is a one-line :class:`ModelError`.
    """
    if kind not in HUB_FILES:
        raise ModelError(f"unknown ControlNet kind {kind!r}; one of: {', '.join(KINDS)}")
    file, source = controlnet_file(path, kind)
    what = _what(kind, source)
    tensors, metadata = read_tensors(file, what)
    config = detect_config(tensors, metadata, what)
    if config.kind != kind:
        raise ModelError(f"{what} is {_a(config.kind)} ControlNet; control {kind} needs {_a(kind)} one")
    return build_strict(lambda: ControlNet(config), tensors, what, "Stability's ControlNet", device, dtype)


def save_controlnet(model: ControlNet, path: str | Path) -> Path:
    """Write ``model`` as a safetensors file in Stability's key layout (a non-published table in the metadata)."""
    metadata = {METADATA_KEY: model.config.to_json()} if model.config != full_config(model.config.kind) else None
    return save_module(model, path, metadata)


__all__ = ["ControlNet", "ControlNetConfig", "HUB_FILES", "KINDS", "canny", "controlled", "edges_hint",
           "full_config", "inpaint_hint", "load_controlnet", "resblocks", "save_controlnet",
           "tiny_config"]
