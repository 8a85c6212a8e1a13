"""The LoRA picker of the Generate tab: pick a LoRA of the loras folder and a weight, add it; the request's
``loras`` control lists what is added (``name:weight``, removable, editable by typing).

``<lora:name:weight>`` in the prompt works too and wins over the list for the same name.
"""

from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from ...core import loras
from ...core.errors import InputError
from ...core.loras import MAX_WEIGHT


@dataclass
class LoraBox:
    """The request's ``loras`` control and the picker that fills it."""

    value: gr.Dropdown  # the request field: "name:weight" strings
    name: gr.Dropdown
    weight: gr.Slider
    add: gr.Button
    refresh: gr.Button
    note: gr.Markdown


def _where() -> str:
    return f"LoRA files (`*.safetensors`) go in the loras folder (`{loras.ENV}` moves it)"


def add_lora(current: list[str] | None, name: str | None, weight: float):
    """The list with ``name:weight`` added (replacing that name's entry), and a note."""
    current = [item for item in (current or []) if isinstance(item, str) and item.strip()]
    if not name:
        return gr.update(), "pick a LoRA first"
    try:
        ref = loras.parse_ref(f"{name}:{float(weight):g}")
    except InputError as exc:
        return gr.update(), f"⚠️ {exc}"
    kept = [item for item in current if item.split(":")[0].strip() != ref.name]
    return kept + [loras.ref_text(ref)], ""


def refresh_names():
    """The folder's LoRAs again (files added while the page is open)."""
    found = loras.names()
    note = "" if found else f"no LoRAs found: {_where()}"
    return gr.update(choices=found, value=found[0] if found else None), note


def build_lora_box(default: tuple = ()) -> LoraBox:
    """Lay out the picker (in an accordion, open when LoRAs are present) and wire it; returns the box."""
    found = loras.names()
    with gr.Accordion("LoRA", open=False, elem_id="lora_box"):
        with gr.Row(equal_height=True):
            name = gr.Dropdown(found, value=found[0] if found else None, label="LoRA", elem_id="lora_name",
                               min_width=200, scale=4)
            weight = gr.Slider(-2, 2, value=1.0, step=0.05, label="Weight", elem_id="lora_weight", min_width=160,
                               scale=3, info=f"-{MAX_WEIGHT:g}..{MAX_WEIGHT:g} typed")
            with gr.Column(scale=0, min_width=90):
                add = gr.Button("＋ add", elem_id="lora_add", size="sm")
                refresh = gr.Button("↻ list", elem_id="lora_refresh", size="sm")
        value = gr.Dropdown([], value=[loras.ref_text(ref) for ref in default], multiselect=True,
                            allow_custom_value=True, label="LoRAs used (name:weight)", elem_id="loras",
                            info="<lora:name:weight> in the prompt works too")
        note = gr.Markdown("" if found else f"no LoRAs found: {_where()}", elem_id="lora_note")
    add.click(add_lora, [value, name, weight], [value, note], api_visibility="private", queue=False,
              show_progress="hidden")
    refresh.click(refresh_names, None, [name, note], api_visibility="private", queue=False, show_progress="hidden")
    return LoraBox(value, name, weight, add, refresh, note)


__all__ = ["LoraBox", "add_lora", "build_lora_box", "refresh_names"]
