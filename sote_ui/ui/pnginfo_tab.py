"""The PNG info tab: read the settings stored in any image (ours or A1111's), rewrite an A1111 prompt in this
model's tags, and apply them."""

from __future__ import annotations

import gradio as gr

from ..core import fixer, loras, tags
from ..core.metadata import not_applied_note
from ..core.request import FIELD_NAMES
from ..service.studio import Studio
from .form import form_updates
from .generate import GenerateTab
from .wiring import user_error, wire


def rewrite_for_model(values: dict) -> tuple[dict, list[str]]:
    """Settings read from an image with the prompt and negative prompt in this model's tags
    (:func:`sote_ui.core.fixer.rewrite_a1111`); leading card tags then go to the pickers. Returns the notes."""
    values = dict(values)
    notes: list[str] = []
    for key, what in (("prompt", "prompt"), ("negative_prompt", "negative")):
        if values.get(key):
            values[key], changes = fixer.rewrite_a1111(str(values[key]))
            notes += [f"{what}: {change}" for change in changes]
    picks = {k: values.get(k) for k in ("aesthetic", "quality", "date", "custom", "rating", "artist")}
    try:
        values.update(tags.decompose_prompt(tags.compose_prompt(values.get("prompt") or "", **picks)))
    except ValueError:  # a pick this model does not have: left for Send to Generate to report
        pass
    return values, notes


def build_pnginfo_tab(studio: Studio, generate: GenerateTab, tabs: gr.Tabs, generate_tab_id: str) -> None:
    """Lay out the tab; "Send to Generate" fills the Generate tab's controls."""
    with gr.Row():
        with gr.Column():
            upload = gr.File(label="Drop a PNG here", file_types=["image"], type="filepath", elem_id="png_upload")
            preview = gr.Image(label="Image", interactive=False, height=360)
        with gr.Column():
            with gr.Row():
                send = gr.Button("Send to Generate", variant="primary", elem_id="send_to_generate")
                rewrite = gr.Button("Rewrite for this model", elem_id="png_rewrite")
            note = gr.Markdown(elem_id="png_note")
            raw = gr.Textbox(label="Stored parameters", lines=8, elem_id="png_raw")
            with gr.Accordion("Read as settings", open=False):
                parsed = gr.JSON(label="Read as settings", elem_id="png_parsed")

    def read(path: str | None):
        if not path:
            return None, "", None
        try:
            text, values = studio.read_png(path, remove_if_refused=True)
        except Exception as exc:
            raise user_error(exc) from None
        return path, text, values

    def read_in_page(path: str | None):
        try:
            preview_path, text, values = read(path)
        except gr.Error as exc:
            gr.Warning(exc.message)
            return None, "", None, f"⚠️ {exc.message}"
        missing = loras.missing_note(values.get("prompt", ""), values.get("lora_hashes"))
        return preview_path, text, values, f"⚠️ {missing}" if missing else ""

    upload.change(read_in_page, upload, [preview, raw, parsed, note], api_visibility="private")
    gr.Button(visible=False).click(read, upload, [preview, raw, parsed], api_name="png_info")

    def apply(values: dict | None):
        if not values:
            raise gr.Error("drop an image with stored settings first", print_exception=False)
        settings = {k: v for k, v in values.items() if k in FIELD_NAMES}
        settings.setdefault("loras", [])  # an image names its LoRAs as <lora:...> tags in its prompt
        updates, notes = form_updates(settings)
        unused = not_applied_note(values)
        if values.get("init_image_note"):  # the file itself is not in the PNG: the panel keeps its image
            notes.append(f"its start image was {values['init_image_note'].split(' sha256:')[0]!r}: drop that image in "
                         "Image to image to start from it again")
        if values.get("mask_note"):
            notes.append(values["mask_note"])
        missing = loras.missing_note(values.get("prompt", ""), values.get("lora_hashes"))
        message = " · ".join(["applied the settings read from the image"] + notes + ([unused] if unused else [])
                             + ([missing] if missing else []))
        return (*updates, message, message, gr.Tabs(selected=generate_tab_id))

    def rewrite_in_page(values: dict | None):
        if not values:
            gr.Warning("drop an image with stored settings first")
            return gr.update(), "⚠️ drop an image with stored settings first"
        values, notes = rewrite_for_model(values)
        return values, "rewrote the prompts in this model's tags" + (": " + " · ".join(notes) if notes else
                                                                       ": nothing to change")

    rewrite.click(rewrite_in_page, parsed, [parsed, note], api_visibility="private")

    outputs = generate.form + [generate.image_note, note, tabs]
    wire(send.click, apply, parsed, outputs, note=len(generate.form) + 1)

    def receive(session):
        _, shot = generate.selected_shot(session)
        return (*read_in_page(shot.path), gr.Tabs(selected="pnginfo"), "")

    wire(generate.gallery.to_info.click, receive, generate.state, [preview, raw, parsed, note, tabs,
                                                                 generate.image_note], note=5)
