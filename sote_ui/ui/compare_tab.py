"""The Compare tab: two presets (or images sent from the gallery), one prompt and seed, on one screen.

Left: what to compare (presets with their descriptions, prompt, tags, seed,
and size/steps for both sides). Right: an image slider of the selected seed,
a strip of every seed's A and B, the settings that differ with each side's
time, and buttons that take A's or B's settings to the Generate tab.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Callable

import gradio as gr

from ..core import tags
from ..core.errors import Cancelled
from ..core.presets import CURRENT
from ..core.request import MAX_SEED
from ..service.studio import Studio
from .form import form_updates
from .generate import GenerateTab
from .summaries import Eta, seconds_text, seeds_text
from .wiring import named_api, session_id, user_error, wire, wire_stoppable

FROM_PRESET = "(from each preset)"
SENT = {"a": "(image sent as A)", "b": "(image sent as B)"}


def _tag_choices(values) -> list[tuple[str, str]]:
    return [(FROM_PRESET, FROM_PRESET), ("none", tags.NONE)] + [(v, v) for v in values]


@dataclass
class CompareTab:
    """What the page needs of the Compare tab: its preset pickers and their descriptions."""

    presets: list  # Preset A and Preset B
    describe: Callable[[str, str], str]
    descriptions: gr.Markdown


def compare_summary(info: dict[str, Any], names: tuple[str, str]) -> str:
    seeds = info.get("seeds", [])
    shared = "prior shared by A and B" if info.get("prior_shared") else "prior run for each side"
    stopped = "stopped: the finished pairs · " if info.get("stopped") else ""
    return (f"{stopped}A ({names[0]}) {seconds_text(info.get('seconds_a', 0))} · B ({names[1]}) "
            f"{seconds_text(info.get('seconds_b', 0))} · seed{'s' if len(seeds) != 1 else ''} {seeds_text(seeds)}"
            f" · {shared}")


def shown_pair(path_a: str, path_b: str, seed: int):
    """The slider's value and a label that says which seed it shows."""
    return gr.ImageSlider(value=(path_a, path_b), label=f"A | B · seed {seed}")


def build_compare_tab(studio: Studio, generate: GenerateTab, tabs: gr.Tabs, generate_tab_id: str,
                      tab: gr.Tab | None = None) -> CompareTab:
    """Lay out the tab; return its pieces (preset dropdowns, the receivers of sent images)."""
    names = [CURRENT] + studio.presets.names()
    with gr.Row(elem_id="compare_layout"):
        with gr.Column(scale=4, min_width=320):
            with gr.Row(equal_height=True):
                preset_a = gr.Dropdown(names, value="card-recommended" if "card-recommended" in names else CURRENT,
                                       label="Preset A", elem_id="preset_a", allow_custom_value=True, min_width=200)
                preset_b = gr.Dropdown(names,
                                       value="secondary-cfg-1.2" if "secondary-cfg-1.2" in names else CURRENT,
                                       label="Preset B", elem_id="preset_b", allow_custom_value=True, min_width=200)
            descriptions = gr.Markdown(elem_id="preset_descriptions")
            prompt = gr.Textbox(label="Your tags (both sides)", lines=2, placeholder="1girl, solo, smile",
                                elem_id="compare_prompt")
            with gr.Row():
                aesthetic = gr.Dropdown(_tag_choices(tags.AESTHETIC), value=FROM_PRESET, label="Aesthetic",
                                        min_width=200)
                quality = gr.Dropdown(_tag_choices(tags.QUALITY), value=FROM_PRESET, label="Quality", min_width=200)
                date = gr.Dropdown(_tag_choices(tags.DATE), value=FROM_PRESET, label="Date", min_width=200)
                rating = gr.Dropdown(_tag_choices(tags.RATING), value=FROM_PRESET, label="Rating", min_width=200)
            gr.Markdown("Size and steps for both sides (0: each preset's own). A start image in Generate's Image to "
                        "image panel is both sides' start image.", elem_classes=["hint"])
            with gr.Row():
                width = gr.Number(0, label="Width", step=128, minimum=0, elem_id="compare_width", min_width=90)
                height = gr.Number(0, label="Height", step=128, minimum=0, elem_id="compare_height", min_width=90)
                prior_steps = gr.Number(0, label="Prior steps", step=1, minimum=0, elem_id="compare_prior_steps",
                                        min_width=90)
                decoder_steps = gr.Number(0, label="Decoder steps", step=1, minimum=0,
                                          elem_id="compare_decoder_steps", min_width=90)
            with gr.Row():
                seed = gr.Number(value=42, label="Seed (-1 = random)", minimum=-1, step=1, elem_id="compare_seed",
                                 min_width=120)
                seeds = gr.Slider(1, 8, value=1, step=1, label="Seeds (seed, seed+1, ...)", elem_id="compare_seeds")
            with gr.Row():
                run = gr.Button("Compare", variant="primary", elem_id="compare", scale=3)
                stop = gr.Button("Stop", variant="stop", interactive=False, elem_id="compare_stop", scale=1)
            status = gr.Markdown(elem_id="compare_status")
        with gr.Column(scale=5, min_width=320):
            slider = gr.ImageSlider(label="A | B", type="filepath", format="png", elem_id="compare_slider",
                                    max_height=520)
            thumbs = gr.Gallery(label="Every seed: A, B", columns=8, height=130, format="png", allow_preview=False,
                                object_fit="contain",
                                elem_id="compare_thumbs", preview=False)
            with gr.Row(equal_height=True):
                diff = gr.Dataframe(headers=["setting", "A", "B"], label="Settings that differ", interactive=False,
                                    elem_id="compare_diff", scale=3)
                with gr.Column(scale=1, min_width=120):
                    use_a = gr.Button("Use A's settings", size="sm", elem_id="use_a")
                    use_b = gr.Button("Use B's settings", size="sm", elem_id="use_b")
            summary = gr.Markdown(elem_id="compare_summary")
            with gr.Accordion("Sheet: every seed's A and B in one PNG", open=False):
                sheet = gr.Image(label="A/B sheet", type="filepath", format="png", interactive=False,
                                 buttons=["download", "fullscreen"], elem_id="compare_sheet")
            with gr.Accordion("Report, in full", open=False):
                report = gr.JSON(label="Report", elem_id="compare_report")
    pairs_state = gr.State([])  # one (A's settings, B's settings, A's file, B's file) per seed
    picked_state = gr.State(0)  # the pair the slider shows: what "Use A's/B's settings" takes
    sent_state = gr.State({})

    def choices_with_sent(sent: dict | None):
        extra = [SENT[side] for side in ("a", "b") if sent and side in sent]
        return [CURRENT] + studio.presets.names() + extra

    def refreshed(sent: dict | None = None):
        names = choices_with_sent(sent)
        return gr.update(choices=names), gr.update(choices=names)

    def describe(name_a: str, name_b: str) -> str:
        presets, _ = studio.presets.load()
        lines = []
        for side, name in (("A", name_a), ("B", name_b)):
            if name in presets:
                text = presets[name].description or "no description"
            elif name == CURRENT:
                text = "the Generate tab's current settings"
            elif name in SENT.values():
                text = "the settings of the image sent from the gallery"
            else:
                text = "not a preset"
            lines.append(f"**{side}:** {text}")
        return "  \n".join(lines)

    for dropdown in (preset_a, preset_b):
        dropdown.change(describe, [preset_a, preset_b], descriptions, api_visibility="private", queue=False,
                        show_progress="hidden")

    def overrides(prompt_text, aesthetic_v, quality_v, date_v, rating_v, seed_v, sizes) -> dict[str, Any]:
        values = {"prompt": prompt_text, "seed": seed_v}
        for key, value in (("aesthetic", aesthetic_v), ("quality", quality_v), ("date", date_v),
                           ("rating", rating_v)):
            if value and value != FROM_PRESET:
                values[key] = value
        values.update({k: v for k, v in sizes.items() if v not in (None, "", 0)})
        return values

    def side(name: str, current: dict[str, Any], extra: dict[str, Any], sent: dict | None):
        for key, label in SENT.items():
            if name == label:
                if not sent or key not in sent:
                    raise gr.Error(f"no image was sent as {key.upper()}: use the gallery's Compare button",
                                   print_exception=False)
                return studio.side_request(CURRENT, sent[key], extra)
        return studio.side_request(name, current, extra)

    @named_api(before=("preset_a", "preset_b", "prompt", "seed", "seeds", "aesthetic", "quality", "date", "rating",
                       "width", "height", "prior_steps", "decoder_steps"),
               after=("sent",), prefix="current_")
    def run_compare(preset_a, preset_b, prompt, seed, seeds, aesthetic, quality, date, rating, width, height,
                    prior_steps, decoder_steps, current, sent, request: gr.Request, progress=gr.Progress()):
        eta = Eta(_clock)

        def on_progress(p):
            which = "A" if p.image % 2 == 0 else "B"
            progress((p.done, p.total), desc=f"seed {p.image // 2 + 1}, side {which} · {p.stage} "
                                             f"{p.step}/{p.steps} · {eta.text(p.done, p.total)}")

        try:
            sizes = {"width": width, "height": height, "prior_steps": prior_steps, "decoder_steps": decoder_steps}
            extra = overrides(prompt, aesthetic, quality, date, rating, seed, sizes)
            if (current or {}).get("init_image"):  # both sides start from Generate's start image
                extra["init_image"] = current["init_image"]
            a = side(preset_a, current, extra, sent)
            b = side(preset_b, current, extra, sent)
            if not a.differences(b):
                raise gr.Error(f"A ({preset_a}) and B ({preset_b}) have the same settings: pick two that differ",
                               print_exception=False)
            first = a.seed if a.seed >= 0 else random.SystemRandom().randint(0, MAX_SEED - 8)
            pairs, info, sheet_path = studio.compare(
                a, b, [first + i for i in range(int(seeds or 1))],
                session=session_id(request), on_progress=on_progress)
        except Cancelled:
            raise gr.Error("stopped", print_exception=False) from None
        except gr.Error:
            raise
        except Exception as exc:
            raise user_error(exc) from None
        first_a, first_b = pairs[0]
        info["files"] = {"a": [x.path for x, _ in pairs], "b": [y.path for _, y in pairs], "sheet": sheet_path}
        rows = [[k, str(v["a"]), str(v["b"])] for k, v in info["diff"].items()]
        rows.append(["seconds", f"{info['seconds_a']:.1f}", f"{info['seconds_b']:.1f}"])
        strip = [(path, f"seed {x.request.seed} · {label}") for x, y in pairs
                 for path, label in ((x.path, "A"), (y.path, "B"))]
        return ((first_a.path, first_b.path), strip, rows,
                compare_summary(info, (preset_a, preset_b)), info,
                [(x.request.to_dict(), y.request.to_dict(), x.path, y.path) for x, y in pairs])

    inputs = ([preset_a, preset_b, prompt, seed, seeds, aesthetic, quality, date, rating, width, height, prior_steps,
               decoder_steps] + generate.inputs + [sent_state])
    outputs = [slider, thumbs, diff, summary, report, pairs_state]
    compared = wire_stoppable(run, stop, run_compare, inputs, outputs, api_name="compare", note=3, status=status,
                              stop_job=generate.stop_job)

    def show_sheet(info):
        # Page-only: the API's outputs stay what scripts read (the slider's value is a pair of files).
        info = info or {}
        seeds = info.get("seeds") or []
        label = gr.update(label=f"A | B · seed {seeds[0]}") if seeds else gr.update()
        return 0, (info.get("files") or {}).get("sheet"), label

    compared.then(show_sheet, report, [picked_state, sheet, slider], api_visibility="private", queue=False,
                  show_progress="hidden")

    def pick_seed(pairs, evt: gr.SelectData):
        if not pairs or evt.index is None:
            return gr.update(), gr.update()
        index = evt.index // 2
        values_a, _, path_a, path_b = pairs[index]
        return shown_pair(path_a, path_b, values_a["seed"]), index

    thumbs.select(pick_seed, pairs_state, [slider, picked_state], api_visibility="private", show_progress="hidden")

    def use(which: int):
        def apply(pairs, picked):
            if not pairs:
                raise gr.Error("run a comparison first", print_exception=False)
            values = pairs[picked if picked is not None and picked < len(pairs) else 0][which]
            updates, notes = form_updates(values)
            note = " · ".join([f"applied {'AB'[which]}'s settings of seed {values['seed']} from Compare"] + notes)
            return (*updates, note, gr.Tabs(selected=generate_tab_id), gr.update())

        return apply

    use_outputs = generate.form + [generate.image_note, tabs, summary]
    for button, which in ((use_a, 0), (use_b, 1)):
        wire(button.click, use(which), [pairs_state, picked_state], use_outputs, note=len(use_outputs) - 1)

    def receive(which: str):
        """Put the gallery's selected image on side ``which``: its settings, prompt and seed."""

        def apply(session, sent):
            _, shot = generate.selected_shot(session)
            sent = {**(sent or {}), which: shot.request.to_dict()}
            names = choices_with_sent(sent)
            dropdowns = [gr.update(choices=names, value=SENT[k]) if k == which else gr.update(choices=names)
                         for k in ("a", "b")]
            return (sent, *dropdowns, shot.request.prompt, shot.request.seed,
                    f"seed {shot.request.seed} is side {which.upper()} in Compare",
                    gr.Tabs(selected="compare"))

        return apply

    for button, which in ((generate.gallery.to_a, "a"), (generate.gallery.to_b, "b")):
        wire(button.click, receive(which), [generate.state, sent_state],
             [sent_state, preset_a, preset_b, prompt, seed, generate.image_note, tabs], note=5)

    if tab is not None:
        def start_from_generate(own: str, generate_prompt: str):
            # Opened from its tab with no tags yet: start from the Generate tab's (sent images bring their own).
            return gr.update() if (own or "").strip() else generate_prompt

        tab.select(start_from_generate, [prompt, generate.controls.prompt], prompt, api_visibility="private",
                   queue=False, show_progress="hidden")

    refresh_outputs = [preset_a, preset_b]

    def refresh_from(sent):
        return refreshed(sent)

    # Presets saved or deleted in Generate show here at once.
    for event in (generate.preset_events.save, generate.preset_events.delete):
        event.then(refresh_from, sent_state, refresh_outputs, api_visibility="private", show_progress="hidden")

    return CompareTab([preset_a, preset_b], describe, descriptions)


def _clock() -> float:
    import time

    return time.monotonic()
