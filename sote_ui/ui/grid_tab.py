"""The X/Y grid tab: vary one or two settings from a base that is shown and editable here.

Axes have human names (Prior CFG, Prompt S/R, Artist...). Runs are ordered so
each distinct prior setting is computed once and reused for every decoder
value.
"""

from __future__ import annotations

from typing import Any

import gradio as gr

from ..core.errors import Cancelled
from ..core.request import DECODER_SAMPLERS, FIELD_NAMES, PRIOR_SAMPLERS, GenerationRequest
from ..service.compare import AXIS_LABELS
from ..service.studio import Studio
from .form import form_updates
from .generate import GenerateTab
from .summaries import Eta, seconds_text
from .wiring import named_api, page_action, session_id, user_error, values_of, wire_stoppable

NO_AXIS = "(none)"
# Grid base controls: the settings people grid around; the rest come from the Generate tab.
BASE_KEYS = ("prompt", "width", "height", "seed", "prior_steps", "prior_cfg", "decoder_steps", "decoder_cfg")
EXAMPLES = {
    "prior_cfg": "4, 6, 8, 10",
    "prior_steps": "20, 30, 40",
    "decoder_cfg": "1, 1.2, 1.5",
    "decoder_steps": "8, 10, 12",
    "seed": "1, 2, 3, 4",
    "width": "768, 1024",
    "height": "1024, 1536",
    "prompt_sr": "smile, frown, crying (first: the text to find in the prompt)",
    "artist": "artist one, artist two",
    "aesthetic": "very aesthetic, aesthetic, displeasing",
    "quality": "best quality, high quality, normal quality",
    "date": "newest, recent, mid, early, old",
    "rating": "general, sensitive",
    "denoise": "0.4, 0.6, 0.8",
    "hires_scale": "1, 1.5, 2",
    "hires_denoise": "0.3, 0.5, 0.7",
    "prior_sampler": ", ".join(PRIOR_SAMPLERS),
    "decoder_sampler": ", ".join(DECODER_SAMPLERS),
    "prior_shift": "1, 2, 3",
    "decoder_shift": "1, 2",
}


def _axis_choices(with_none: bool) -> list[tuple[str, str]]:
    choices = [(label, key) for key, label in AXIS_LABELS.items()]
    return [(NO_AXIS, NO_AXIS)] + choices if with_none else choices


def grid_summary(info: dict[str, Any]) -> str:
    return (f"{info['cells']} cells in {seconds_text(info.get('seconds', 0))} · prior run {info['prior_runs']} "
            f"time{'s' if info['prior_runs'] != 1 else ''} · {info['size'][0]}x{info['size'][1]} px sheet")


def cell_labels(info: dict[str, Any]) -> list[str]:
    """Each cell's caption, row by row: its X value, and its Y value where there is a Y axis."""
    axes = info.get("axes") or {}
    x_label, x_terms = axes.get("x", ["", []])
    y_label, y_terms = axes.get("y", ["", [""]])
    return [f"{x_label} {x}" + (f" · {y_label} {y}" if y_label else "") for y in y_terms for x in x_terms]


def build_grid_tab(studio: Studio, generate: GenerateTab, tab: gr.Tab, tabs: gr.Tabs | None = None,
                   generate_tab_id: str = "generate") -> None:
    controls = generate.controls
    limits = studio.config.limits
    d = GenerationRequest()
    with gr.Row(elem_id="grid_layout"):
        with gr.Column(scale=4, min_width=320):
            gr.Markdown("**Starting point** (copied from the Generate tab when you open this tab; edit freely). "
                        "Tags and the negative prompt come from the Generate tab.", elem_classes=["hint"])
            prompt = gr.Textbox(d.prompt, label="Your tags", lines=2, elem_id="grid_prompt")
            with gr.Row():
                width = gr.Slider(limits.min_side, min(limits.max_side, 2560), value=d.width, step=128, label="Width",
                                  elem_id="grid_width")
                height = gr.Slider(limits.min_side, min(limits.max_side, 2560), value=d.height, step=128, label="Height",
                                   elem_id="grid_height")
            with gr.Row():
                prior_steps = gr.Slider(1, min(limits.max_prior_steps, 80), value=d.prior_steps, step=1, label="Prior steps",
                                        elem_id="grid_prior_steps")
                prior_cfg = gr.Slider(0, min(limits.max_cfg, 20), value=d.prior_cfg, step=0.1, label="Prior CFG")
            with gr.Row():
                decoder_steps = gr.Slider(1, min(limits.max_decoder_steps, 40), value=d.decoder_steps, step=1, label="Decoder steps",
                                          elem_id="grid_decoder_steps")
                decoder_cfg = gr.Slider(0, min(limits.max_cfg, 5), value=d.decoder_cfg, step=0.1, label="Decoder CFG")
            seed = gr.Number(d.seed, label="Seed (-1 = random, one seed for every cell)", minimum=-1, step=1,
                             elem_id="grid_seed")
            with gr.Row(equal_height=True):
                x_key = gr.Dropdown(_axis_choices(False), value="prior_cfg", label="X axis", elem_id="grid_x",
                                    min_width=160)
                x_values = gr.Textbox(value=EXAMPLES["prior_cfg"], label="X values", elem_id="grid_x_values",
                                      min_width=200)
            with gr.Row(equal_height=True):
                y_key = gr.Dropdown(_axis_choices(True), value="decoder_steps", label="Y axis", elem_id="grid_y",
                                    min_width=160)
                y_values = gr.Textbox(value=EXAMPLES["decoder_steps"], label="Y values", elem_id="grid_y_values",
                                      min_width=200)
            with gr.Row():
                run = gr.Button("Run grid", variant="primary", elem_id="grid_run", scale=3)
                stop = gr.Button("Stop", variant="stop", interactive=False, elem_id="grid_stop", scale=1)
            status = gr.Markdown(elem_id="grid_status")
        with gr.Column(scale=6, min_width=320):
            # No toolbar over the sheet (it covered an axis label): downloading has its own button.
            grid_image = gr.Image(label="Grid", type="filepath", format="png", interactive=False, elem_id="grid",
                                  buttons=[])
            with gr.Row():
                download = gr.DownloadButton("Download the full-size sheet", size="sm", visible=False,
                                             elem_id="grid_download")
            summary = gr.Markdown(elem_id="grid_summary")
            cells_gallery = gr.Gallery(label="Cells: click one to take its settings to Generate", columns=4,
                                       height=260, format="png", allow_preview=False, object_fit="contain",
                                       elem_id="grid_cells")
            cell_note = gr.Markdown(elem_id="grid_cell_note")
            with gr.Accordion("Report, in full", open=False):
                report = gr.JSON(label="Grid report", elem_id="grid_report")

    base = [prompt, width, height, seed, prior_steps, prior_cfg, decoder_steps, decoder_cfg]

    def copy_base(*values):
        current = values_of(values)
        return [current[key] for key in BASE_KEYS]

    tab.select(copy_base, generate.inputs, base, api_visibility="private", queue=False, show_progress="hidden")

    def example(key: str):
        return gr.update(placeholder=EXAMPLES.get(key, ""), value=EXAMPLES.get(key, ""))

    x_key.input(example, x_key, x_values, api_visibility="private", queue=False, show_progress="hidden")
    y_key.input(example, y_key, y_values, api_visibility="private", queue=False, show_progress="hidden")

    @named_api(before=("x_key", "x_values", "y_key", "y_values"))
    def run_grid(x_key_v, x_text, y_key_v, y_text, current, request: gr.Request, progress=gr.Progress()):
        eta = Eta(_clock)

        def on_progress(p):
            progress((p.done, p.total), desc=f"cell {p.image + 1}/{p.images} · {p.stage} {p.step}/{p.steps} · "
                                             f"{eta.text(p.done, p.total)}")

        started = _clock()
        try:
            start = studio.request_from(current).with_seed()
            y = None if y_key_v in (None, "", NO_AXIS) else y_key_v
            path, info = studio.grid(start, x_key_v, x_text, y, y_text, session=session_id(request),
                                     on_progress=on_progress)
        except Cancelled:
            raise gr.Error("stopped", print_exception=False) from None
        except Exception as exc:
            raise user_error(exc) from None
        info["file"] = path
        info["seconds"] = round(_clock() - started, 3)
        return path, grid_summary(info), info

    # The grid's own base controls stand in for the Generate tab's where they exist.
    own = dict(zip(BASE_KEYS, base))
    inputs = [x_key, x_values, y_key, y_values] + [own.get(name, getattr(controls, name)) for name in FIELD_NAMES]
    outputs = [grid_image, summary, report]
    ran = wire_stoppable(run, stop, run_grid, inputs, outputs, api_name="grid", note=1, status=status,
                         stop_job=generate.stop_job)
    cell_files = gr.State([])  # the cells' files, row by row, as the cells gallery shows them

    def show_cells(info):
        rows = (info or {}).get("cell_files") or []
        files = [path for row in rows for path in row]
        if not files:
            return gr.update(), gr.update(), gr.update()
        labels = cell_labels(info)
        items = [(path, label) for path, label in zip(files, labels)]
        return (gr.Gallery(value=items, columns=len(rows[0])), files,
                gr.DownloadButton(value=info.get("file"), visible=True))

    ran.then(show_cells, report, [cells_gallery, cell_files, download], api_visibility="private", queue=False,
             show_progress="hidden")

    def take_cell(files, evt: gr.SelectData):
        if not files or evt.index is None or evt.index >= len(files):
            raise gr.Error("run a grid first", print_exception=False)
        _, values = studio.read_png(files[evt.index])
        updates, notes = form_updates({k: v for k, v in values.items() if k in FIELD_NAMES})
        message = " · ".join([f"applied the settings of grid cell {evt.index + 1}"] + notes)
        return (*updates, message, message, gr.Tabs(selected=generate_tab_id))

    take_outputs = generate.form + [generate.image_note, cell_note, tabs]
    cells_gallery.select(page_action(take_cell, len(take_outputs), len(generate.form) + 1), cell_files,
                         take_outputs, api_visibility="private", show_progress="hidden")


def _clock() -> float:
    import time

    return time.monotonic()
