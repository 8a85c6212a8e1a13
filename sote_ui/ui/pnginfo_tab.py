"""The PNG info tab: read the settings stored in any image (ours or A1111's) and apply them."""

from __future__ import annotations

import gradio as gr

from ..core.metadata import not_applied_note
from ..core.request import FIELD_NAMES
from ..service.studio import Studio
from .form import form_updates
from .generate import GenerateTab
from .wiring import user_error, wire


def build_pnginfo_tab(studio: Studio, generate: GenerateTab, tabs: gr.Tabs, generate_tab_id: str) -> None:
    """Lay out the tab; "Send to Generate" fills the Generate tab's controls."""
    with gr.Row():
        with gr.Column():
            upload = gr.File(label="Drop a PNG here", file_types=["image"], type="filepath", elem_id="png_upload")
            preview = gr.Image(label="Image", interactive=False, height=360)
        with gr.Column():
            send = gr.Button("Send to Generate", variant="primary", elem_id="send_to_generate")
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
        return preview_path, text, values, ""

    upload.change(read_in_page, upload, [preview, raw, parsed, note], api_visibility="private")
    gr.Button(visible=False).click(read, upload, [preview, raw, parsed], api_name="png_info")

    def apply(values: dict | None):
        if not values:
            raise gr.Error("drop an image with stored settings first", print_exception=False)
        settings = {k: v for k, v in values.items() if k in FIELD_NAMES}
        updates, notes = form_updates(settings)
        unused = not_applied_note(values)
        message = " · ".join(["applied the settings read from the image"] + notes + ([unused] if unused else []))
        return (*updates, message, message, gr.Tabs(selected=generate_tab_id))

    outputs = generate.form + [generate.image_note, note, tabs]
    wire(send.click, apply, parsed, outputs, note=len(generate.form) + 1)

    def receive(session):
        _, shot = generate.selected_shot(session)
        return (*read_in_page(shot.path), gr.Tabs(selected="pnginfo"), "")

    wire(generate.gallery.to_info.click, receive, generate.state, [preview, raw, parsed, note, tabs,
                                                                 generate.image_note], note=5)
