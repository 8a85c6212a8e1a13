"""The Generate tab: tag pickers, sliders, memory mode, presets, gallery, stop, reuse.

Every event has an ``api_name``; ``/generate`` takes the request vocabulary
as named parameters.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any

import gradio as gr

from .. import tags
from ..memory import MODE_HELP, Mode
from ..request import FIELD_NAMES, MAX_REFERENCES, MAX_STRENGTH, GenerationRequest
from ..tags import MAX_CHUNKS, TRAINED_CHUNKS
from .prompt_tools import attach_prompt_tools, past_chunks_markdown
from .studio import SessionState, Studio, describe_error

RESOLUTIONS = [
    ("1024 x 1536  (2:3 portrait, card default)", "1024x1536"),
    ("1536 x 1024  (3:2 landscape)", "1536x1024"),
    ("1024 x 1024  (1:1 square)", "1024x1024"),
    ("1152 x 2048  (9:16 phone)", "1152x2048"),
    ("2048 x 1152  (16:9 wallpaper)", "2048x1152"),
    ("896 x 1152  (7:9 portrait)", "896x1152"),
    ("1152 x 896  (9:7 landscape)", "1152x896"),
    ("1280 x 1280  (1:1 large)", "1280x1280"),
    ("custom", "custom"),
]
RESOLUTION_VALUES = {value for _, value in RESOLUTIONS}


def _choices(values) -> list[tuple[str, str]]:
    return [("none", tags.NONE)] + [(v, v) for v in values]


@dataclass
class Controls:
    """The request controls, in the request's field order."""

    prompt: gr.Textbox
    negative_prompt: gr.Textbox
    aesthetic: gr.Dropdown
    quality: gr.Dropdown
    date: gr.Dropdown
    custom: gr.Dropdown
    rating: gr.Dropdown
    artist: gr.Textbox
    width: gr.Slider
    height: gr.Slider
    seed: gr.Number
    prior_steps: gr.Slider
    prior_cfg: gr.Slider
    decoder_steps: gr.Slider
    decoder_cfg: gr.Slider
    count: gr.Slider
    resolution_picker: gr.Dropdown  # not a request field: it sets width and height

    def as_list(self) -> list:
        return [getattr(self, name) for name in FIELD_NAMES]


def values_of(args) -> dict[str, Any]:
    return dict(zip(FIELD_NAMES, args))


def named_api(before: tuple[str, ...] = (), after: tuple[str, ...] = (), prefix: str = "",
              optional: tuple[str, ...] = ()):
    """Expose ``fn(*before, values, *after, request=, progress=)`` with every request field named.

    Gradio names API parameters after the function's signature, so the
    endpoint gets explicit names in the request's vocabulary (``prompt``,
    ``width``, ``prior_cfg``...), optionally prefixed, instead of ``param_N``.
    ``optional`` names come last and default to None, so API clients may leave them out.
    """
    names = (*before, *(prefix + name for name in FIELD_NAMES), *after, *optional)

    def wrap(fn):
        first, count = len(before), len(FIELD_NAMES)

        def endpoint(*args):
            *args, request, progress = args
            head, fields, tail = args[:first], args[first:first + count], args[first + count:]
            return fn(*head, values_of(fields), *tail, request=request, progress=progress)

        kind = inspect.Parameter.POSITIONAL_OR_KEYWORD
        params = [inspect.Parameter(name, kind) for name in names[:len(names) - len(optional)]]
        params += [inspect.Parameter(name, kind, default=None) for name in optional]
        params += [inspect.Parameter("request", kind, annotation=gr.Request, default=None if optional else
                                     inspect.Parameter.empty),
                   inspect.Parameter("progress", kind, default=gr.Progress())]
        endpoint.__signature__ = inspect.Signature(params)
        endpoint.__annotations__ = {"request": gr.Request}
        endpoint.__name__ = fn.__name__
        return endpoint

    return wrap


def updates_for(values: dict[str, Any]) -> list:
    """gr.update per control for the keys present in ``values`` (others untouched)."""
    return [gr.update(value=values[name]) if name in values else gr.update() for name in FIELD_NAMES]


def build_controls(studio: Studio, defaults: GenerationRequest) -> Controls:
    limits = studio.config.limits
    with gr.Group():
        prompt = gr.Textbox(label="Your tags", placeholder="1girl, solo, cowboy shot, smile, hoodie, indoors",
                            lines=3, value=defaults.prompt, elem_id="prompt")
        with gr.Row():
            aesthetic = gr.Dropdown(_choices(tags.AESTHETIC), value=defaults.aesthetic, label="Aesthetic",
                                    elem_id="aesthetic")
            quality = gr.Dropdown(_choices(tags.QUALITY), value=defaults.quality, label="Quality",
                                  elem_id="quality")
            date = gr.Dropdown([("none", tags.NONE)] + [(f"{k} ({v})", k) for k, v in tags.DATE.items()],
                               value=defaults.date, label="Date", elem_id="date")
        with gr.Row():
            rating = gr.Dropdown(_choices(tags.RATING), value=defaults.rating, label="Rating", elem_id="rating")
            custom = gr.Dropdown(_choices(tags.CUSTOM), value=defaults.custom, label="Source tag",
                                 elem_id="custom")
            artist = gr.Textbox(label="Pixiv artist ('art by NAME')", value=defaults.artist, elem_id="artist")
        negative_prompt = gr.Textbox(label="Negative prompt", value=defaults.negative_prompt, lines=2,
                                     elem_id="negative_prompt")
    with gr.Accordion("Size, steps and CFG", open=True):
        resolution = gr.Dropdown(RESOLUTIONS, value=f"{defaults.width}x{defaults.height}", label="Resolution",
                                 elem_id="resolution")
        with gr.Row():
            width = gr.Slider(limits.min_side, min(limits.max_side, 2560), value=defaults.width, step=128,
                              label="Width")
            height = gr.Slider(limits.min_side, min(limits.max_side, 2560), value=defaults.height, step=128,
                               label="Height")
        with gr.Row():
            prior_steps = gr.Slider(1, min(limits.max_prior_steps, 80), value=defaults.prior_steps, step=1,
                                    label="Prior steps (stage C)")
            prior_cfg = gr.Slider(0, min(limits.max_cfg, 20), value=defaults.prior_cfg, step=0.1,
                                  label="Prior CFG")
        with gr.Row():
            decoder_steps = gr.Slider(1, min(limits.max_decoder_steps, 40), value=defaults.decoder_steps, step=1,
                                      label="Decoder steps (stage B)")
            decoder_cfg = gr.Slider(0, min(limits.max_cfg, 5), value=defaults.decoder_cfg, step=0.1,
                                    label="Decoder ('secondary') CFG; applied above 1")
        with gr.Row():
            seed = gr.Number(value=defaults.seed if defaults.seed >= 0 else 42, precision=0, label="Seed",
                             minimum=-1, elem_id="seed")
            count = gr.Slider(1, limits.max_count, value=defaults.count, step=1, label="Images")
    resolution.change(_resolution_to_size, resolution, [width, height], api_visibility="undocumented",
                      queue=False, show_progress="hidden")
    for slider in (width, height):  # .input fires on user edits only, so this can't loop with .change
        slider.input(_size_to_resolution, [width, height], resolution, api_visibility="undocumented",
                     queue=False, show_progress="hidden")
    return Controls(prompt, negative_prompt, aesthetic, quality, date, custom, rating, artist, width, height,
                    seed, prior_steps, prior_cfg, decoder_steps, decoder_cfg, count, resolution)


def _size_to_resolution(width: float, height: float) -> str:
    choice = f"{int(width)}x{int(height)}"
    return choice if choice in RESOLUTION_VALUES else "custom"


def _resolution_to_size(choice: str):
    if not choice or choice == "custom" or "x" not in choice:
        return gr.update(), gr.update()
    width, height = (int(v) for v in choice.split("x"))
    return width, height


def budget_line(chunks: list[int] | None) -> str:
    """The prompt's token budget in chunks: the model was trained with 3 chunks of 75 tokens."""
    if chunks is None:
        return "token count shows once the model is loaded"
    parts = " + ".join(str(n) for n in chunks)
    line = f"{len(chunks)} of {TRAINED_CHUNKS} chunks ({parts} tokens)"
    if len(chunks) > MAX_CHUNKS:
        return f"{line} — over the limit of {MAX_CHUNKS} chunks: shorten the prompt"
    if len(chunks) > TRAINED_CHUNKS:
        return f"{line} — past the {TRAINED_CHUNKS} chunks the model was trained with"
    return line


def session_id(request: gr.Request | None) -> str:
    return request.session_hash if request else ""


def user_error(exc: BaseException) -> gr.Error:
    """The one-line message for ``exc``, shown in the page and returned to API clients."""
    return gr.Error(describe_error(exc), print_exception=False)


def new_session() -> SessionState:
    return SessionState()


GALLERY_SIZE = 48  # the newest images shown; each reply carries the whole gallery


def caption(request: GenerationRequest, width: int = 90) -> str:
    """The seed and the image's own prompt (with its wildcards picked)."""
    prompt = " ".join(request.prompt.split())
    prompt = prompt if len(prompt) <= width else prompt[:width - 1] + "…"
    return f"seed {request.seed} · {prompt}" if prompt else f"seed {request.seed}"


def gallery_items(state: SessionState) -> list[tuple[str, str]]:
    return [(shot.path, caption(shot.request)) for shot in reversed(state.shots[-GALLERY_SIZE:])]


def build_generate_tab(studio: Studio) -> dict[str, Any]:
    """Lay out the Generate tab inside the current Blocks; return its pieces for other tabs."""
    defaults = GenerationRequest()
    state = gr.State(new_session)
    with gr.Row():
        with gr.Column(scale=5):
            controls = build_controls(studio, defaults)
            composed = gr.Markdown(elem_id="composed")
            with gr.Row():
                randomize = gr.Checkbox(value=True, label="Random seed each run", elem_id="randomize")
                reuse_seed = gr.Button("Reuse last seed", size="sm")
            with gr.Accordion("Image remix: steer the composition with reference images", open=False):
                remix_images = gr.File(label=f"Up to {MAX_REFERENCES} reference images", file_count="multiple",
                                       file_types=["image"], type="filepath", elem_id="remix_images")
                remix_strengths = gr.Textbox(label=f"Strengths, 0 to {MAX_STRENGTH:g}: one for all, or one per image",
                                             placeholder="1.0  (or 1.0, 0.5)", elem_id="remix_strengths")
            with gr.Accordion("Presets", open=False):
                with gr.Row():
                    preset = gr.Dropdown(studio.presets.names(), label="Preset", value=None, elem_id="preset",
                                         allow_custom_value=True)
                    load_preset = gr.Button("Load", size="sm")
                    delete_preset = gr.Button("Delete", size="sm", variant="stop")
                with gr.Row():
                    preset_name = gr.Textbox(label="Save current settings as", placeholder="my-look")
                    overwrite = gr.Checkbox(label="Overwrite", value=False)
                    save_preset = gr.Button("Save", size="sm")
                preset_status = gr.Markdown()
            with gr.Accordion("Memory mode", open=False):
                mode = gr.Dropdown([(f"{m.value}: {MODE_HELP[m]}", m.value) for m in Mode],
                                   value=studio.config.mode, label="Memory mode", elem_id="mode",
                                   interactive=studio.config.mode_switch)
                device_info = gr.Markdown()
        with gr.Column(scale=6):
            with gr.Row():
                generate = gr.Button("Generate", variant="primary", elem_id="generate")
                stop = gr.Button("Stop", variant="stop", elem_id="stop")
            gallery = gr.Gallery(label="This session's images", columns=2, height=640, format="png",
                                 elem_id="gallery", buttons=["download", "fullscreen"])
            with gr.Row():
                reuse = gr.Button("Reuse settings of the selected image", size="sm")
            report = gr.JSON(label="Last run", elem_id="report")

    inputs = controls.as_list()
    tag_inputs = [controls.prompt, controls.aesthetic, controls.quality, controls.date, controls.custom,
                  controls.rating, controls.artist]

    # 1. Composed prompt preview, with the token budget the model was trained with.
    def compose(prompt, aesthetic, quality, date, custom, rating, artist) -> str:
        try:
            text = tags.compose_prompt(prompt, aesthetic=aesthetic, quality=quality, date=date, custom=custom,
                                       rating=rating, artist=artist)
        except ValueError as exc:
            return f"**Prompt:** {exc}"
        return (f"**Prompt sent:** `{text}`  \n{budget_line(studio.chunk_counts(text))}"
                + past_chunks_markdown(text, studio.chunk_counts))

    for component in tag_inputs:
        component.change(compose, tag_inputs, composed, api_name=False, queue=False, show_progress="hidden")

    # 2. Generate, stop, reuse.
    status = gr.Markdown(studio.status(), elem_id="status")

    @named_api(after=("randomize_seed", "session"), optional=("images", "image_strengths"))
    def run(values, randomize_seed, session, images, image_strengths, request: gr.Request, progress=gr.Progress()):
        if randomize_seed:
            values["seed"] = -1
        values["images"] = list(images or [])
        values["image_strengths"] = image_strengths if image_strengths not in (None, "") else None
        session = session or SessionState()

        def on_progress(p):
            progress((p.done, p.total), desc=f"image {p.image + 1}/{p.images}: {p.stage} {p.step}/{p.steps}")

        try:
            shots, info = studio.generate(values, session=session_id(request),
                                          on_progress=on_progress)
        except Exception as exc:
            raise user_error(exc) from None
        session.shots.extend(shots)
        if shots:
            session.last_seed = shots[-1].request.seed
        info["files"] = [shot.path for shot in shots]
        info["parameters"] = [shot.parameters for shot in shots]
        message = studio.status()
        if info.get("stopped"):
            message = f"stopped after {len(shots)} finished image(s): the GPU is free for the next job"
        return gallery_items(session), info, session, message

    run_inputs = inputs + [randomize, state, remix_images, remix_strengths]
    run_outputs = [gallery, report, state, status]
    gen_event = generate.click(run, run_inputs, run_outputs, api_name="generate", concurrency_id="gpu")
    submit_event = controls.prompt.submit(run, run_inputs, run_outputs, api_name=False, concurrency_id="gpu")

    def stop_job(request: gr.Request) -> str:
        stopped = studio.stop(session_id(request))
        return "stopping after the current step" if stopped else "nothing is running"

    stop.click(stop_job, None, status, api_name="stop", queue=False)

    def reuse_last(session: SessionState):
        if not session or session.last_seed is None:
            raise gr.Error("no image yet: generate one first", print_exception=False)
        return session.last_seed, False

    reuse_seed.click(reuse_last, state, [controls.seed, randomize], api_name="reuse_seed", queue=False)

    def select(session: SessionState, evt: gr.SelectData):
        session.selected = len(session.shots) - 1 - evt.index  # the gallery shows the newest first
        return session

    gallery.select(select, state, state, api_name=False, queue=False)

    def reuse_settings(session: SessionState):
        if not session or not session.shots:
            raise gr.Error("no image yet: generate one first", print_exception=False)
        index = session.selected if session.selected is not None else len(session.shots) - 1
        values = session.shots[index].request.to_dict()
        return updates_for(values) + [False]

    reuse.click(reuse_settings, state, inputs + [randomize], api_name="reuse_settings", queue=False)

    # 3. Presets: shipped ones read-only, user ones saved to their own folder.
    def list_presets() -> list[dict]:
        presets, errors = studio.presets.load()
        rows = [{"name": p.name, "shipped": p.shipped, "description": p.description, "values": p.values}
                for p in presets.values()]
        rows += [{"error": e} for e in errors]
        return rows

    hidden_list = gr.JSON(visible=False)
    gr.Button(visible=False).click(list_presets, None, hidden_list, api_name="list_presets", queue=False)

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
        return updates_for(values) + [gr.update(value=_size_to_resolution(request.width, request.height)),
                                      f"loaded preset {name}"]

    load_preset.click(apply_preset, preset, inputs + [controls.resolution_picker, preset_status],
                      api_name="load_preset", queue=False)

    def refreshed(selected=None):
        return gr.update(choices=studio.presets.names(), value=selected)

    @named_api(before=("name",), after=("overwrite",))
    def save(name, values, overwrite, request: gr.Request = None, progress=None):
        try:
            saved = studio.presets.save(name, studio.request_from(values), overwrite=bool(overwrite))
        except Exception as exc:
            raise user_error(exc) from None
        return refreshed(saved.name), f"saved preset {saved.name} to {saved.path.parent}"

    save_preset.click(save, [preset_name] + inputs + [overwrite], [preset, preset_status], api_name="save_preset",
                      queue=False)

    def delete(name):
        try:
            studio.presets.delete(name)
        except Exception as exc:
            raise user_error(exc) from None
        return refreshed(None), f"deleted preset {name}"

    delete_preset.click(delete, preset, [preset, preset_status], api_name="delete_preset", queue=False)

    # 4. Memory mode: switching frees the old mode's memory; no restart.
    def device_markdown() -> str:
        report = studio.device_report()
        lines = [f"**Device:** {report['device']}  \n**Mode:** {report['mode']}"]
        if report.get("reason"):
            lines.append(f"  \n{report['reason']}")
        if report["modes"]:
            lines.append("\n\n| mode | needs at 1024x1536 | note |\n|---|---|---|")
            lines += [f"| {m} | {need} | {note or 'available'} |" for m, need, note in report["modes"]]
        return "".join(lines[:2]) + "\n".join(lines[2:])

    def switch_mode(new_mode: str, progress=gr.Progress()):
        progress(0, desc=f"switching to {new_mode}")
        try:
            studio.set_mode(new_mode)
        except Exception as exc:
            raise user_error(exc) from None
        return device_markdown(), studio.status()

    mode.input(switch_mode, mode, [device_info, status], api_name="set_mode", concurrency_id="gpu")

    # 5. Tag suggestions, keyboard habits and the prompt history.
    tools = attach_prompt_tools(studio, inputs, [gen_event, submit_event])

    return {
        "controls": controls,
        "inputs": inputs,
        "state": state,
        "status": status,
        "composed": composed,
        "device_info": device_info,
        "device_markdown": device_markdown,
        "compose": compose,
        "tag_inputs": tag_inputs,
        "randomize": randomize,
        "preset": preset,
        "preset_status": preset_status,
        "gen_event": gen_event,
        **tools,
    }


__all__ = ["Controls", "build_generate_tab", "updates_for", "values_of"]
