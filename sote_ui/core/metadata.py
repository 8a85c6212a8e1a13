"""PNG metadata in the A1111 "parameters" format, written and read back.

The text is what image sites and readers parse: the prompt, a
``Negative prompt:`` line, then ``Key: value`` pairs (values holding commas are
JSON-quoted). The prior's steps and CFG go in the standard ``Steps`` and
``CFG scale`` keys; the decoder's settings, the prompt padding, the memory
mode and both model ids follow under their own keys. An image without a
``Prompt padding`` key leaves that setting at its default.

Pure data and logic (Pillow only): no torch, no gradio.

Example::

    text = format_parameters(request, seed=42, model=ModelInfo("Disty0/sotediffusion-wuerstchen3", "..."))
    values = parse_parameters(text)   # {"prompt": ..., "prior_steps": 40, "seed": 42, ...}
"""

from __future__ import annotations

import io
import json
import math
import re
from dataclasses import dataclass
from typing import Any

from PIL import Image, PngImagePlugin

from .errors import InputError
from .loras import parse_hashes
from .masks import AREA_NAMES, format_outpaint, parse_outpaint
from .request import CONTROLS, HIRES_SCALES, MAX_SEED, PROMPT_PADDINGS, RESIZE_MODES, GenerationRequest, control_kind
from .tags import decompose_prompt

SAMPLER = "DDPMWuerstchen"
# Each sampler's name in the file: A1111's names where it has the sampler, ours for the default.
SAMPLER_NAMES = {"ddpm": SAMPLER, "dpmpp_2m": "DPM++ 2M", "euler_a": "Euler a", "lcm": "LCM"}
SCHEDULE = "SGM Uniform"  # the spacing of the cosine-schedule samplers' steps, by A1111's name for it
UPSCALER = "Lanczos"  # the hi-res fix's upscaler
_SAMPLERS_READ = {name.lower(): key for key, name in SAMPLER_NAMES.items()} | {"ddpm": "ddpm"}
PNG_KEY = "parameters"
MAX_PARAMETERS_CHARS = 64 * 1024

# Characters a key of a "Key: value" pair may hold (A1111's keys: "CFG scale", "Hires upscaler", "Lora hashes").
_KEY_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_ -/+")
_MAX_KEY_CHARS = 64


@dataclass(frozen=True)
class ModelInfo:
    prior: str
    decoder: str
    mode: str = ""


def _quote(value: Any) -> str:
    text = str(value)
    if "," in text or ":" in text or '"' in text or "\n" in text:
        return json.dumps(text)
    return text


def _num(value: float) -> str:
    return f"{value:g}"


def format_parameters(request: GenerationRequest, seed: int, model: ModelInfo, extra: dict | None = None) -> str:
    """The A1111-style ``parameters`` text for one image of ``request``."""
    prompt = request.written_prompt()  # what was encoded, with its <lora:...> tags (A1111)
    pairs = {
        "Steps": request.prior_steps,
        "Sampler": SAMPLER,
        "CFG scale": _num(request.prior_cfg),
        "Seed": seed,
        "Size": f"{request.width}x{request.height}",
        "Model": model.prior,
        "Decoder": model.decoder,
        "Decoder steps": request.decoder_steps,
        "Decoder CFG scale": _num(request.decoder_cfg),
        "Prompt padding": request.prompt_padding,
    }
    pairs.update(refine_pairs(request))
    pairs.update(inpaint_pairs(request))
    if model.mode:
        pairs["Memory mode"] = model.mode
    for key, value in (extra or {}).items():
        pairs[key] = value
    tail = ", ".join(f"{key}: {_quote(value)}" for key, value in pairs.items())
    lines = [prompt.replace("\n", " ")]
    if request.negative_prompt:
        lines.append("Negative prompt: " + request.negative_prompt.replace("\n", " "))
    lines.append(tail)
    return "\n".join(lines)


def refine_pairs(request: GenerationRequest) -> dict[str, Any]:
    """The keys of image to image, the hi-res fix, samplers and shifts that differ from the defaults."""
    pairs: dict[str, Any] = {}
    if request.prior_sampler != "ddpm":
        pairs["Sampler"] = SAMPLER_NAMES[request.prior_sampler]
        pairs["Schedule type"] = SCHEDULE
    if request.prior_shift != 1.0:
        pairs["Prior shift"] = _num(request.prior_shift)
    if request.decoder_sampler != "ddpm":
        pairs["Decoder sampler"] = SAMPLER_NAMES[request.decoder_sampler]
    if request.decoder_shift != 1.0:
        pairs["Decoder shift"] = _num(request.decoder_shift)
    if request.init_image is not None:
        pairs["Denoising strength"] = _num(request.denoise)
        pairs["Resize mode"] = request.resize_mode
    if request.hires:
        pairs["Hires upscale"] = _num(request.hires_scale)
        if request.hires_steps:
            pairs["Hires steps"] = request.hires_steps
        pairs["Hires upscaler"] = UPSCALER
        # A1111's txt2img records the hi-res denoise as "Denoising strength"; beside a start image that key
        # holds the start image's denoise.
        pairs["Hires denoising strength" if request.init_image is not None else "Denoising strength"] = \
            _num(request.hires_denoise)
    return pairs


def inpaint_pairs(request: GenerationRequest) -> dict[str, Any]:
    """The keys of inpainting, outpainting and the ControlNet (A1111's ``Mask blur`` where it has one)."""
    pairs: dict[str, Any] = {}
    if request.mask is not None or request.outpaint:
        pairs["Mask blur"] = request.mask_blur
        pairs["Inpaint area"] = AREA_NAMES[request.inpaint_area]
    if request.outpaint:
        pairs["Outpaint"] = request.outpaint
    kind = control_kind(request)
    if kind != "none":
        pairs["Control"] = kind
        pairs["Control strength"] = _num(request.control_strength)
        if (request.control_start, request.control_end) != (0.0, 1.0):
            pairs["Control steps"] = f"{_num(request.control_start)}-{_num(request.control_end)}"
        if kind == "canny":
            pairs["Canny thresholds"] = f"{request.canny_low}/{request.canny_high}"
    return pairs


MASK_NOT_RESTORED = "the mask itself is not stored in the image: draw or upload it again"


def _read_inpaint(pairs: dict[str, str], values: dict[str, Any], applied: list[str]) -> None:
    """Inpainting, outpainting and ControlNet keys (the mask and control images are not in the file)."""
    if "Mask blur" in pairs:
        values["mask_blur"] = _number("Mask blur", pairs["Mask blur"], True, 0, 10_000)
        applied.append("Mask blur")
    area = {name.lower(): key for key, name in AREA_NAMES.items()}.get(pairs.get("Inpaint area", "").strip().lower())
    if area:
        values["inpaint_area"] = area
        applied.append("Inpaint area")
    if "Outpaint" in pairs:
        values["outpaint"] = format_outpaint(parse_outpaint(pairs["Outpaint"]))
        applied.append("Outpaint")
    kind = pairs.get("Control", "").strip().lower()
    if kind in CONTROLS:
        values["control"] = kind
        applied.append("Control")
    if "Control strength" in pairs:
        values["control_strength"] = _number("Control strength", pairs["Control strength"], False, 0.0, 1_000.0)
        applied.append("Control strength")
    match = re.fullmatch(r"\s*([0-9.]+)\s*-\s*([0-9.]+)\s*", pairs.get("Control steps", ""))
    if match:
        values["control_start"] = _number("Control steps", match.group(1), False, 0.0, 1.0)
        values["control_end"] = _number("Control steps", match.group(2), False, 0.0, 1.0)
        applied.append("Control steps")
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", pairs.get("Canny thresholds", ""))
    if match:
        values["canny_low"], values["canny_high"] = int(match.group(1)), int(match.group(2))
        applied.append("Canny thresholds")
    if "Mask hash" in pairs:
        values["mask_note"] = MASK_NOT_RESTORED
        applied.append("Mask hash")
    if "Control model hash" in pairs:
        applied.append("Control model hash")


def init_image_note(name: str, sha256: str) -> str:
    """``NAME sha256:HASH``: how the start image is recorded (the file itself is not in the image)."""
    return f"{name} sha256:{sha256}"


def _unquote(value: str) -> str:
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] == '"':
        try:
            return str(json.loads(value))
        except json.JSONDecodeError:
            return value[1:-1]
    return value


def _key_before(line: str, start: int, colon: int) -> str | None:
    """The key that ends at ``colon``: the run of key characters right before it, if it starts with a word
    character (read backwards, so every character is looked at once)."""
    i = colon
    while i > start and colon - i < _MAX_KEY_CHARS and line[i - 1] in _KEY_CHARS:
        i -= 1
    key = line[i:colon].lstrip(" -/+")
    if not key or not (key[0].isalnum() or key[0] == "_"):
        return None
    return key.strip()


def parse_pairs(line: str) -> dict[str, str]:
    """The ``Key: value`` pairs of an A1111 parameters line, in one left-to-right pass.

    Values holding commas are JSON-quoted (``"a, b"``); text that is not a pair is
    skipped. Linear in the line's length, whatever the line holds.
    """
    pairs: dict[str, str] = {}
    i, n = 0, len(line)
    while i < n:
        colon = line.find(":", i)
        if colon < 0:
            break
        key = _key_before(line, max(i, line.rfind(",", i, colon) + 1), colon)
        j = colon + 1
        while j < n and line[j] == " ":
            j += 1
        if j < n and line[j] == '"':  # a quoted value: up to the closing quote, escapes skipped
            k = j + 1
            while k < n and line[k] != '"':
                k += 2 if line[k] == "\\" else 1
            end = min(k + 1, n)
            value = line[j:end]
            comma = line.find(",", end)
        else:
            comma = line.find(",", j)
            value = line[j:comma if comma >= 0 else n]
        if key is not None:
            pairs[key] = _unquote(value)
        i = comma + 1 if comma >= 0 else n
    return pairs


def split_parameters(text: str) -> tuple[str, str, dict[str, str]]:
    """Split A1111 text into (prompt, negative prompt, pairs)."""
    if len(text) > MAX_PARAMETERS_CHARS:
        raise InputError(f"the image's parameters are {len(text)} characters long; the limit is {MAX_PARAMETERS_CHARS}")
    lines = text.strip().split("\n")
    pairs: dict[str, str] = {}
    if lines and ("Steps:" in lines[-1] or "Seed:" in lines[-1]):
        found = parse_pairs(lines[-1])
        if "Steps" in found or "Seed" in found:
            pairs = found
            lines.pop()
    prompt_lines: list[str] = []
    negative_lines: list[str] = []
    target = prompt_lines
    for line in lines:
        if line.startswith("Negative prompt:"):
            target = negative_lines
            line = line[len("Negative prompt:"):].lstrip()
        target.append(line)
    return "\n".join(prompt_lines).strip(), "\n".join(negative_lines).strip(), pairs


_NUMERIC = {
    "Steps": "prior_steps",
    "CFG scale": "prior_cfg",
    "Seed": "seed",
    "Decoder steps": "decoder_steps",
    "Decoder CFG scale": "decoder_cfg",
    # Names other Stable Cascade front ends use for the same two settings.
    "Refiner steps": "decoder_steps",
    "Secondary CFG scale": "decoder_cfg",
    "Hires steps": "hires_steps",
    "Hires denoising strength": "hires_denoise",
    "Prior shift": "prior_shift",
    "Decoder shift": "decoder_shift",
}


# (whole number?, lowest, highest) of each number read from an image: generous bounds that only keep out
# values no control can hold (the request's own limits still apply when generating).
_RANGES = {
    "prior_steps": (True, 1, 10_000),
    "decoder_steps": (True, 1, 10_000),
    "seed": (True, -1, MAX_SEED),
    "prior_cfg": (False, 0.0, 1_000.0),
    "decoder_cfg": (False, 0.0, 1_000.0),
    "hires_scale": (False, 0.0, 100.0),
    "hires_steps": (True, 0, 10_000),
    "hires_denoise": (False, 0.0, 1.0),
    "denoise": (False, 0.0, 1.0),
    "prior_shift": (False, 0.0, 1_000.0),
    "decoder_shift": (False, 0.0, 1_000.0),
}
MAX_SIDE = 65_536


def _number(key: str, raw: str, whole: bool, low: float, high: float) -> int | float:
    """One numeric value from an image, or an InputError naming the field."""
    shown = raw.strip()[:40]
    try:
        number = float(raw)
    except ValueError:
        raise InputError(f"the image's {key!r} value {shown!r} is not a number") from None
    if not math.isfinite(number):
        raise InputError(f"the image's {key!r} value {shown!r} is not a finite number")
    if whole and number != int(number):
        raise InputError(f"the image's {key!r} value {shown!r} is not a whole number")
    if not low <= number <= high:
        bounds = f"{int(low)} to {int(high)}" if whole else f"{low:g} to {high:g}"
        raise InputError(f"the image's {key!r} value {shown!r} is out of range ({bounds})")
    return int(number) if whole else number


def parse_parameters(text: str) -> dict[str, Any]:
    """Read A1111 ``parameters`` text (ours or another tool's) into request values.

    Returns only the keys it found, in the request's vocabulary; tag pickers
    are split out of the prompt. ``model`` and ``decoder`` are included when
    present. Raises :class:`InputError` for text it cannot read.
    """
    if not isinstance(text, str) or not text.strip():
        raise InputError("the image has no generation parameters")
    prompt, negative, pairs = split_parameters(text)
    values: dict[str, Any] = {}
    values.update(decompose_prompt(prompt))
    values["negative_prompt"] = negative
    for key, name in _NUMERIC.items():
        if key in pairs and name not in values:
            values[name] = _number(key, pairs[key], *_RANGES[name])
    size = pairs.get("Size")
    if size:
        match = re.fullmatch(r"\s*(\d+)\s*x\s*(\d+)\s*", size)
        if not match:
            raise InputError(f"the image's size {size[:40]!r} is not WIDTHxHEIGHT")
        values["width"], values["height"] = int(match.group(1)), int(match.group(2))
        if not all(1 <= side <= MAX_SIDE for side in (values["width"], values["height"])):
            raise InputError(f"the image's 'Size' value {size[:40]!r} is not a size (each side 1..{MAX_SIDE})")
    if "Prompt padding" in pairs:
        padding = pairs["Prompt padding"].strip().lower()
        if padding not in PROMPT_PADDINGS:
            raise InputError(f"the image's 'Prompt padding' value {pairs['Prompt padding'].strip()[:40]!r} is not "
                             f"{' or '.join(PROMPT_PADDINGS)}")
        values["prompt_padding"] = padding
    _read_refine(pairs, values)
    if "Model" in pairs:
        values["model"] = pairs["Model"]
    if "Decoder" in pairs:
        values["decoder"] = pairs["Decoder"]
    if "Memory mode" in pairs:
        values["mode"] = pairs["Memory mode"]
    if "Lora hashes" in pairs:  # A1111's: which LoRA files the prompt's <lora:...> tags meant
        values["lora_hashes"] = parse_hashes(pairs["Lora hashes"])
    if "Reference images" in pairs:  # shown, not applied: the images themselves are not in the file
        values["references"] = parse_references(pairs["Reference images"])
    applied = values.pop("_applied")
    unused = {key: value.strip()[:80] for key, value in pairs.items() if key not in _READ and key not in applied}
    if unused:  # another tool's settings (sampler, hires fix, clip skip...): named to the user, not dropped silently
        values["not_applied"] = unused
    return values


def _read_refine(pairs: dict[str, str], values: dict[str, Any]) -> None:
    """Samplers, image to image and the hi-res fix; ``values["_applied"]`` lists the keys that were used."""
    applied: list[str] = []
    if "Denoising strength" in pairs:
        # A1111's txt2img writes the hi-res denoise here; with a start image (or no hi-res) it is the denoise.
        hires_only = "Hires upscale" in pairs and "Init image" not in pairs and "Hires denoising strength" not in pairs
        name = "hires_denoise" if hires_only else "denoise"
        values[name] = _number("Denoising strength", pairs["Denoising strength"], *_RANGES[name])
        applied.append("Denoising strength")
    for key, name in (("Sampler", "prior_sampler"), ("Decoder sampler", "decoder_sampler")):
        found = _SAMPLERS_READ.get(pairs.get(key, "").strip().lower())
        if found and (name == "decoder_sampler" or found != "lcm"):  # LCM is a decoder sampler here
            values[name] = found
            applied.append(key)
    if pairs.get("Schedule type", "").strip().lower() in (SCHEDULE.lower(), "automatic", "uniform"):
        applied.append("Schedule type")  # the only spacing here: nothing to set
    if "Hires upscale" in pairs:
        scale = _number("Hires upscale", pairs["Hires upscale"], *_RANGES["hires_scale"])
        if scale == 1 or HIRES_SCALES[0] <= scale <= HIRES_SCALES[1]:  # other factors are named as not applied
            values["hires_scale"] = scale
            applied.append("Hires upscale")
    if pairs.get("Hires upscaler", "").strip().lower() == UPSCALER.lower():
        applied.append("Hires upscaler")
    if pairs.get("Resize mode", "").strip().lower() in RESIZE_MODES:
        values["resize_mode"] = pairs["Resize mode"].strip().lower()
        applied.append("Resize mode")
    if "Init image" in pairs:  # shown, not applied: the image itself is not in the file
        values["init_image_note"] = pairs["Init image"].strip()[:200]
        applied.append("Init image")
    _read_inpaint(pairs, values, applied)
    values["_applied"] = applied


# Keys this module reads above, and those that only describe the file (no setting to apply).
_READ = set(_NUMERIC) | {"Size", "Prompt padding", "Model", "Decoder", "Memory mode", "Reference images", "Lora hashes",
                         "Grid X", "Grid Y", "Prior stopped at", "Version", "Model hash", "VAE hash", "TI hashes"}


def not_applied_note(values: dict[str, Any]) -> str:
    """One line naming what an image's settings had that this model has no setting for ('' if nothing)."""
    unused = values.get("not_applied") or {}
    if not unused:
        return ""
    return "not applied (no such setting here): " + ", ".join(f"{key} {value}" for key, value in unused.items())


_REFERENCE = re.compile(r"^(?P<name>.+?) sha256:(?P<sha>[0-9a-f]{1,64}) x(?P<strength>[0-9.]+)$")


def parse_references(text: str) -> list[dict[str, Any]]:
    """``name sha256:HASH xSTRENGTH; ...`` (how reference images are recorded) as a list of dicts."""
    found = []
    for part in text.split("; "):
        match = _REFERENCE.match(part.strip())
        if match:
            try:
                strength = float(match.group("strength"))
            except ValueError:
                continue
            found.append({"name": match.group("name"), "sha256": match.group("sha"), "strength": strength})
    return found


def png_info(parameters: str) -> PngImagePlugin.PngInfo:
    info = PngImagePlugin.PngInfo()
    info.add_text(PNG_KEY, parameters)
    return info


def png_bytes(image: Image.Image, parameters: str) -> bytes:
    """Encode ``image`` as PNG bytes carrying ``parameters``."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=png_info(parameters))
    return buffer.getvalue()


_EXIF_IFD = 0x8769
_USER_COMMENT = 0x9286


def _decode_user_comment(raw: bytes | str) -> str | None:
    """EXIF UserComment text: an 8-byte character-code prefix, then the text.

    A1111 and Forge write ``UNICODE\\0`` + UTF-16 (big-endian, as piexif does;
    some tools write little-endian, told apart by where the zero bytes fall).
    """
    if isinstance(raw, str):
        return raw.strip("\x00") or None
    prefix, body = raw[:8], raw[8:]
    if prefix == b"UNICODE\x00":
        if body[:2] in (b"\xff\xfe", b"\xfe\xff"):
            text = body.decode("utf-16", "replace")
        else:
            even_zeros = body[0::2].count(0)
            odd_zeros = body[1::2].count(0)
            text = body.decode("utf-16-be" if even_zeros >= odd_zeros else "utf-16-le", "replace")
    elif prefix in (b"ASCII\x00\x00\x00", b"\x00" * 8):
        text = body.decode("utf-8", "replace")
    else:
        text = raw.decode("utf-8", "replace")
    return text.strip("\x00") or None


def _exif_parameters(image: Image.Image) -> str | None:
    try:
        exif = image.getexif()
        comment = exif.get_ifd(_EXIF_IFD).get(_USER_COMMENT) or exif.get(_USER_COMMENT)
    except Exception:  # broken EXIF: report as absent
        return None
    return _decode_user_comment(comment) if comment else None


def read_parameters(image: Image.Image) -> str | None:
    """The generation settings stored in a loaded image, if any.

    PNG: the ``parameters`` text chunk. JPEG and WebP (A1111, Forge): the EXIF
    UserComment, or a JPEG comment.
    """
    text = image.info.get(PNG_KEY)
    if text is None and hasattr(image, "text"):
        try:
            text = image.text.get(PNG_KEY)
        except Exception:  # a broken text chunk: report as absent
            text = None
    if text is None and (image.format or "").upper() in ("JPEG", "WEBP", "MPO"):
        text = _exif_parameters(image) or image.info.get("comment")
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return text
