"""The presets box: shipped presets read-only, the user's saved to their own folder, loaded into the form."""

from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from ...service.studio import Studio
from ..form import form_updates
from ..wiring import named_api, user_error, wire
from .controls import Controls


@dataclass
class PresetsBox:
    preset: gr.Dropdown
    load: gr.Button
    delete: gr.Button
    name: gr.Textbox
    overwrite: gr.Checkbox
    save: gr.Button
    status: gr.Markdown


@dataclass
class PresetEvents:
    """The events that change the preset files (other tabs refresh their lists after them)."""

    save: object
    delete: object


def build_presets_box(studio: Studio) -> PresetsBox:
    with gr.Accordion("Presets", open=False):
        with gr.Row():
            preset = gr.Dropdown(studio.presets.names(), label="Preset", value=None, elem_id="preset",
                                 allow_custom_value=True)
            load_preset = gr.Button("Load", size="sm", elem_id="load_preset")
            delete_preset = gr.Button("Delete", size="sm", variant="stop", elem_id="delete_preset")
        with gr.Row():
            preset_name = gr.Textbox(label="Save current settings as", placeholder="my-look",
                                     elem_id="preset_name")
            overwrite = gr.Checkbox(label="Overwrite", value=False, elem_id="overwrite")
            save_preset = gr.Button("Save", size="sm", elem_id="save_preset")
        preset_status = gr.Markdown(elem_id="preset_status")
    return PresetsBox(preset, load_preset, delete_preset, preset_name, overwrite, save_preset, preset_status)


def wire_presets_box(studio: Studio, box: PresetsBox, controls: Controls) -> PresetEvents:
    def list_presets() -> list[dict]:
        presets, errors = studio.presets.load()
        rows = [{"name": p.name, "shipped": p.shipped, "description": p.description, "values": p.values}
                for p in presets.values()]
        rows += [{"error": e} for e in errors]
        return rows

    hidden_list = gr.JSON(visible=False)
    gr.Button(visible=False).click(list_presets, None, hidden_list, api_name="list_presets")

    def apply_preset(name: str):
        if not name:
            raise gr.Error("pick a preset first", print_exception=False)
        try:
            request = studio.presets.request(name)
        except Exception as exc:
            raise user_error(exc) from None
        values = request.to_dict()
        values.pop("prompt")  # a preset sets the look, not your subject
        if request.seed < 0:
            values.pop("seed")
        updates, notes = form_updates(values)
        return (*updates, " · ".join([f"loaded preset {name}"] + notes))

    wire(box.load.click, apply_preset, box.preset, controls.form() + [box.status], api_name="load_preset",
         note=len(controls.form()))

    def refreshed(selected=None):
        return gr.update(choices=studio.presets.names(), value=selected)

    @named_api(before=("name",), after=("overwrite",))
    def save(name, values, overwrite, request: gr.Request = None, progress=None):
        try:
            saved = studio.presets.save(name, studio.request_from(values), overwrite=bool(overwrite))
        except Exception as exc:
            raise user_error(exc) from None
        return refreshed(saved.name), f"saved preset {saved.name} to {saved.path.parent}"

    save_event = wire(box.save.click, save, [box.name] + controls.as_list() + [box.overwrite],
                      [box.preset, box.status], api_name="save_preset", note=1)

    def delete(name):
        try:
            studio.presets.delete(name)
        except Exception as exc:
            raise user_error(exc) from None
        return refreshed(None), f"deleted preset {name}"

    delete_event = wire(box.delete.click, delete, box.preset, [box.preset, box.status], api_name="delete_preset",
                        note=1)
    return PresetEvents(save_event, delete_event)
