"""Keeping the form consistent: sizes snapped to multiples of 128, the Resolution picker in step with
the sliders, and A1111 syntax this app does not read flagged."""

from __future__ import annotations

import math
import re
from typing import Any

import gradio as gr

from ..core import loras
from ..core.errors import InputError
from ..core.request import FIELD_NAMES

SIDE_STEP = 128
RESOLUTIONS = [
    ("1024 x 1536  (2:3 portrait, card default)", "1024x1536"),
    ("1536 x 1024  (3:2 landscape)", "1536x1024"),
    ("1024 x 1024  (1:1 square)", "1024x1024"),
    ("1152 x 2048  (9:16 phone)", "1152x2048"),
    ("2048 x 1152  (16:9 wallpaper)", "2048x1152"),
    ("896 x 1152  (7:9 portrait)", "896x1152"),
    ("1152 x 896  (9:7 landscape)", "1152x896"),
    ("1280 x 1280  (1:1 large)", "1280x1280"),
    ("custom", "custom"),
]
RESOLUTION_VALUES = {value for _, value in RESOLUTIONS}
# Settings carry no files: a start image named in a preset, a PNG or a stored form is never put in the
# panel (a path written there would have the server show that file); the panel keeps the image it has.
FILE_FIELDS = ("init_image", "mask", "control_image")
# A1111 prompt syntax this model has no use for here: sent as plain text, so say so.
_UNSUPPORTED = re.compile(r"<(lora|lyco|hypernet|embedding):[^>]*>", re.IGNORECASE)


def snap_side(value: float) -> int:
    """The nearest multiple of 128 (halves round up), at least 128."""
    return max(SIDE_STEP, int(math.floor(float(value) / SIDE_STEP + 0.5)) * SIDE_STEP)


def size_to_resolution(width: float, height: float) -> str:
    choice = f"{int(width)}x{int(height)}"
    return choice if choice in RESOLUTION_VALUES else "custom"


def settings_for_form(values: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """Values ready for the controls (sizes snapped to multiples of 128) and notes on what was changed."""
    values = {k: v for k, v in values.items() if k in FIELD_NAMES and k not in FILE_FIELDS}
    notes = []
    sizes = {}
    for key in ("width", "height"):
        if values.get(key) is None:
            continue
        try:
            sizes[key] = float(values[key])
        except (TypeError, ValueError):
            continue
    snapped = {key: snap_side(value) for key, value in sizes.items()}
    if any(snapped[key] != sizes[key] for key in snapped):
        old = "x".join(f"{sizes[k]:g}" for k in ("width", "height") if k in sizes)
        new = "x".join(str(snapped[k]) for k in ("width", "height") if k in snapped)
        notes.append(f"size {old} snapped to {new} (sizes are multiples of 128)")
    values.update(snapped)
    flagged = unsupported_syntax(values.get("prompt") or "")
    if flagged:
        notes.append(flagged)
    return values, notes


def unsupported_syntax(prompt: str) -> str:
    """A note on the prompt's ``<lora:...>`` tags naming no LoRA here (or with a bad weight), and on A1111
    syntax this app sends as plain text (``<lyco:...>`` and kin); '' when there is none."""
    found = sorted({m.group(0) for m in _UNSUPPORTED.finditer(prompt or "") if m.group(1).lower() != "lora"})
    notes = []
    try:
        refs = loras.split_tags(prompt or "")[1]
    except InputError as exc:
        notes.append(str(exc))
        refs = ()
    if refs:
        here = loras.available()
        missing = [loras.tag_text(ref) for ref in refs if ref.name not in here]
        if missing:
            notes.append(f"{', '.join(f'`{tag}`' for tag in missing[:3])}: no such LoRA in the loras folder")
    if found:
        notes.append(f"{', '.join(f'`{tag}`' for tag in found[:3])}: LyCORIS, hypernetwork and embedding tags are not supported here; "
                     "they are sent as plain text, so remove them")
    return "; ".join(notes)


def form_updates(values: dict[str, Any], with_resolution: bool = True) -> tuple[list, list[str]]:
    """gr.update per request control (keys absent stay untouched), then the Resolution picker.

    The picker follows the size that is set, so it never shows a size other
    than the sliders'. Returns the updates and the notes of
    :func:`settings_for_form`.
    """
    values, notes = settings_for_form(values)
    updates = [gr.update(value=values[name]) if name in values else gr.update() for name in FIELD_NAMES]
    if with_resolution:
        if "width" in values and "height" in values:
            updates.append(gr.update(value=size_to_resolution(values["width"], values["height"])))
        else:
            updates.append(gr.update())
    return updates, notes
