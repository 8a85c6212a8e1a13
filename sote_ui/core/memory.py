"""Memory modes, and the automatic choice among them.

A mode is a placement (everything on the device, model CPU offload, or
sequential CPU offload) and a weight format (bf16, fp8, fp32). ``auto`` picks
the fastest mode whose estimated peak fits the device's free memory,
computed from the real component sizes, and says why.

Pure logic: no torch, no gradio. The device is described by :class:`DeviceInfo`
(see ``devices.detect_device``), so any device can be simulated.

Example::

    plan = choose_mode("auto", DeviceInfo("cuda", "cuda:0", "RTX 3060", 12 * GiB, 11 * GiB, True),
                       ComponentSizes(text_encoder=695e6, prior=3.6e9, decoder=1.56e9, vqgan=18e6),
                       width=1024, height=1536)
    plan.mode, plan.reason
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from .errors import InputError

GiB = 1024**3


class Placement(str, Enum):
    DEVICE = "device"
    OFFLOAD = "offload"
    SEQUENTIAL = "sequential"


class Weights(str, Enum):
    BF16 = "bf16"
    FP8 = "fp8"
    FP32 = "fp32"


class Mode(str, Enum):
    """The memory modes, fastest first (the order ``auto`` tries them in)."""

    AUTO = "auto"
    BF16 = "bf16"
    FP32 = "fp32"
    FP8 = "fp8"
    OFFLOAD_BF16 = "offload-bf16"
    OFFLOAD_FP32 = "offload-fp32"
    OFFLOAD_FP8 = "offload-fp8"
    SEQUENTIAL_BF16 = "sequential-bf16"
    SEQUENTIAL_FP32 = "sequential-fp32"

    @property
    def placement(self) -> Placement:
        if self.value.startswith("offload"):
            return Placement.OFFLOAD
        if self.value.startswith("sequential"):
            return Placement.SEQUENTIAL
        return Placement.DEVICE

    @property
    def weights(self) -> Weights:
        return Weights(self.value.rsplit("-", 1)[-1])


MODE_HELP = {
    Mode.AUTO: "pick the fastest mode that fits this device",
    Mode.BF16: "all models on the GPU in bf16: fastest, needs the most memory",
    Mode.FP32: "all models on the GPU in fp32: for GPUs without native bf16",
    Mode.FP8: "all models on the GPU with fp8 weights: about half the memory of bf16",
    Mode.OFFLOAD_BF16: "one model on the GPU at a time (model CPU offload), bf16",
    Mode.OFFLOAD_FP32: "one model on the GPU at a time, fp32",
    Mode.OFFLOAD_FP8: "one model on the GPU at a time, fp8 weights: smallest fast mode",
    Mode.SEQUENTIAL_BF16: "layer by layer from CPU memory (sequential offload): fits almost anything, slow",
    Mode.SEQUENTIAL_FP32: "layer by layer from CPU memory, fp32",
}


def parse_mode(value: str | Mode | None) -> Mode:
    if isinstance(value, Mode):
        return value
    text = (value or "auto").strip().lower()
    try:
        return Mode(text)
    except ValueError:
        raise InputError(f"unknown memory mode {text!r}; choose one of: {', '.join(m.value for m in Mode)}") from None


@dataclass(frozen=True)
class DeviceInfo:
    """What generation runs on. ``kind`` is cuda, rocm, xpu, mps or cpu."""

    kind: str
    torch_device: str
    name: str
    total_bytes: int
    free_bytes: int
    bf16: bool = True
    compute_capability: tuple[int, int] | None = None

    @property
    def is_gpu(self) -> bool:
        return self.kind != "cpu"

    def describe(self) -> str:
        if not self.is_gpu:
            return f"CPU ({self.free_bytes / GiB:.1f} GiB RAM free)"
        return f"{self.name} ({self.kind}, {self.free_bytes / GiB:.1f} of {self.total_bytes / GiB:.1f} GiB free)"


@dataclass(frozen=True)
class ComponentSizes:
    """Parameter counts of the components generation loads."""

    text_encoder: int
    prior: int
    decoder: int
    vqgan: int

    @property
    def total(self) -> int:
        return self.text_encoder + self.prior + self.decoder + self.vqgan


@dataclass(frozen=True)
class Plan:
    """A resolved mode for one device: what runs where, and why."""

    mode: Mode
    compute_dtype: str  # "bfloat16" or "float32"
    fp8_backend: str | None  # "quanto", "quanto-int8" (CPU) or "layerwise" when weights are 8-bit
    estimate_bytes: int
    reason: str


# Parameter counts of the published pair: the full-size architectures (``tiny.full_models``)
# counted on the meta device; the published weight files have the same.
FULL_SIZE = ComponentSizes(text_encoder=694_659_840, prior=3_589_103_632, decoder=1_562_941_136, vqgan=18_406_894)

# Bytes of each component's weights as loaded, measured on the full-size pair with
# ``bench/bench_scale.py`` (exact on any machine: they depend on the shapes alone). 8-bit weights
# keep a bf16 scale per output row, the layers kept out of fp8 and the VQGAN stay bf16, and
# layerwise casting leaves the text encoder in bf16.
MEASURED_WEIGHT_BYTES = {
    "bf16": {"text_encoder": 1_389_320_296, "prior": 7_178_207_264, "decoder": 3_125_882_272, "vqgan": 36_813_812},
    "quanto": {"text_encoder": 759_276_908, "prior": 3_616_336_680, "decoder": 1_585_993_508, "vqgan": 36_813_812},
    "quanto-int8": {"text_encoder": 759_276_908, "prior": 3_616_336_680, "decoder": 1_585_993_508,
                    "vqgan": 36_813_812},
    "layerwise": {"text_encoder": 1_389_320_296, "prior": 3_609_636_896, "decoder": 1_571_125_152,
                  "vqgan": 36_813_812},
}
_COMPONENTS = ("text_encoder", "prior", "decoder", "vqgan")

# Image remix's encoder, CLIP ViT-L/14 vision with projection (openai/clip-vit-large-patch14, the one
# Stable Cascade was built with): its parameters counted from that config on the meta device, 0.61 GB
# in bf16. It is loaded in the compute dtype and is on the device only while it encodes a new reference
# (embeddings are cached), so it counts as a stage of its own, beside whatever stays on the device.
IMAGE_ENCODER_PARAMS = 303_966_208
_IMAGE_ENCODER_ACTIVATIONS = int(0.1 * GiB)  # one 224x224 image through ViT-L

# Image to image's EfficientNet encoder (Stability's effnet_encoder.safetensors: EfficientNetV2-S features
# and the mapper), counted on the meta device: 0.04 GB in bf16, 0.08 GB in fp32. It encodes the start image,
# and hi-res fix's upscaled first pass, at 32 pixels per latent pixel (0.56 times the image's pixels).
EFFNET_PARAMS = 20_197_968
# Its activations grow with the pixels it encodes: measured as the host's peak during one fp32 encode
# of the full-size architecture (192 MB at 768x1152, the 1024x1536 image's; 356 MB at 1152x1728, the
# 1536x2304 one's: a 2-core CPU, torch 2.13), 0.22 GiB per megapixel at most; bf16 halves it on a GPU.
_EFFNET_GIB_PER_MEGAPIXEL = 0.22
_RESOLUTION_MULTIPLE = 42.67  # the prior's pixels per latent pixel (diffusers' StableCascadePriorPipeline)


# Stability's stage-C ControlNets, counted on the meta device: canny and inpainting (EfficientNetV2-S
# features and eight projection heads) 54.3M parameters, super-resolution (1x1 convolutions and residual
# blocks) 203.5M. The EfficientNet ones see the image at the generation's full size.
CONTROLNET_PARAMS = {"canny": 54_255_776, "inpaint": 54_256_424, "sr": 203_491_584}


def controlnet_bytes(kind: str, width: int, height: int, fp32: bool) -> tuple[int, int]:
    """(weights, peak activations) of the ControlNet of ``kind`` computing its controls at ``width`` x ``height``.

    Its activations are those of the EfficientNet backbone on the whole image (super-resolution's
    work on a 32 times smaller grid and are counted as the same, an upper bound).
    """
    if kind not in CONTROLNET_PARAMS:
        return 0, 0
    activations = _EFFNET_GIB_PER_MEGAPIXEL * GiB * width * height / 1e6 / (1 if fp32 else 2)
    return int(CONTROLNET_PARAMS[kind] * (4 if fp32 else 2) * _SLACK), int(activations)


def effnet_bytes(width: int, height: int, fp32: bool) -> tuple[int, int]:
    """(weights, peak activations) of the EfficientNet encoder encoding a ``width`` x ``height`` image."""
    pixels = (32 * -(-height // _RESOLUTION_MULTIPLE)) * (32 * -(-width // _RESOLUTION_MULTIPLE))
    activations = _EFFNET_GIB_PER_MEGAPIXEL * GiB * pixels / 1e6 / (1 if fp32 else 2)
    return int(EFFNET_PARAMS * (4 if fp32 else 2) * _SLACK), int(activations)


def bytes_per_param(weights: Weights, component: str, backend: str | None = None) -> float:
    """Measured bytes per parameter of ``component`` stored as ``weights`` (fp8: with ``backend``)."""
    if weights == Weights.FP32:
        return 4.0
    table = MEASURED_WEIGHT_BYTES["bf16" if weights == Weights.BF16 else (backend or "quanto")]
    return table[component] / getattr(FULL_SIZE, component)


def component_weight_bytes(weights: Weights, sizes: ComponentSizes, backend: str | None = None,
                           fp32_compute: bool = False) -> dict[str, int]:
    """Each component's weight bytes as loaded, from the measured bytes per parameter.

    fp8 weights with fp32 compute (GPUs without bf16) keep their unquantized
    layers in fp32: about 0.15 bytes more per parameter.
    """
    extra = 0.15 if fp32_compute and weights == Weights.FP8 else 0.0
    return {c: int(getattr(sizes, c) * (bytes_per_param(weights, c, backend) + extra)) for c in _COMPONENTS}


def weight_bytes_estimate(weights: Weights, sizes: ComponentSizes, backend: str | None = None) -> int:
    """All components' weight bytes as loaded."""
    return sum(component_weight_bytes(weights, sizes, backend).values())

_OVERHEAD = int(0.6 * GiB)  # CUDA context
_SLACK = 1.15  # the caching allocator holds more than the live tensors


def stage_activations(width: int, height: int, fp32: bool) -> dict[str, int]:
    """Peak activation memory of each stage at ``width`` x ``height`` (CFG batches included).

    The prior works on a 42x smaller latent; the decoder on a 4x smaller one;
    the VQGAN decodes at full resolution, so it dominates.
    """
    scale = (width * height) / (1024 * 1536)
    factor = 2 if fp32 else 1
    gib = {"text_encoder": 0.2, "prior": 0.3 + 0.2 * scale, "decoder": 0.5 + 0.8 * scale,
           "vqgan": 0.3 + 2.2 * scale}
    return {stage: int(value * GiB * factor) for stage, value in gib.items()}


def computes_in_fp32(mode: Mode, device: DeviceInfo | None) -> bool:
    """fp32 modes, and fp8 weights on a GPU without native bf16, compute in fp32."""
    if mode.weights == Weights.FP32:
        return True
    return mode.weights == Weights.FP8 and device is not None and device.is_gpu and not device.bf16


def estimate(mode: Mode, sizes: ComponentSizes, width: int, height: int, device: DeviceInfo | None = None, *,
             init_image: bool = False, hires_size: tuple[int, int] | None = None, control: str = "none") -> int:
    """Estimated peak device memory of ``mode`` at ``width`` x ``height`` on ``device``.

    ``init_image``: the job starts from an image (image to image), so the
    EfficientNet encoder encodes it at ``width`` x ``height``. ``hires_size``:
    the (width, height) of hi-res fix's second pass, whose stages work at that
    larger size (their activations are what grows) after the encoder has
    encoded the upscaled first pass at it.

    The weights are the measured bytes per parameter of each component (see
    ``MEASURED_WEIGHT_BYTES``) times its real parameter count. All on the
    device: every weight plus the largest stage's activations.
    Model offload: the largest of (one model's weights + its own stage's
    activations), since only the running model is on the device (the VQGAN's
    stage counts the decoder too: several images keep it there). Sequential
    offload: one layer at a time plus activations. Image remix's encoder
    (``IMAGE_ENCODER_PARAMS``) visits the device to encode new references:
    beside every weight when all are there, alone in the offload modes. The
    EfficientNet encoder (``EFFNET_PARAMS``) stays on the device beside the
    models when they all are there, and visits it alone in the offload modes.
    ``control`` (canny, inpaint, sr) counts that ControlNet (``CONTROLNET_PARAMS``)
    the same way as the EfficientNet encoder.
    """
    fp32 = computes_in_fp32(mode, device)
    backend = fp8_backend(device) if device is not None and mode.weights == Weights.FP8 else None
    weights = component_weight_bytes(mode.weights, sizes, backend, fp32)
    acts = stage_activations(width, height, fp32)
    if hires_size is not None:  # the second pass is the larger: its stages' activations are the peak ones
        second = stage_activations(*hires_size, fp32)
        acts = {stage: max(act, second[stage]) for stage, act in acts.items()}
    encoder = IMAGE_ENCODER_PARAMS * (4 if fp32 else 2) * _SLACK + _IMAGE_ENCODER_ACTIVATIONS
    effnet_weights, effnet_acts = 0, 0
    for encoded, size in ((init_image, (width, height)), (hires_size is not None, hires_size)):
        if encoded:
            effnet_weights, act = effnet_bytes(*size, fp32)
            effnet_acts = max(effnet_acts, act)
    if control != "none":  # the ControlNet and the encoder are on the device in turn, or both beside the models
        net_weights, net_acts = controlnet_bytes(control, width, height, fp32)
        if mode.placement == Placement.DEVICE:
            effnet_weights += net_weights
            effnet_acts = max(effnet_acts, net_acts)
        elif net_weights + net_acts > effnet_weights + effnet_acts:
            effnet_weights, effnet_acts = net_weights, net_acts
    if mode.placement == Placement.DEVICE:
        peak = (sum(weights.values()) * _SLACK + effnet_weights
                + max(max(acts.values()), encoder, effnet_acts))
    elif mode.placement == Placement.OFFLOAD:
        # Several images keep the decoder on the device through their VQGAN decodes.
        weights["vqgan"] += weights["decoder"]
        peak = max(max(weights[stage] * _SLACK + act for stage, act in acts.items()), encoder,
                   effnet_weights + effnet_acts)
    else:
        peak = max(0.25 * GiB * bytes_per_param(mode.weights, "prior", backend) / 2 + max(acts.values()), encoder,
                   effnet_weights + effnet_acts)
    return int(peak + _OVERHEAD)


def unsupported_reason(mode: Mode, device: DeviceInfo) -> str | None:
    """Why ``mode`` can't run on ``device``, or None if it can."""
    if mode == Mode.AUTO:
        return None
    if not device.is_gpu and mode.placement != Placement.DEVICE:
        return f"{mode.value} moves models between CPU and GPU memory, and there is no GPU here; use fp32, bf16 or fp8"
    if device.kind == "mps" and mode.weights == Weights.FP8:
        return "fp8 weights are not available on Apple MPS (no float8 type); use offload-bf16 or bf16"
    return None


def fp8_backend(device: DeviceInfo) -> str:
    """Which 8-bit weight implementation to use on ``device``.

    Every choice keeps a scale per output row: a plain fp8 cast (diffusers'
    layerwise casting) flushes 23% of the ResBlock output projections' weights
    to zero at Stable Cascade's training-init scale, a 22% error, where a
    per-row scale loses 2.5% (``bench/bench_fp8_error.py``).

    optimum-quanto's qfloat8 weights on GPUs, except NVIDIA GPUs of compute
    capability 8 and newer: there quanto switches qfloat8 to its fp8 Marlin
    kernel, which compiles at first use (needs nvcc and ninja) and has noise
    reports, so they get quanto's int8 weights (``quanto-int8``: same size,
    per-row scales, 0.5% error), multiplied after a cast to bf16 as fp8 would
    be. On a CPU, int8 weights too: torch multiplies by int8 weights directly
    there, while fp8 weights would be converted to bf16 at every step, slowly.
    """
    if not device.is_gpu:
        return "quanto-int8"
    if device.kind == "cuda" and device.compute_capability and device.compute_capability[0] >= 8:
        return "quanto-int8"
    return "quanto"


def _candidates(device: DeviceInfo) -> list[Mode]:
    if not device.is_gpu:
        return [Mode.FP32, Mode.BF16, Mode.FP8]
    full = Mode.BF16 if device.bf16 else Mode.FP32
    offload = Mode.OFFLOAD_BF16 if device.bf16 else Mode.OFFLOAD_FP32
    sequential = Mode.SEQUENTIAL_BF16 if device.bf16 else Mode.SEQUENTIAL_FP32
    modes = [full, Mode.FP8, offload, Mode.OFFLOAD_FP8, sequential]
    return [m for m in modes if unsupported_reason(m, device) is None]


def _plan(mode: Mode, device: DeviceInfo, sizes: ComponentSizes, width: int, height: int, reason: str,
          **job) -> Plan:
    compute = "float32" if computes_in_fp32(mode, device) else "bfloat16"
    backend = fp8_backend(device) if mode.weights == Weights.FP8 else None
    return Plan(mode, compute, backend, estimate(mode, sizes, width, height, device, **job), reason)


def _job_note(width: int, height: int, init_image: bool, hires_size: tuple[int, int] | None,
              control: str = "none") -> str:
    note = f"{width}x{height}"
    if hires_size is not None:
        note += f" then {hires_size[0]}x{hires_size[1]} (hi-res fix)"
    note += " from a start image" if init_image else ""
    return note + (f" with the {control} ControlNet" if control != "none" else "")


def choose_mode(requested: str | Mode, device: DeviceInfo, sizes: ComponentSizes, width: int = 1024,
                height: int = 1536, *, init_image: bool = False, hires_size: tuple[int, int] | None = None,
                control: str = "none") -> Plan:
    """Resolve ``requested`` (``auto`` or an explicit mode) for ``device``.

    An explicit mode that can't work raises InputError with the reason.
    ``auto`` picks the first candidate, fastest first, whose estimate fits
    the free memory; if none fits it takes the smallest and says so.
    ``init_image``, ``hires_size`` and ``control`` describe the job as :func:`estimate` does.
    """
    job = {"init_image": init_image, "hires_size": hires_size, "control": control}
    mode = parse_mode(requested)
    if mode != Mode.AUTO:
        why = unsupported_reason(mode, device)
        if why:
            raise InputError(why)
        need = estimate(mode, sizes, width, height, device, **job)
        note = f"{mode.value} as asked; needs ~{need / GiB:.1f} GiB, {device.describe()}"
        if device.is_gpu and mode.weights == Weights.BF16 and not device.bf16:
            note += "; this GPU has no native bf16, so it is emulated and slow (fp32 modes are faster)"
        return _plan(mode, device, sizes, width, height, note, **job)
    tried: list[str] = []
    for candidate in _candidates(device):
        need = estimate(candidate, sizes, width, height, device, **job)
        if need <= device.free_bytes:
            skipped = f" ({'; '.join(tried)})" if tried else ""
            reason = (f"auto picked {candidate.value}: needs ~{need / GiB:.1f} GiB at "
                      f"{_job_note(width, height, **job)}, {device.describe()}{skipped}")
            return _plan(candidate, device, sizes, width, height, reason, **job)
        tried.append(f"{candidate.value} needs ~{need / GiB:.1f} GiB")
    smallest = _candidates(device)[-1]
    reason = (f"auto picked {smallest.value}, the smallest mode, but even it may not fit: "
              f"{'; '.join(tried)}; {device.describe()}")
    return _plan(smallest, device, sizes, width, height, reason, **job)


def smaller_mode(current: Mode, device: DeviceInfo, sizes: ComponentSizes, width: int = 1024,
                 height: int = 1536, *, init_image: bool = False,
                 hires_size: tuple[int, int] | None = None, control: str = "none") -> Mode | None:
    """The fastest mode this device supports that needs less memory than ``current``.

    Prefers one whose estimate fits the device's free memory; None if no
    supported mode is smaller.
    """
    job = {"init_image": init_image, "hires_size": hires_size, "control": control}
    need = estimate(current, sizes, width, height, device, **job)
    smaller = [m for m in _candidates(device)
               if m != current and estimate(m, sizes, width, height, device, **job) < need]
    fitting = [m for m in smaller if estimate(m, sizes, width, height, device, **job) <= device.free_bytes]
    return (fitting or smaller or [None])[0]


def mode_table(device: DeviceInfo, sizes: ComponentSizes | None, width: int = 1024,
               height: int = 1536, *, init_image: bool = False,
               hires_size: tuple[int, int] | None = None) -> list[tuple[str, str, str]]:
    """(mode, estimated need, why not on this device or '') for every mode but ``auto``."""
    rows = []
    for mode in Mode:
        if mode == Mode.AUTO:
            continue
        why = unsupported_reason(mode, device)
        need = (f"~{estimate(mode, sizes, width, height, device, init_image=init_image, hires_size=hires_size) / GiB:.1f}"
                " GiB") if sizes else "?"
        rows.append((mode.value, need, why or ""))
    return rows
