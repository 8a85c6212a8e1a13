"""The whole Gradio app: Generate, Compare, X/Y grid, PNG info and Outputs tabs around one :class:`Studio`.

Example::

    from sote_ui.ui.app import build_demo
    from sote_ui.service.studio import Studio, StudioConfig

    demo = build_demo(Studio(StudioConfig()))
    demo.queue(max_size=20).launch()
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gradio as gr

from ..core.outputs import MAX_UPLOAD_BYTES
from ..core.presets import CURRENT
from ..service.studio import DEMO_PREFIX, Studio
from .compare_tab import build_compare_tab
from .generate import build_generate_tab
from .generate.prompt_tools import script_head, suggest_routes
from .grid_tab import build_grid_tab
from .keyboard import keyboard_head, shortcuts_html
from .outputs_tab import build_outputs_tab
from .pnginfo_tab import build_pnginfo_tab
from .wiring import queued_jobs, share_gpu

TITLE = "Sote Studio"
INTRO = (
    "SoteDiffusion Wuerstchen3 (an anime finetune of Stable Cascade) on your own GPU. "
    "Pick the tags the model was trained with, add yours, and generate. "
    "The prior (stage C) draws the composition; the decoder (stage B) paints the details."
)
CSS = """
#composed { font-size: 0.85em; }
#shortcuts { font-size: 0.85em; }
.sote-stale { display: none !important; }
#shortcuts summary { cursor: pointer; width: max-content; }
#shortcuts td { padding: 2px 10px 2px 0; }
#composed code { white-space: pre-wrap; word-break: break-word; }
#status, #compare_status, #grid_status { font-size: 0.9em; min-height: 2.6em; }
#status .progress-text, #status .meta-text { white-space: normal; }
#device_info td, #device_info th { white-space: nowrap; word-break: keep-all; }
#device_info p { word-break: normal; }
.hint { font-size: 0.85em; opacity: 0.8; }
.seed-tools { justify-content: center; gap: 6px !important; }
/* Dropdowns show their whole choice: text wraps instead of being cut. */
.wrap-inner input[role=combobox] { text-overflow: clip; }
.wrap-inner .token, .wrap-inner input { min-width: 0; }
@media (max-width: 768px) {
  /* On a phone, Generate, Stop, Skip and Stop and finish stay on screen at the bottom, on one row. */
  #actions { position: fixed; left: 0; right: 0; bottom: 0; z-index: 50; margin: 0; padding: 8px 12px;
             background: var(--background-fill-primary); box-shadow: 0 -2px 8px rgba(0, 0, 0, 0.15); gap: 6px; }
  #actions button { padding-left: 6px; padding-right: 6px; white-space: nowrap; }
  /* ...with the status line (the run's progress) just above them. */
  #status { position: fixed; left: 0; right: 0; bottom: 60px; z-index: 50; margin: 0; padding: 4px 12px;
            min-height: 0; max-height: 4.5em; overflow: hidden; font-size: 0.8em;
            background: var(--background-fill-primary); border-top: 1px solid var(--border-color-primary); }
  body { padding-bottom: 150px; }
  .gradio-container { padding-bottom: 150px !important; }
}
"""
# Narrow screens start with "Size, steps, CFG and seed" folded, so the prompt and Generate come first;
# Generate then scrolls to the results.
JS = """
() => {
  if (window.innerWidth <= 768) {
    const fold = () => {
      const button = document.querySelector('#size_steps > button');
      if (button && button.getAttribute('aria-expanded') !== 'false') { button.click(); return true; }
      return !!button;
    };
    if (!fold()) { const t = setInterval(() => { if (fold()) clearInterval(t); }, 200); }
    // Generate scrolls to the results, which sit below the form on a narrow screen.
    document.addEventListener('click', (event) => {
      if (event.target.closest && event.target.closest('#generate')) {
        const gallery = document.querySelector('#gallery');
        if (gallery) gallery.scrollIntoView({behavior: 'smooth', block: 'start'});
      }
    }, true);
  }
}
"""


# Gradio keeps a copy of every image shown and every upload in its cache: every hour, drop the copies
# older than a day (the saved images stay in the outputs folder). The cache is emptied at each start.
CACHE_CLEANING = (3600, 86400)


def generate_label(studio: Studio) -> str:
    """The Generate button's text: what the model is doing while it loads, else plain "Generate"."""
    if studio.settled():
        return "Generate (the model failed to load: see the status)" if studio.load_failed() else "Generate"
    status = studio.status().removeprefix(DEMO_PREFIX)
    if status.startswith("fetching"):
        return "Generate (downloading the model…)"
    if status.startswith("loading weights"):
        return "Generate (loading the model…)"
    if status.startswith("applying"):
        return f"Generate ({status.split(':')[0]}…)"
    return "Generate (the model is loading…)"


def build_demo(studio: Studio) -> gr.Blocks:
    """Build the Blocks app; the model loads in the background once it is launched."""
    with gr.Blocks(title=TITLE, delete_cache=CACHE_CLEANING) as demo:
        gr.Markdown(f"# {TITLE}\n{INTRO}", elem_id="intro")
        gr.HTML(shortcuts_html(), elem_id="shortcuts")
        if studio.config.demo:
            gr.Markdown("**Demo mode:** this runs on a tiny random-weight model, so every image is noise. "
                        "Start without `--demo` for SoteDiffusion Wuerstchen3.", elem_id="demo_banner")
        with gr.Tabs() as tabs:
            with gr.Tab("Generate", id="generate"):
                generate = build_generate_tab(studio, waiting=lambda session: queued_jobs(demo, session), page=demo)
            with gr.Tab("Compare", id="compare") as compare_tab:
                compare = build_compare_tab(studio, generate, tabs, "generate", compare_tab)
            with gr.Tab("X/Y grid", id="grid") as grid_tab:
                build_grid_tab(studio, generate, grid_tab, tabs, "generate")
            with gr.Tab("PNG info", id="pnginfo"):
                build_pnginfo_tab(studio, generate, tabs, "generate")
            with gr.Tab("Outputs", id="outputs") as outputs_tab:
                build_outputs_tab(studio, generate, tabs, "generate", outputs_tab)

        # While the model loads, poll its status (Generate says it is loading); stop once ready or failed.
        timer = gr.Timer(1.0)

        def poll():
            settled = studio.settled()
            return (studio.status(), generate.device_markdown(), gr.Timer(active=not settled),
                    gr.update(value=generate_label(studio)), generate.mode_choices())

        timer.tick(poll, None, [generate.status, generate.memory.device_info, timer, generate.run.generate,
                                generate.memory.mode], api_visibility="private", queue=False, show_progress="hidden")

        def status():
            return studio.status(), generate.device_markdown()

        gr.Button(visible=False).click(status, None, [generate.status, generate.memory.device_info], api_name="status",
                                       queue=False)
        demo.load(generate.compose, generate.tag_inputs, generate.controls.composed, api_visibility="private",
                  queue=False)
        demo.load(compare.describe, compare.presets, compare.descriptions, api_visibility="private",
                  queue=False)

        # Presets saved after the page was built (by this or another visitor) show on every page load.
        # A malformed preset file is reported here and skipped; the others still load.
        def preset_choices():
            presets, errors = studio.presets.load()
            names = list(presets)
            report = "".join(f"\n- skipped {error}" for error in errors)
            return (gr.update(choices=names), gr.update(choices=[CURRENT] + names),
                    gr.update(choices=[CURRENT] + names), f"**Preset files with problems:**{report}" if errors else "")

        demo.load(preset_choices, None, [generate.presets.preset] + compare.presets + [generate.presets.status],
                  api_visibility="private", queue=False)

        # A closed tab's session: the studio forgets it, and Gradio drops its stored state and page copy
        # now rather than an hour later.
        def closed(request: gr.Request):
            session = request.session_hash if request else None
            if not session:
                return
            studio.forget(session)
            holder = getattr(demo, "state_holder", None)
            if holder is not None and session in holder:
                holder.delete_state(session)
                with holder.lock:
                    holder.session_data.pop(session, None)
                    holder.time_last_used.pop(session, None)

        demo.unload(closed)
    share_gpu(demo, studio.device_count)
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
    # Tag suggestions have a plain route beside Gradio's, for speed while a run is going (ui/generate/prompt_tools.py).
    return {"css": CSS, "js": JS, "allowed_paths": allowed, "max_file_size": MAX_UPLOAD_BYTES,
            "head": script_head() + keyboard_head(), "app_kwargs": {"routes": suggest_routes()}}
