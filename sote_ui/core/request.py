"""The generation request: one vocabulary for presets, the CLI, the Gradio API,
PNG metadata and the engine, validated in one place.

Pure data and logic: no torch, no gradio.

Example::

    >>> req = build_request({"prompt": "1girl, solo", "prior_cfg": 6, "seed": 7})
    >>> req.composed_prompt()
    'very aesthetic, best quality, newest, 1girl, solo'
"""

from __future__ import annotations

import math
import random
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

from PIL import Image

from . import tags
from .emphasis import check_weights
from .errors import InputError
from .loras import MAX_LORAS, LoraRef, merge, parse_ref, ref_text, split_tags, tag_text
from .loras import check as check_lora
from .loras import find as find_lora
from .masks import INPAINT_AREAS, MAX_MASK_BLUR, canvas_size, load_mask, parse_outpaint
from .wildcards import check_request

MAX_SEED = 2**32 - 1
MAX_REFERENCES = 4  # reference images of one request (image remix)
MAX_STRENGTH = 2.0
# How the text encoder sees the padding after a prompt's end token: "unmasked" as the model was trained
# (kohya's sd-scripts calls CLIP with no attention mask), "masked" as diffusers' pipelines (the model
# card's script) encode it.
PROMPT_PADDINGS = ("unmasked", "masked")
# Samplers of each stage. "ddpm" is diffusers' Wuerstchen scheduler (the model card's script, today's pixels);
# the others follow Stable Cascade's cosine noise schedule, with the shift of each stage (1.0 = none).
PRIOR_SAMPLERS = ("ddpm", "dpmpp_2m", "euler_a")
DECODER_SAMPLERS = ("ddpm", "dpmpp_2m", "euler_a", "lcm")
# How a start image meets width x height: cropped to fill, fitted inside (padded), or stretched.
RESIZE_MODES = ("crop", "fit", "stretch")
HIRES_SCALES = (1.25, 2.0)  # the hi-res fix's upscale factor, when it is on (1.0 = off)
SHIFTS = (0.1, 10.0)
# Stability's stage-C ControlNets: an edge map, inpainting (the image and its mask), super-resolution.
CONTROLS = ("none", "canny", "inpaint", "sr")
CANNY_RANGE = (1, 1000)  # Canny's thresholds on the L1 gradient magnitude (cv2.Canny's scale)
MIN_START_SIDE = 16  # a start image smaller than this on a side holds nothing to start from


@dataclass(frozen=True)
class Reference:
    """A reference image that steers the prior through its CLIP image embedding (image remix).

    ``strength`` scales the embedding: 0 leaves the image out entirely, 1 is the
    embedding as encoded, 2 doubles it.
    """

    path: str
    strength: float = 1.0


@dataclass(frozen=True)
class Limits:
    """What one request may ask for. Hosted deployments tighten these."""

    max_pixels: int = 2048 * 2048
    max_side: int = 4096
    min_side: int = 128
    max_count: int = 16
    max_prior_steps: int = 150
    max_decoder_steps: int = 100
    max_cfg: float = 30.0
    max_prompt_chars: int = 8000


DEFAULT_LIMITS = Limits()


@dataclass(frozen=True)
class GenerationRequest:
    """Everything that decides the pixels of an image, given a model and a mode.

    Defaults are the model card's: 1024x1536, prior 40 steps at CFG 8,
    decoder 10 steps at CFG 1.0, its quality tags and negative prompt.
    ``seed`` -1 means "pick one at random" (see :meth:`with_seed`).
    ``prompt_padding`` is one of :data:`PROMPT_PADDINGS`.

    Image to image: ``init_image`` (a file path; None = text to image) is resized
    to width x height by ``resize_mode`` and noised to ``denoise`` (0 = kept as
    it is, 1 = ignored). Hi-res fix: ``hires_scale`` 1.0 is off; otherwise
    width x height is the first pass and :func:`final_size` the image's size,
    its second prior running ``hires_steps`` (0 = ``prior_steps``) at
    ``hires_denoise``. Samplers and shifts are per stage.

    Inpainting: ``mask`` (white = repaint) over the start image, feathered by
    ``mask_blur`` pixels; ``inpaint_area`` "masked" generates only a crop
    around the mask at width x height and pastes it back. ``outpaint``
    ("left:256,down:128") grows the canvas, the new area masked. ``control``
    names a ControlNet (canny, inpaint, sr; a mask or outpaint without one
    uses inpaint) fed ``control_image`` (else the start image) at
    ``control_strength`` between ``control_start`` and ``control_end`` of
    the prior's way; canny's edge map uses ``canny_low``/``canny_high``.
    """

    prompt: str = ""
    negative_prompt: str = tags.DEFAULT_NEGATIVE
    aesthetic: str = tags.DEFAULT_TAGS["aesthetic"]
    quality: str = tags.DEFAULT_TAGS["quality"]
    date: str = tags.DEFAULT_TAGS["date"]
    custom: str = tags.NONE
    rating: str = tags.NONE
    artist: str = ""
    width: int = 1024
    height: int = 1536
    seed: int = -1
    prior_steps: int = 40
    prior_cfg: float = 8.0
    decoder_steps: int = 10
    decoder_cfg: float = 1.0
    count: int = 1
    references: tuple[Reference, ...] = ()
    prompt_padding: str = PROMPT_PADDINGS[0]
    init_image: str | None = None
    denoise: float = 0.75
    resize_mode: str = RESIZE_MODES[0]
    hires_scale: float = 1.0
    hires_denoise: float = 0.5
    hires_steps: int = 0
    prior_sampler: str = PRIOR_SAMPLERS[0]
    decoder_sampler: str = DECODER_SAMPLERS[0]
    prior_shift: float = 1.0
    decoder_shift: float = 1.0
    # LoRA (stage C and its text encoder): the picker's LoRAs; ``<lora:...>`` tags in the prompt add to them.
    loras: tuple[LoraRef, ...] = ()
    # Inpainting, outpainting and ControlNets.
    mask: str | None = None
    mask_blur: int = 4
    inpaint_area: str = INPAINT_AREAS[0]
    outpaint: str = ""
    control: str = CONTROLS[0]
    control_image: str | None = None
    control_strength: float = 1.0
    control_start: float = 0.0
    control_end: float = 1.0
    canny_low: int = 100
    canny_high: int = 200

    def composed_prompt(self) -> str:
        """The prompt the text encoder reads: tag pickers composed in, ``<lora:...>`` tags left out."""
        return tags.compose_prompt(
            split_tags(self.prompt)[0], aesthetic=self.aesthetic, quality=self.quality, date=self.date,
            custom=self.custom, rating=self.rating, artist=self.artist,
        )

    # LoRA ------------------------------------------------------------------------------------------
    def active_loras(self) -> tuple[LoraRef, ...]:
        """The prompt's tags, then the picker's LoRAs: one per name (a tag's weight wins), in the order
        :meth:`written_prompt` names them."""
        tagged = split_tags(self.prompt)[1]
        return merge(tagged, tuple(ref for ref in self.loras if ref.name not in {t.name for t in tagged}))

    def written_prompt(self) -> str:
        """The prompt as an image records it (A1111's way): the prompt's own ``<lora:...>`` tags where they
        were, and a tag for each LoRA that came from the picker."""
        prompt = tags.compose_prompt(self.prompt, aesthetic=self.aesthetic, quality=self.quality, date=self.date,
                                     custom=self.custom, rating=self.rating, artist=self.artist)
        in_prompt = {ref.name for ref in split_tags(self.prompt)[1]}
        extra = [tag_text(ref) for ref in self.loras if ref.name not in in_prompt]
        return ", ".join([prompt, *extra]) if extra else prompt

    def with_seed(self, rng: random.Random | None = None) -> "GenerationRequest":
        """Return a copy whose seed is concrete (a random one replaces -1)."""
        if self.seed >= 0:
            return self
        # Leave room for seed+1, ... of the other images, so every seed stays a valid one.
        top = MAX_SEED - (max(self.count, 1) - 1)
        return replace(self, seed=(rng or random.SystemRandom()).randint(0, top))

    def to_dict(self) -> dict[str, Any]:
        """The request in its vocabulary: every scalar field, plus ``images`` and ``image_strengths``."""
        data = asdict(self)
        references = data.pop("references")
        data["images"] = [ref["path"] for ref in references]
        data["image_strengths"] = [ref["strength"] for ref in references]
        data["loras"] = [ref_text(ref) for ref in self.loras]
        return data

    @property
    def hires(self) -> bool:
        """Whether the hi-res fix is on (a second pass at :func:`final_size`)."""
        return self.hires_scale != 1.0

    def differences(self, other: "GenerationRequest") -> dict[str, tuple[Any, Any]]:
        """The keys whose values differ, with (self's, other's) values."""
        a, b = self.to_dict(), other.to_dict()
        return {k: (a[k], b[k]) for k in a if a[k] != b[k]}


# The scalar settings (one control each in the UI); reference images travel as two lists beside them.
FIELD_NAMES: tuple[str, ...] = tuple(f.name for f in fields(GenerationRequest) if f.name != "references")
REFERENCE_KEYS = ("images", "image_strengths")
REQUEST_KEYS: tuple[str, ...] = FIELD_NAMES + REFERENCE_KEYS
PRIOR_KEYS = ("prompt", "negative_prompt", "aesthetic", "quality", "date", "custom", "rating", "artist",
              "width", "height", "seed", "prior_steps", "prior_cfg", "prompt_padding", "init_image", "denoise",
              "resize_mode", "hires_scale", "hires_denoise", "hires_steps", "prior_sampler", "prior_shift", "loras",
              # the mask's feather and paste-back happen after the decoder, but a new mask is a new picture
              "mask", "mask_blur", "inpaint_area", "outpaint", "control", "control_image", "control_strength",
              "control_start", "control_end", "canny_low", "canny_high")
DECODER_KEYS = ("decoder_steps", "decoder_cfg", "decoder_sampler", "decoder_shift")
_INT_FIELDS = {"width", "height", "seed", "prior_steps", "decoder_steps", "count", "hires_steps", "mask_blur",
               "canny_low", "canny_high"}
_FLOAT_FIELDS = {"prior_cfg", "decoder_cfg", "denoise", "hires_scale", "hires_denoise", "prior_shift",
                 "decoder_shift", "control_strength", "control_start", "control_end"}
_NAME_FIELDS = {"prompt_padding", "resize_mode", "prior_sampler", "decoder_sampler", "inpaint_area",
                "control"}  # lower-cased choices
_PATH_FIELDS = {"init_image", "mask", "control_image"}  # a path or an uploaded file's record; '' clears it
_TEXT_FIELDS = {"prompt", "negative_prompt", "artist"}
_CHOICE_FIELDS = {"aesthetic", "quality", "date", "custom", "rating"}


def _as_int(key: str, value: Any) -> int:
    if isinstance(value, bool):
        raise InputError(f"{key} must be a whole number, got {value!r}")
    if isinstance(value, float):
        if not math.isfinite(value) or value != int(value):
            raise InputError(f"{key} must be a whole number, got {value!r}")
        return int(value)
    try:
        return int(str(value).strip())
    except (TypeError, ValueError):
        raise InputError(f"{key} must be a whole number, got {str(value)[:40]!r}") from None


def _as_float(key: str, value: Any) -> float:
    if isinstance(value, bool):
        raise InputError(f"{key} must be a number, got {value!r}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{key} must be a number, got {str(value)[:40]!r}") from None
    if not math.isfinite(number):
        raise InputError(f"{key} must be a finite number, got {value!r}")
    return number


def _strength_list(value: Any) -> list[float] | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = [part for part in value.replace(";", ",").split(",") if part.strip()]
    elif not isinstance(value, (list, tuple)):
        value = [value]
    return [_as_float("image_strengths", item) for item in value]


def _references(images: Any, strengths: Any, current: tuple[Reference, ...]) -> tuple[Reference, ...]:
    """Reference images from ``images`` (paths) and ``image_strengths`` (one for all, or one each)."""
    if images is None:
        paths = [ref.path for ref in current]
        if strengths is None:
            return current
    else:
        if isinstance(images, (str, bytes)):
            images = [images]
        if not isinstance(images, (list, tuple)):
            raise InputError("images must be a list of image files")
        paths = []
        for item in images:
            path = item.get("path") if isinstance(item, dict) else item  # an uploaded file's record
            if not isinstance(path, str) or not path.strip():
                raise InputError("each reference image must be a file path")
            paths.append(path)
    weights = _strength_list(strengths)
    if not weights:
        weights = [ref.strength for ref in current] if images is None else [1.0] * len(paths)
    if len(weights) == 1:
        weights = weights * len(paths)
    if len(weights) != len(paths):
        raise InputError(f"{len(weights)} image strengths for {len(paths)} reference images: give one strength "
                         "for all, or one for each image")
    return tuple(Reference(path, strength) for path, strength in zip(paths, weights))


def _init_image_path(value: Any, key: str = "init_image") -> str | None:
    """An image's path from a path or an uploaded file's record; '' clears it."""
    path = value.get("path") if isinstance(value, dict) else value
    if isinstance(path, Path):
        path = str(path)
    if not isinstance(path, str):
        raise InputError(f"{key} must be an image file's path")
    return path.strip() or None


def final_size(request: GenerationRequest) -> tuple[int, int]:
    """The image's size: width x height, or with the hi-res fix on, each side times ``hires_scale``
    snapped to the nearest multiple of 128, halves up (the one place that computes it)."""
    if not request.hires:
        return request.width, request.height
    return (max(128, math.floor(request.width * request.hires_scale / 128 + 0.5) * 128),
            max(128, math.floor(request.height * request.hires_scale / 128 + 0.5) * 128))


def check_start_image(path: str) -> tuple[int, int]:
    """The start image's (width, height), or an InputError naming the file: missing, not an image, or too
    small to start from."""
    name = Path(path.replace("\x00", "")).name[:80]
    if "\x00" in path or not Path(path).expanduser().is_file():
        raise InputError(f"start image {name!r} does not exist")
    try:
        with Image.open(Path(path).expanduser()) as image:
            size = image.size
            image.verify()
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        raise InputError(f"start image {name!r} is not an image Pillow can read (PNG, JPEG, WebP...)") from None
    if min(size) < MIN_START_SIDE:
        raise InputError(f"start image {name!r} is {size[0]}x{size[1]}; it needs at least {MIN_START_SIDE} pixels "
                         "on each side")
    return size
def _loras(value: Any) -> tuple[LoraRef, ...]:
    """LoRAs from the vocabulary: a list of ``name`` / ``name:weight`` strings (or one string of them, comma
    separated), or LoraRefs."""
    if isinstance(value, str):
        value = [part for part in value.split(",") if part.strip()]
    elif isinstance(value, LoraRef):
        value = [value]
    if not isinstance(value, (list, tuple)):
        raise InputError("loras must be a list of NAME or NAME:WEIGHT")
    refs = []
    for item in value:
        if isinstance(item, LoraRef):
            refs.append(item)
        elif isinstance(item, str):
            if item.strip():
                refs.append(parse_ref(item))
        else:
            raise InputError("loras must be a list of NAME or NAME:WEIGHT")
    return merge((), tuple(refs))


def build_request(values: dict[str, Any] | None = None, *, base: GenerationRequest | None = None,
                  limits: Limits = DEFAULT_LIMITS) -> GenerationRequest:
    """Merge ``values`` over ``base`` (the defaults), convert and validate.

    Keys with value ``None`` are ignored. Raises :class:`InputError` with a
    one-line message on the first problem found.
    """
    base = base or GenerationRequest()
    merged = base.to_dict()
    values = dict(values or {})
    references = _references(values.pop("images", None), values.pop("image_strengths", None), base.references)
    for key in REFERENCE_KEYS:
        merged.pop(key)
    merged["references"] = references
    for key, value in values.items():
        if key not in merged or key == "references":
            raise InputError(f"unknown setting {key!r}; known settings: {', '.join(REQUEST_KEYS)}")
        if value is None:
            continue
        if key in _INT_FIELDS:
            merged[key] = _as_int(key, value)
        elif key in _FLOAT_FIELDS:
            merged[key] = _as_float(key, value)
        elif key in _NAME_FIELDS:
            merged[key] = value.strip().lower() if isinstance(value, str) else value
        elif key in _PATH_FIELDS:
            merged[key] = _init_image_path(value, key)
        elif key == "loras":
            merged[key] = _loras(value)
        elif key in _CHOICE_FIELDS:
            try:
                merged[key] = tags.check_choice(key, str(value))
            except ValueError as exc:
                raise InputError(str(exc)) from None
        else:
            if not isinstance(value, str):
                raise InputError(f"{key} must be text")
            merged[key] = value
    if isinstance(merged.get("loras"), list):  # the base's own, in the vocabulary's form
        merged["loras"] = _loras(merged["loras"])
    request = GenerationRequest(**merged)
    validate(request, limits)
    return request


def validate(request: GenerationRequest, limits: Limits = DEFAULT_LIMITS) -> None:
    """Raise :class:`InputError` if ``request`` is outside what can be generated."""
    for key in ("width", "height"):
        side = getattr(request, key)
        if side % 128:
            lower = max(128, side // 128 * 128)
            raise InputError(f"{key} {side} is not a multiple of 128; try {lower} or {lower + 128}")
        if not limits.min_side <= side <= limits.max_side:
            raise InputError(f"{key} {side} is outside {limits.min_side}..{limits.max_side}")
    pixels = request.width * request.height
    if pixels > limits.max_pixels:
        raise InputError(
            f"{request.width}x{request.height} is {pixels / 1e6:.1f} MP, over the {limits.max_pixels / 1e6:.1f} MP "
            "budget; pick a smaller size"
        )
    if not -1 <= request.seed <= MAX_SEED:
        raise InputError(f"seed must be -1 (random) or 0..{MAX_SEED}, got {request.seed}")
    for key, top in (("prior_steps", limits.max_prior_steps), ("decoder_steps", limits.max_decoder_steps)):
        steps = getattr(request, key)
        if not 1 <= steps <= top:
            raise InputError(f"{key} must be between 1 and {top}, got {steps}")
    for key in ("prior_cfg", "decoder_cfg"):
        cfg = getattr(request, key)
        if not math.isfinite(cfg) or not 0 <= cfg <= limits.max_cfg:
            raise InputError(f"{key} must be between 0 and {limits.max_cfg:g}, got {cfg}")
    if request.prompt_padding not in PROMPT_PADDINGS:
        raise InputError(f"prompt_padding must be {' or '.join(PROMPT_PADDINGS)}, got "
                         f"{str(request.prompt_padding)[:40]!r}")
    _validate_refine(request, limits)
    if not 1 <= request.count <= limits.max_count:
        raise InputError(f"count must be between 1 and {limits.max_count}, got {request.count}")
    if request.seed + request.count - 1 > MAX_SEED:  # the images use seed, seed+1, ...
        raise InputError(f"seed {request.seed} with count {request.count} goes past the largest seed {MAX_SEED}; "
                         f"use a seed up to {MAX_SEED - request.count + 1}")
    for key in _TEXT_FIELDS:
        text = getattr(request, key)
        if len(text) > limits.max_prompt_chars:
            raise InputError(f"{key} is {len(text):,} characters long, {tags.over_char_limit(limits.max_prompt_chars)}: "
                             "shorten it")
        if "\x00" in text:
            raise InputError(f"{key} contains a NUL character")
    if len(request.references) > MAX_REFERENCES:
        raise InputError(f"{len(request.references)} reference images; at most {MAX_REFERENCES}")
    for ref in request.references:
        if not math.isfinite(ref.strength) or not 0 <= ref.strength <= MAX_STRENGTH:
            raise InputError(f"image strength must be between 0 and {MAX_STRENGTH:g}, got {ref.strength:g}")
        if "\x00" in ref.path or not Path(ref.path).expanduser().is_file():
            raise InputError(f"reference image {Path(ref.path.replace(chr(0), '')).name[:80]!r} does not exist")
    # LoRA: the picker's and the prompt's, each a file here with a sane weight.
    loras = request.active_loras()
    if len(loras) > MAX_LORAS:
        raise InputError(f"{len(loras)} LoRAs; at most {MAX_LORAS} at once")
    for ref in loras:
        check_lora(ref)
        find_lora(ref.name)
    check_request(request)  # a bad template or missing wildcard file fails here, before any work
    composed = request.composed_prompt()
    if not composed.strip():
        raise InputError("the prompt is empty: type some tags or pick a tag")
    try:
        check_weights(composed, "the prompt")
        check_weights(request.negative_prompt, "the negative prompt")
    except ValueError as exc:
        raise InputError(str(exc)) from None


def _validate_refine(request: GenerationRequest, limits: Limits) -> None:
    """Image to image, the hi-res fix, samplers and shifts."""
    for key in ("denoise", "hires_denoise"):
        value = getattr(request, key)
        if not math.isfinite(value) or not 0 <= value <= 1:
            raise InputError(f"{key} must be between 0 and 1, got {value:g}")
    if request.resize_mode not in RESIZE_MODES:
        raise InputError(f"resize_mode must be one of {', '.join(RESIZE_MODES)}, got {str(request.resize_mode)[:40]!r}")
    for key, known in (("prior_sampler", PRIOR_SAMPLERS), ("decoder_sampler", DECODER_SAMPLERS)):
        name = getattr(request, key)
        if name not in known:
            raise InputError(f"unknown {key} {str(name)[:40]!r}; choose one of: {', '.join(known)}")
    for key in ("prior_shift", "decoder_shift"):
        shift = getattr(request, key)
        if not math.isfinite(shift) or not SHIFTS[0] <= shift <= SHIFTS[1]:
            raise InputError(f"{key} must be between {SHIFTS[0]:g} and {SHIFTS[1]:g}, got {shift:g}")
    scale = request.hires_scale
    if not math.isfinite(scale) or (scale != 1.0 and not HIRES_SCALES[0] <= scale <= HIRES_SCALES[1]):
        raise InputError(f"hires_scale must be 1 (off) or between {HIRES_SCALES[0]:g} and {HIRES_SCALES[1]:g}, "
                         f"got {scale:g}")
    if not 0 <= request.hires_steps <= limits.max_prior_steps:
        raise InputError(f"hires_steps must be between 0 (as many as prior_steps) and {limits.max_prior_steps}, "
                         f"got {request.hires_steps}")
    if request.hires:
        width, height = final_size(request)
        if max(width, height) > limits.max_side or width * height > limits.max_pixels:
            raise InputError(
                f"the hi-res fix makes {request.width}x{request.height} into {width}x{height} "
                f"({width * height / 1e6:.1f} MP), over the limit of {limits.max_pixels / 1e6:.1f} MP and "
                f"{limits.max_side} per side; lower hires_scale or the size")
    if request.init_image is not None:
        check_start_image(request.init_image)
    _validate_inpaint(request, limits)


def control_kind(request: GenerationRequest) -> str:
    """The ControlNet a request uses: its ``control``, or inpaint for a mask or outpaint without one."""
    if request.control == "none" and (request.mask is not None or request.outpaint):
        return "inpaint"
    return request.control


def _validate_inpaint(request: GenerationRequest, limits: Limits) -> None:
    """Masks, outpainting and ControlNets."""
    if not 0 <= request.mask_blur <= MAX_MASK_BLUR:
        raise InputError(f"mask_blur must be between 0 and {MAX_MASK_BLUR} pixels, got {request.mask_blur}")
    if request.inpaint_area not in INPAINT_AREAS:
        raise InputError(f"inpaint_area must be one of {', '.join(INPAINT_AREAS)}, got "
                         f"{str(request.inpaint_area)[:40]!r}")
    if request.control not in CONTROLS:
        raise InputError(f"unknown control {str(request.control)[:40]!r}; choose one of: {', '.join(CONTROLS)}")
    strength = request.control_strength
    if not math.isfinite(strength) or not 0 <= strength <= MAX_STRENGTH:
        raise InputError(f"control_strength must be between 0 and {MAX_STRENGTH:g}, got {strength:g}")
    for key in ("control_start", "control_end"):
        value = getattr(request, key)
        if not math.isfinite(value) or not 0 <= value <= 1:
            raise InputError(f"{key} must be between 0 and 1, got {value:g}")
    if request.control_start >= request.control_end:
        raise InputError(f"control_start ({request.control_start:g}) must be below control_end "
                         f"({request.control_end:g})")
    for key in ("canny_low", "canny_high"):
        value = getattr(request, key)
        if not CANNY_RANGE[0] <= value <= CANNY_RANGE[1]:
            raise InputError(f"{key} must be between {CANNY_RANGE[0]} and {CANNY_RANGE[1]}, got {value}")
    if request.canny_low > request.canny_high:
        raise InputError(f"canny_low ({request.canny_low}) must not be above canny_high ({request.canny_high})")
    sides = parse_outpaint(request.outpaint)
    if (request.mask is not None or sides) and request.hires:
        raise InputError("the hi-res fix does not combine with a mask or outpaint: inpaint the hi-res image instead")
    sides = parse_outpaint(request.outpaint)
    if (request.mask is not None or sides) and request.init_image is None:
        raise InputError(f"{'a mask' if request.mask is not None else 'outpaint'} needs a start image "
                         "(init_image) to repaint")
    if sides:
        width, height = canvas_size(request.width, request.height, sides)
        if max(width, height) > limits.max_side or width * height > limits.max_pixels:
            raise InputError(f"outpainting makes {request.width}x{request.height} into {width}x{height} "
                             f"({width * height / 1e6:.1f} MP), over the limit of {limits.max_pixels / 1e6:.1f} MP "
                             f"and {limits.max_side} per side")
    kind = control_kind(request)
    if kind == "inpaint" and request.mask is None and not sides:
        raise InputError("control inpaint needs a mask (white = repaint) or outpaint")
    if kind in ("canny", "sr") and request.control_image is None and request.init_image is None:
        raise InputError(f"control {kind} needs a control_image (or a start image)")
    for key in ("mask", "control_image"):
        path = getattr(request, key)
        if path is not None:
            name = Path(path.replace("\x00", "")).name[:80]
            if "\x00" in path or not Path(path).expanduser().is_file():
                raise InputError(f"{key.replace('_', ' ')} {name!r} does not exist")
    if request.mask is not None:  # unreadable or empty: said before any model loads
        load_mask(request.mask, None)
    if request.control_image is not None and not _is_image(request.control_image):
        _no_image(request.control_image, "control image")


def _is_image(path: str) -> bool:
    try:
        with Image.open(Path(path).expanduser()) as image:
            image.verify()
        return True
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        return False


def _no_image(path: str, what: str) -> None:
    raise InputError(f"{what} {Path(path).name[:80]!r} is not an image Pillow can read (PNG, JPEG, WebP...)")


# Parameters that only the decoder reads: changing them can reuse the prior's output.
# With the hi-res fix on, the first pass's decoder makes the image the second prior starts from, so every
# setting reaches that prior.
def decoder_only_difference(a: GenerationRequest, b: GenerationRequest) -> bool:
    diff = a.differences(b)
    return bool(diff) and not (a.hires or b.hires) and all(k in DECODER_KEYS for k in diff)


__all__ = [
    "DECODER_KEYS",
    "DECODER_SAMPLERS",
    "DEFAULT_LIMITS",
    "FIELD_NAMES",
    "GenerationRequest",
    "Limits",
    "LoraRef",
    "PRIOR_KEYS",
    "PRIOR_SAMPLERS",
    "PROMPT_PADDINGS",
    "RESIZE_MODES",
    "REFERENCE_KEYS",
    "REQUEST_KEYS",
    "Reference",
    "CONTROLS",
    "build_request",
    "control_kind",
    "check_start_image",
    "decoder_only_difference",
    "final_size",
    "validate",
]
