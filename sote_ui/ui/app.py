"""The whole Gradio app: Generate, Compare and PNG info tabs around one :class:`Studio`.

Example::

    from sote_ui.ui.app import build_demo
    from sote_ui.ui.studio import Studio, StudioConfig

    demo = build_demo(Studio(StudioConfig()))
    demo.queue(max_size=20).launch()
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gradio as gr

from ..outputs import MAX_UPLOAD_BYTES
from ..presets import CURRENT
from .compare_tab import build_compare_tab
from .generate_tab import build_generate_tab
from .pnginfo_tab import build_pnginfo_tab
from .prompt_tools import script_head
from .studio import Studio

TITLE = "Sote Studio"
INTRO = (
    "SoteDiffusion Wuerstchen3 (an anime finetune of Stable Cascade) on your own GPU. "
    "Pick the tags the model was trained with, add yours, and generate. "
    "The prior (stage C) draws the composition; the decoder (stage B) paints the details."
)
CSS = """
#composed code { white-space: pre-wrap; }
#status { font-size: 0.9em; opacity: 0.85; }
"""


# Gradio keeps a copy of every image shown and every upload in its cache: every hour, drop the copies
# older than a day (the saved images stay in the outputs folder). The cache is emptied at each start.
CACHE_CLEANING = (3600, 86400)


def build_demo(studio: Studio) -> gr.Blocks:
    """Build the Blocks app; the model loads in the background once it is launched."""
    with gr.Blocks(title=TITLE, delete_cache=CACHE_CLEANING) as demo:
        gr.Markdown(f"# {TITLE}\n{INTRO}")
        if studio.config.demo:
            gr.Markdown("**Demo mode:** this runs on a tiny random-weight model, so every image is noise. "
                        "Start without `--demo` for SoteDiffusion Wuerstchen3.", elem_id="demo_banner")
        with gr.Tabs() as tabs:
            with gr.Tab("Generate", id="generate"):
                generate = build_generate_tab(studio)
            with gr.Tab("Compare", id="compare"):
                compare_presets = build_compare_tab(studio, generate, tabs, "generate")
            with gr.Tab("PNG info", id="pnginfo"):
                build_pnginfo_tab(studio, generate, tabs, "generate")

        # While the model loads, poll its status; stop polling once it is ready or failed.
        timer = gr.Timer(1.0)

        def poll():
            return studio.status(), generate["device_markdown"](), gr.Timer(active=not studio.settled())

        timer.tick(poll, None, [generate["status"], generate["device_info"], timer], api_name="status",
                   queue=False, show_progress="hidden")
        demo.load(generate["compose"], generate["tag_inputs"], generate["composed"], api_name=False, queue=False)

        # Presets saved after the page was built (by this or another visitor) show on every page load.
        # A malformed preset file is reported here and skipped; the others still load.
        def preset_choices():
            presets, errors = studio.presets.load()
            names = list(presets)
            report = "".join(f"\n- skipped {error}" for error in errors)
            return (gr.update(choices=names), gr.update(choices=[CURRENT] + names),
                    gr.update(choices=[CURRENT] + names), f"**Preset files with problems:**{report}" if errors else "")

        demo.load(preset_choices, None, [generate["preset"]] + compare_presets + [generate["preset_status"]],
                  api_name=False, queue=False)
    return demo


def launch_options(studio: Studio) -> dict[str, Any]:
    """Options for ``demo.launch`` that follow from the studio's config.

    Gradio serves files only from its cache, the working folder and the temp
    folder; the outputs folder is allowed too, so images saved wherever the
    user chose still reach the page. Nothing else is.
    """
    outputs = studio.config.outputs
    allowed = [str(Path(outputs).expanduser().resolve())] if outputs else None
    # Uploads over the limit are refused while they stream in, before anything is stored.
    return {"css": CSS, "allowed_paths": allowed, "max_file_size": MAX_UPLOAD_BYTES, "head": script_head()}
