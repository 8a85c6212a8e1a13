"""PNG metadata in the A1111 "parameters" format, written and read back.

The text is what image sites and readers parse: the prompt, a
``Negative prompt:`` line, then ``Key: value`` pairs (values holding commas are
JSON-quoted). The prior's steps and CFG go in the standard ``Steps`` and
``CFG scale`` keys; the decoder's settings, the memory mode and both model
ids follow under their own keys.

Pure data and logic (Pillow only): no torch, no gradio.

Example::

    text = format_parameters(request, seed=42, model=ModelInfo("Disty0/sotediffusion-wuerstchen3", "..."))
    values = parse_parameters(text)   # {"prompt": ..., "prior_steps": 40, "seed": 42, ...}
"""

from __future__ import annotations

import io
import json
import re
from dataclasses import dataclass
from typing import Any

from PIL import Image, PngImagePlugin

from .request import GenerationRequest, InputError
from .tags import decompose_prompt

SAMPLER = "DDPMWuerstchen"
PNG_KEY = "parameters"
MAX_PARAMETERS_CHARS = 64 * 1024

# A1111's own pattern for "Key: value" pairs, values optionally JSON-quoted.
_PAIR = re.compile(r'\s*([\w][\w \-/+]*?):\s*("(?:\\.|[^\\"])*"|[^,]*)(?:,|$)')


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
    prompt = request.composed_prompt()
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
    }
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


def _unquote(value: str) -> str:
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] == '"':
        try:
            return str(json.loads(value))
        except json.JSONDecodeError:
            return value[1:-1]
    return value


def parse_pairs(line: str) -> dict[str, str]:
    pairs: dict[str, str] = {}
    for match in _PAIR.finditer(line):
        pairs[match.group(1).strip()] = _unquote(match.group(2))
    return pairs


def split_parameters(text: str) -> tuple[str, str, dict[str, str]]:
    """Split A1111 text into (prompt, negative prompt, pairs)."""
    if len(text) > MAX_PARAMETERS_CHARS:
        raise InputError(f"the image's parameters are {len(text)} characters long; the limit is {MAX_PARAMETERS_CHARS}")
    lines = text.strip().split("\n")
    pairs: dict[str, str] = {}
    if lines and _PAIR.match(lines[-1]) and ("Steps:" in lines[-1] or "Seed:" in lines[-1]):
        pairs = parse_pairs(lines.pop())
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
}


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
            raw = pairs[key]
            try:
                values[name] = float(raw) if name.endswith("cfg") else int(float(raw))
            except ValueError:
                raise InputError(f"the image's {key!r} value {raw[:40]!r} is not a number") from None
    size = pairs.get("Size")
    if size:
        match = re.fullmatch(r"\s*(\d+)\s*x\s*(\d+)\s*", size)
        if not match:
            raise InputError(f"the image's size {size[:40]!r} is not WIDTHxHEIGHT")
        values["width"], values["height"] = int(match.group(1)), int(match.group(2))
    if "Model" in pairs:
        values["model"] = pairs["Model"]
    if "Decoder" in pairs:
        values["decoder"] = pairs["Decoder"]
    if "Memory mode" in pairs:
        values["mode"] = pairs["Memory mode"]
    return values


def png_info(parameters: str) -> PngImagePlugin.PngInfo:
    info = PngImagePlugin.PngInfo()
    info.add_text(PNG_KEY, parameters)
    return info


def png_bytes(image: Image.Image, parameters: str) -> bytes:
    """Encode ``image`` as PNG bytes carrying ``parameters``."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=png_info(parameters))
    return buffer.getvalue()


def read_parameters(image: Image.Image) -> str | None:
    """The ``parameters`` text stored in a loaded image, if any."""
    text = image.info.get(PNG_KEY)
    if text is None and hasattr(image, "text"):
        try:
            text = image.text.get(PNG_KEY)
        except Exception:  # a broken text chunk: report as absent
            text = None
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return text
