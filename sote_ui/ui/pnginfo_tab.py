"""The PNG info tab: read the settings stored in any image (ours or A1111's) and apply them."""

from __future__ import annotations

from typing import Any

import gradio as gr

from ..request import FIELD_NAMES
from .generate_tab import updates_for, user_error
from .studio import Studio


def build_pnginfo_tab(studio: Studio, generate: dict[str, Any], tabs: gr.Tabs, generate_tab_id: str) -> None:
    """Lay out the tab; "Send to Generate" fills the Generate tab's controls."""
    with gr.Row():
        with gr.Column():
            upload = gr.File(label="Drop a PNG here", file_types=["image"], type="filepath", elem_id="png_upload")
            preview = gr.Image(label="Image", interactive=False, height=360)
        with gr.Column():
            raw = gr.Textbox(label="Stored parameters", lines=8, elem_id="png_raw")
            parsed = gr.JSON(label="Read as settings", elem_id="png_parsed")
            send = gr.Button("Send to Generate", variant="primary")

    def read(path: str | None):
        if not path:
            return None, "", None
        try:
            text, values = studio.read_png(path, remove_if_refused=True)
        except Exception as exc:
            raise user_error(exc) from None
        return path, text, values

    upload.change(read, upload, [preview, raw, parsed], api_name="png_info", queue=False)

    def apply(values: dict | None):
        if not values:
            raise gr.Error("drop an image with stored settings first", print_exception=False)
        settings = {k: v for k, v in values.items() if k in FIELD_NAMES}
        return updates_for(settings) + [False, gr.Tabs(selected=generate_tab_id)]

    send.click(apply, parsed, generate["inputs"] + [generate["randomize"], tabs], api_name="apply_png_info",
               queue=False)
