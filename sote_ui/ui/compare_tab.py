"""The Compare tab: two presets, one prompt and seed, side by side; and parameter grids."""

from __future__ import annotations

from typing import Any

import gradio as gr

from .. import tags
from ..compare import GRID_KEYS
from ..errors import Cancelled
from ..presets import CURRENT
from .generate_tab import named_api, session_id, updates_for, user_error
from .studio import Studio

FROM_PRESET = "(from each preset)"


def _tag_choices(values) -> list[tuple[str, str]]:
    return [(FROM_PRESET, FROM_PRESET), ("none", tags.NONE)] + [(v, v) for v in values]


def no_pairs() -> list:
    return []


def build_compare_tab(studio: Studio, generate: dict[str, Any], tabs: gr.Tabs,
                      generate_tab_id: str) -> list[gr.Dropdown]:
    """Lay out the tab; return its preset dropdowns, which the app refreshes on every page load."""
    names = [CURRENT] + studio.presets.names()
    with gr.Row():
        preset_a = gr.Dropdown(names, value="card-recommended" if "card-recommended" in names else CURRENT,
                               label="Preset A", elem_id="preset_a", allow_custom_value=True)
        preset_b = gr.Dropdown(names, value="secondary-cfg-1.2" if "secondary-cfg-1.2" in names else CURRENT,
                               label="Preset B", elem_id="preset_b", allow_custom_value=True)
        refresh = gr.Button("Refresh presets", size="sm")
    prompt = gr.Textbox(label="Your tags (both sides)", lines=2, placeholder="1girl, solo, smile",
                        elem_id="compare_prompt")
    with gr.Row():
        aesthetic = gr.Dropdown(_tag_choices(tags.AESTHETIC), value=FROM_PRESET, label="Aesthetic")
        quality = gr.Dropdown(_tag_choices(tags.QUALITY), value=FROM_PRESET, label="Quality")
        date = gr.Dropdown(_tag_choices(tags.DATE), value=FROM_PRESET, label="Date")
        rating = gr.Dropdown(_tag_choices(tags.RATING), value=FROM_PRESET, label="Rating")
    with gr.Row():
        seed = gr.Number(value=42, precision=0, minimum=0, label="Seed", elem_id="compare_seed")
        seeds = gr.Slider(1, 8, value=1, step=1, label="Seeds (seed, seed+1, ...)")
        run = gr.Button("Compare", variant="primary", elem_id="compare")
    slider = gr.ImageSlider(label="A | B (first seed)", type="filepath", elem_id="compare_slider")
    with gr.Row():
        image_a = gr.Image(label="A", type="filepath", format="png", interactive=False)
        image_b = gr.Image(label="B", type="filepath", format="png", interactive=False)
    sheet = gr.Image(label="All seeds: A | B", type="filepath", format="png", interactive=False)
    diff = gr.Dataframe(headers=["setting", "A", "B"], label="Settings that differ", interactive=False)
    report = gr.JSON(label="Report", elem_id="compare_report")
    pairs_state = gr.State(no_pairs)
    with gr.Row():
        use_a = gr.Button("Use A's settings", size="sm")
        use_b = gr.Button("Use B's settings", size="sm")

    def refreshed():
        names = [CURRENT] + studio.presets.names()
        return gr.update(choices=names), gr.update(choices=names)

    refresh.click(refreshed, None, [preset_a, preset_b], api_name="refresh_compare_presets", queue=False)


    def overrides(prompt_text, aesthetic_v, quality_v, date_v, rating_v, seed_v) -> dict[str, Any]:
        values = {"prompt": prompt_text, "seed": seed_v}
        for key, value in (("aesthetic", aesthetic_v), ("quality", quality_v), ("date", date_v),
                           ("rating", rating_v)):
            if value and value != FROM_PRESET:
                values[key] = value
        return values

    @named_api(before=("preset_a", "preset_b", "prompt", "seed", "seeds", "aesthetic", "quality", "date", "rating"),
               prefix="current_")
    def run_compare(preset_a, preset_b, prompt, seed, seeds, aesthetic, quality, date, rating, current,
                    request: gr.Request, progress=gr.Progress()):
        def on_progress(p):
            side = "A" if p.image % 2 == 0 else "B"
            progress((p.done, p.total), desc=f"seed {p.image // 2 + 1}, side {side}: {p.stage} {p.step}/{p.steps}")

        try:
            extra = overrides(prompt, aesthetic, quality, date, rating, seed)
            a = studio.side_request(preset_a, current, extra)
            b = studio.side_request(preset_b, current, extra)
            first = int(extra["seed"]) if extra["seed"] is not None and int(extra["seed"]) >= 0 else 42
            pairs, info, sheet_path = studio.compare(
                a, b, [first + i for i in range(int(seeds or 1))],
                session=session_id(request), on_progress=on_progress)
        except Cancelled:
            raise gr.Error("stopped", print_exception=False) from None
        except Exception as exc:
            raise user_error(exc) from None
        first_a, first_b = pairs[0]
        info["files"] = {"a": [x.path for x, _ in pairs], "b": [y.path for _, y in pairs], "sheet": sheet_path}
        rows = [[k, str(v["a"]), str(v["b"])] for k, v in info["diff"].items()]
        return ((first_a.path, first_b.path), first_a.path, first_b.path, sheet_path, rows, info,
                [(x.request.to_dict(), y.request.to_dict()) for x, y in pairs])

    inputs = [preset_a, preset_b, prompt, seed, seeds, aesthetic, quality, date, rating] + generate["inputs"]
    run.click(run_compare, inputs, [slider, image_a, image_b, sheet, diff, report, pairs_state],
              api_name="compare", concurrency_id="gpu")

    def use(side: int):
        def apply(pairs):
            if not pairs:
                raise gr.Error("run a comparison first", print_exception=False)
            return updates_for(pairs[0][side]) + [False, gr.Tabs(selected=generate_tab_id)]

        return apply

    outputs = generate["inputs"] + [generate["randomize"], tabs]
    use_a.click(use(0), pairs_state, outputs, api_name="use_a", queue=False)
    use_b.click(use(1), pairs_state, outputs, api_name="use_b", queue=False)

    # A parameter grid, aware of the two stages: each prior output is computed once.
    with gr.Accordion("Parameter grid (X/Y plot)", open=False):
        gr.Markdown("Varies settings of the Generate tab. Runs are ordered so every prior output is computed "
                    "once and reused for all decoder values.")
        with gr.Row():
            x_key = gr.Dropdown(list(GRID_KEYS), value="prior_cfg", label="X axis", elem_id="grid_x")
            x_values = gr.Textbox(value="4, 6, 8, 10", label="X values", elem_id="grid_x_values")
            y_key = gr.Dropdown(["(none)"] + list(GRID_KEYS), value="decoder_steps", label="Y axis",
                                elem_id="grid_y")
            y_values = gr.Textbox(value="8, 10, 12", label="Y values", elem_id="grid_y_values")
        grid_run = gr.Button("Run grid", variant="primary", elem_id="grid_run")
        grid_image = gr.Image(label="Grid", type="filepath", format="png", interactive=False, elem_id="grid")
        grid_report = gr.JSON(label="Grid report")

    @named_api(before=("x_key", "x_values", "y_key", "y_values"))
    def run_grid(x_key_v, x_text, y_key_v, y_text, current, request: gr.Request, progress=gr.Progress()):
        def on_progress(p):
            progress((p.done, p.total), desc=f"cell {p.image + 1}/{p.images}: {p.stage} {p.step}/{p.steps}")

        try:
            base = studio.request_from(current).with_seed()
            y = None if y_key_v in (None, "", "(none)") else y_key_v
            path, info = studio.grid(base, x_key_v, x_text, y, y_text,
                                     session=session_id(request), on_progress=on_progress)
        except Cancelled:
            raise gr.Error("stopped", print_exception=False) from None
        except Exception as exc:
            raise user_error(exc) from None
        info["file"] = path
        return path, info

    grid_run.click(run_grid, [x_key, x_values, y_key, y_values] + generate["inputs"], [grid_image, grid_report],
                   api_name="grid", concurrency_id="gpu")
    return [preset_a, preset_b]
