"""The Generate tab: tag pickers, sliders, seed, memory mode, presets, gallery and its actions.

``/generate`` takes the request vocabulary as named parameters and returns
this job's images; the page keeps the session's gallery apart from it.
Actions that only make sense on the page (reuse a seed, reuse an image's
settings...) are not API endpoints.
"""

from __future__ import annotations

import queue
import threading
from dataclasses import dataclass
from typing import Any

import gradio as gr

from ..core import tags
from ..core.memory import MODE_HELP, Mode
from ..core.request import FIELD_NAMES, MAX_REFERENCES, MAX_STRENGTH, GenerationRequest
from ..core.tags import MAX_CHUNKS, TRAINED_CHUNKS
from ..service.studio import Studio
from .common import (
    RESOLUTIONS,
    Eta,
    form_updates,
    named_api,
    page_action,
    run_summary,
    session_id,
    size_to_resolution,
    snap_side,
    unsupported_syntax,
    user_error,
    values_of,
    wire,
)
from .prompt_tools import attach_prompt_tools, past_chunks_markdown
from .session import SessionState

RANDOM_SEED_LABEL = "Seed (-1 = random)"


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
    composed: gr.Markdown  # the prompt as sent and its token count, under the prompt box
    random_seed: gr.Button
    reuse_seed: gr.Button
    size_note: gr.Markdown

    def as_list(self) -> list:
        return [getattr(self, name) for name in FIELD_NAMES]

    def form(self) -> list:
        """Every request control, then the Resolution picker (kept in step with the sizes)."""
        return self.as_list() + [self.resolution_picker]


def updates_for(values: dict[str, Any]) -> list:
    """gr.update per request control for the keys present in ``values`` (others untouched)."""
    return [gr.update(value=values[name]) if name in values else gr.update() for name in FIELD_NAMES]


def build_controls(studio: Studio, defaults: GenerationRequest) -> Controls:
    limits = studio.config.limits
    with gr.Group():
        prompt = gr.Textbox(label="Your tags", placeholder="1girl, solo, cowboy shot, smile, hoodie, indoors",
                            lines=3, value=defaults.prompt, elem_id="prompt")
        composed = gr.Markdown(elem_id="composed", padding=True)
        with gr.Row(equal_height=True):
            aesthetic = gr.Dropdown(_choices(tags.AESTHETIC), value=defaults.aesthetic, label="Aesthetic",
                                    elem_id="aesthetic", min_width=200)
            quality = gr.Dropdown(_choices(tags.QUALITY), value=defaults.quality, label="Quality",
                                  elem_id="quality", min_width=200)
            date = gr.Dropdown([("none", tags.NONE)] + [(f"{k} ({v})", k) for k, v in tags.DATE.items()],
                               value=defaults.date, label="Date", elem_id="date", min_width=200)
        with gr.Row(equal_height=True):
            rating = gr.Dropdown(_choices(tags.RATING), value=defaults.rating, label="Rating", elem_id="rating",
                                 min_width=200)
            custom = gr.Dropdown(_choices(tags.CUSTOM), value=defaults.custom, label="Source tag",
                                 elem_id="custom", min_width=200)
            artist = gr.Textbox(label="Pixiv artist ('art by NAME')", value=defaults.artist, elem_id="artist",
                                min_width=200)
        negative_prompt = gr.Textbox(label="Negative prompt", value=defaults.negative_prompt, lines=2,
                                     elem_id="negative_prompt")
    with gr.Accordion("Size, steps, CFG and seed", open=True, elem_id="size_steps"):
        resolution = gr.Dropdown(RESOLUTIONS, value=size_to_resolution(defaults.width, defaults.height),
                                 label="Resolution", elem_id="resolution")
        with gr.Row():
            width = gr.Slider(limits.min_side, min(limits.max_side, 2560), value=defaults.width, step=128,
                              label="Width", elem_id="width")
            height = gr.Slider(limits.min_side, min(limits.max_side, 2560), value=defaults.height, step=128,
                               label="Height", elem_id="height")
        size_note = gr.Markdown(elem_id="size_note")
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
        with gr.Row(equal_height=True, elem_id="seed_row"):
            seed = gr.Number(value=defaults.seed, label=RANDOM_SEED_LABEL, minimum=-1, step=1, elem_id="seed",
                             min_width=180, scale=4)
            with gr.Column(scale=0, min_width=110, elem_classes=["seed-tools"]):
                random_seed = gr.Button("⚄ random", elem_id="random_seed", size="sm", min_width=100)
                reuse_seed = gr.Button("♻ last seed", elem_id="reuse_seed", size="sm", min_width=100)
            count = gr.Slider(1, limits.max_count, value=defaults.count, step=1, label="Images", scale=4,
                              min_width=180)
    random_seed.click(lambda: -1, None, seed, api_visibility="private", queue=False, show_progress="hidden")
    resolution.input(_resolution_to_size, resolution, [width, height, size_note], api_visibility="private",
                     queue=False, show_progress="hidden")
    # A typed size that is not a multiple of 128 snaps when the field is left; the picker follows.
    # Each handler writes only its own slider, so a stale value of the other one is never written back.
    width.release(_snap_width, [width, height], [width, resolution, size_note], api_visibility="private",
                  queue=False, show_progress="hidden")
    height.release(_snap_height, [width, height], [height, resolution, size_note], api_visibility="private",
                   queue=False, show_progress="hidden")
    return Controls(prompt, negative_prompt, aesthetic, quality, date, custom, rating, artist, width, height,
                    seed, prior_steps, prior_cfg, decoder_steps, decoder_cfg, count, resolution, composed,
                    random_seed, reuse_seed, size_note)


def _snap(key: str, value: float, width: float, height: float):
    snapped = snap_side(value or 128)
    sizes = {"width": width, "height": height, key: snapped}
    picker = size_to_resolution(sizes["width"], sizes["height"])
    if snapped == value:
        return gr.update(), picker, gr.update()
    return snapped, picker, f"{key} {value:g} snapped to {snapped} (sizes are multiples of 128)"


def _snap_width(width: float, height: float):
    return _snap("width", width, width, height)


def _snap_height(width: float, height: float):
    return _snap("height", height, width, height)


def _resolution_to_size(choice: str):
    if not choice or choice == "custom" or "x" not in choice:
        return gr.update(), gr.update(), ""
    width, height = (int(v) for v in choice.split("x"))
    return width, height, ""


def budget_line(chunks: list[int] | None) -> str:
    """The prompt's token budget in chunks: the model was trained with 3 chunks of 75 tokens."""
    if chunks is None:
        return "tokens: counted once the model is loaded"
    parts = " + ".join(str(n) for n in chunks)
    line = f"**{len(chunks)} of {TRAINED_CHUNKS} chunks** ({parts} tokens)"
    if len(chunks) > MAX_CHUNKS:
        return f"{line} ⚠️ over the limit of {MAX_CHUNKS} chunks: shorten the prompt"
    if len(chunks) > TRAINED_CHUNKS:
        return f"{line} ⚠️ past the {TRAINED_CHUNKS} chunks the model was trained with"
    return line


GALLERY_SIZE = 48  # the newest images shown


def gallery_order(state: SessionState) -> list[int]:
    """Indices of the shots shown: newest run first, each run's images in seed order."""
    shown = range(max(0, len(state.shots) - GALLERY_SIZE), len(state.shots))
    return sorted(shown, key=lambda i: (-state.shots[i].job, state.shots[i].request.seed))


def caption(request: GenerationRequest, width: int = 90) -> str:
    """The seed and the image's own prompt (with its wildcards picked)."""
    prompt = " ".join(request.prompt.split())
    prompt = prompt if len(prompt) <= width else prompt[:width - 1] + "…"
    return f"seed {request.seed} · {prompt}" if prompt else f"seed {request.seed}"


def gallery_items(state: SessionState) -> list[tuple[str, str]]:
    state.order = gallery_order(state)
    return [(state.shots[i].path, caption(state.shots[i].request)) for i in state.order]


def describe_request(request: GenerationRequest) -> str:
    return (f"seed {request.seed}, {request.width}x{request.height}, prior {request.prior_steps} steps "
            f"at CFG {request.prior_cfg:g}, decoder {request.decoder_steps} steps at CFG {request.decoder_cfg:g}")


def selected_shot(session: SessionState | None):
    if not session or not session.shots:
        raise gr.Error("no image yet: generate one first", print_exception=False)
    index = session.selected if session.selected is not None and session.selected < len(session.shots) \
        else session.order[0] if session.order else len(session.shots) - 1
    return index, session.shots[index]


PREVIEW_CHOICES = [("auto (Stability's previewer if here, else fast)", "auto"),
                   ("Stability's previewer (downloads it)", "previewer"), ("fast projection", "fast"),
                   ("off", "off")]


def keep_shots(session: SessionState, shots: list) -> None:
    """Add one job's images to the session's gallery, as one run."""
    session.jobs += 1
    for shot in shots:
        shot.job = session.jobs
    session.shots.extend(shots)
    if shots:
        session.last_seed = shots[-1].request.seed if len(shots) == 1 else shots[0].request.seed
        session.selected = None


def build_generate_tab(studio: Studio, waiting=None) -> dict[str, Any]:
    """Lay out the Generate tab inside the current Blocks; return its pieces for other tabs.

    ``waiting(session)`` counts the session's jobs still waiting in the GPU
    queue, which Stop cancels too.
    """
    defaults = GenerationRequest()
    state = gr.State(SessionState(), time_to_live=SESSION_TTL, delete_callback=_drop_session)
    with gr.Row(elem_id="generate_layout"):
        with gr.Column(scale=5, elem_id="settings_column"):
            controls = build_controls(studio, defaults)
            with gr.Accordion("Image remix: steer the composition with reference images", open=False):
                remix_images = gr.File(label=f"Up to {MAX_REFERENCES} reference images", file_count="multiple",
                                       file_types=["image"], type="filepath", elem_id="remix_images")
                remix_strengths = gr.Textbox(label=f"Strengths, 0 to {MAX_STRENGTH:g}: one for all, or one per image",
                                             placeholder="1.0  (or 1.0, 0.5)", elem_id="remix_strengths")
            with gr.Accordion("Live previews and drafts", open=False, elem_id="drafts_box"):
                preview_kind = gr.Radio(PREVIEW_CHOICES, value="auto", label="Live preview of stage C",
                                        elem_id="preview_kind")
                with gr.Row():
                    draft = gr.Button("Draft compositions (prior only)", size="sm", elem_id="draft")
                    finish = gr.Button("Finish picked drafts", size="sm", variant="primary", elem_id="finish")
                drafts_gallery = gr.Gallery(label="Drafts: one per seed (Images sets how many)", columns=4,
                                            height=220, format="png", elem_id="drafts", preview=False)
                picked = gr.CheckboxGroup([], label="Seeds to finish", elem_id="picked")
                drafts_note = gr.Markdown(elem_id="drafts_note")
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
            with gr.Accordion("Memory mode", open=False):
                mode = gr.Dropdown([(f"{m.value}: {MODE_HELP[m]}", m.value) for m in Mode],
                                   value=studio.config.mode, label="Memory mode", elem_id="mode",
                                   interactive=studio.config.mode_switch)
                device_info = gr.Markdown(elem_id="device_info")
        with gr.Column(scale=6, elem_id="output_column"):
            with gr.Row(elem_id="actions"):
                generate = gr.Button("Generate", variant="primary", elem_id="generate", scale=3)
                stop = gr.Button("Stop", variant="stop", elem_id="stop", interactive=False, scale=1)
            status = gr.Markdown(studio.status(), elem_id="status")
            live_preview = gr.Image(label="Live preview", visible=False, interactive=False, format="png",
                                    height=240, elem_id="live_preview")
            gallery = gr.Gallery(label="This session's images", columns=2, height=600, format="png",
                                 elem_id="gallery", buttons=["download", "fullscreen"], preview=False)
            with gr.Row(elem_id="gallery_actions"):
                reuse = gr.Button("Reuse settings", size="sm", elem_id="reuse_settings", min_width=100)
                to_a = gr.Button("Compare as A", size="sm", elem_id="to_compare_a", min_width=100)
                to_b = gr.Button("Compare as B", size="sm", elem_id="to_compare_b", min_width=100)
                to_info = gr.Button("PNG info", size="sm", elem_id="to_png_info", min_width=100)
                remove = gr.Button("Remove", size="sm", variant="stop", elem_id="remove_image", min_width=100)
            image_note = gr.Markdown(elem_id="image_note")
            selected_prompt = gr.Textbox(label="Prompt of the selected image", interactive=False,
                                         buttons=["copy"], elem_id="selected_prompt", lines=2)
            summary = gr.Markdown(elem_id="summary")
            with gr.Accordion("Last run, in full", open=False, elem_id="report_box"):
                report = gr.JSON(label="Last run", elem_id="report")
            job_images = gr.Gallery(visible=False, format="png", label="This job's images")

    inputs = controls.as_list()
    tag_inputs = [controls.prompt, controls.aesthetic, controls.quality, controls.date, controls.custom,
                  controls.rating, controls.artist]

    # 1. The prompt as sent, with its token count, right under the prompt box.
    def compose(prompt, aesthetic, quality, date, custom, rating, artist) -> str:
        try:
            text = tags.compose_prompt(prompt, aesthetic=aesthetic, quality=quality, date=date, custom=custom,
                                       rating=rating, artist=artist)
        except ValueError as exc:
            return f"⚠️ {exc}"
        flagged = unsupported_syntax(prompt)
        note = f"  \n⚠️ {flagged}" if flagged else ""
        return (f"{budget_line(studio.chunk_counts(text))} · sent: `{text}`{note}"
                + past_chunks_markdown(text, studio.chunk_counts))

    for component in tag_inputs:
        component.change(compose, tag_inputs, controls.composed, api_visibility="private", queue=False,
                         show_progress="hidden")

    # 2. Generate and stop. The gallery is not an output of the run, so it stays visible meanwhile.
    @named_api(after=("session",), optional=("images", "image_strengths", "preview"))
    def run(values, session, images, image_strengths, preview, request: gr.Request, progress=gr.Progress()):
        values["images"] = list(images or [])
        values["image_strengths"] = image_strengths if image_strengths not in (None, "") else None
        session = session or SessionState()
        if not studio.settled():
            progress(0, desc=f"waiting for the model: {studio.status()}")
        eta = Eta(_clock)

        def on_progress(p):
            progress((p.done, p.total), desc=f"image {p.image + 1}/{p.images} · {p.stage} step {p.step}/{p.steps}"
                                             f" · {eta.text(p.done, p.total)}")

        # The job runs in a worker; its progress and each live preview of stage C come back through a
        # queue, so the progress bar is driven from this handler and the previews are streamed as they come.
        events: queue.Queue = queue.Queue()
        outcome: dict[str, Any] = {}

        def work():
            try:
                outcome["result"] = studio.generate(
                    values, session=session_id(request), on_progress=lambda p: events.put(("progress", p)),
                    on_preview=lambda item: events.put(("preview", item)), preview=preview or "auto")
            except Exception as exc:  # handed to the handler below
                outcome["error"] = exc
            finally:
                events.put(None)

        worker = threading.Thread(target=work, name="sote-job", daemon=True)
        worker.start()
        while (event := events.get()) is not None:
            kind, item = event
            if kind == "progress":
                on_progress(item)
                continue
            label = f"Live preview: image {item.index + 1}, stage C step {item.step}/{item.steps}"
            yield (*[gr.update()] * (len(run_outputs) - 1), gr.update(value=item.image, label=label, visible=True))
        worker.join()
        if "error" in outcome:
            raise user_error(outcome["error"])
        shots, info = outcome["result"]
        keep_shots(session, shots)
        info["files"] = [shot.path for shot in shots]
        info["parameters"] = [shot.parameters for shot in shots]
        line = run_summary(info, studio.device_word())
        message = line if info.get("stopped") else studio.status()
        images = [(shot.path, caption(shot.request)) for shot in shots]
        yield images, line, info, session, message, gr.update(value=None, visible=False)

    run_inputs = inputs + [state, remix_images, remix_strengths, preview_kind]
    run_outputs = [job_images, summary, report, state, status, live_preview]

    def running():
        return gr.update(value="Stop", interactive=True), gr.update(value="Generating…"), ""

    def finished(session: SessionState | None):
        session = session or SessionState()
        seed_label = RANDOM_SEED_LABEL
        if session.last_seed is not None:
            seed_label += f" · last run: {session.last_seed}"
        return (gallery_items(session), gr.update(value="Stop", interactive=False), gr.update(value="Generate"),
                gr.update(label=seed_label))

    def chain(trigger):
        start = trigger(running, None, [stop, generate, status], api_visibility="private", queue=False,
                        show_progress="hidden")
        job = start.then(page_action(run, len(run_outputs), 4), run_inputs, run_outputs, api_visibility="private",
                         concurrency_id="gpu", show_progress_on=[status])
        job.then(finished, state, [gallery, stop, generate, controls.seed], api_visibility="private",
                 queue=False, show_progress="hidden")
        return job

    gen_event = chain(generate.click)
    submit_event = chain(controls.prompt.submit)
    # The API endpoint: the same function, raising errors to the client.
    api_event = gr.Button(visible=False).click(run, run_inputs, run_outputs, api_name="generate",
                                               concurrency_id="gpu")

    def stop_job(request: gr.Request) -> str:
        sid = session_id(request)
        stopped = studio.stop(sid, waiting=waiting(sid) if waiting else 0)
        return "stopping after the current step" if stopped else "nothing is running"

    def stop_in_page(request: gr.Request):
        # The button, not the status line, acknowledges: the run's own reply writes the status line, and
        # this reply may arrive after it.
        stop_job(request)
        return gr.update(value="Stopping…", interactive=False)

    stop.click(stop_in_page, None, stop, api_visibility="private", queue=False, show_progress="hidden")
    stop_reply = gr.Textbox(visible=False, label="Stop")
    gr.Button(visible=False).click(stop_job, None, stop_reply, api_name="stop", queue=False)

    # Drafts: the prior only, one per seed; finishing the picked ones runs only their decoders.
    @named_api(after=("session",), optional=("images", "image_strengths", "preview"))
    def make_drafts(values, session, images, image_strengths, preview, request: gr.Request,
                    progress=gr.Progress()):
        values["images"] = list(images or [])
        values["image_strengths"] = image_strengths if image_strengths not in (None, "") else None
        session = session or SessionState()

        def on_progress(p):
            progress((p.done, p.total), desc=f"draft {p.image + 1}/{p.images} · prior step {p.step}/{p.steps}")

        try:
            drafts, info = studio.draft(values, session=session_id(request), on_progress=on_progress,
                                        preview=preview or "auto")
        except Exception as exc:
            raise user_error(exc) from None
        session.draft_values = {**values, "seed": drafts[0][1] if drafts else values.get("seed")}
        seeds = [seed for _, seed in drafts]
        note = (f"{len(drafts)} drafts in {info['seconds']:.1f} s, no decoder step run: tick the seeds to finish, "
                "then Finish picked drafts")
        return [(path, f"seed {seed}") for path, seed in drafts], gr.update(choices=seeds, value=[]), note, session

    draft_outputs = [drafts_gallery, picked, drafts_note, state]
    wire(draft.click, make_drafts, run_inputs, draft_outputs, api_name="draft", note=2, concurrency_id="gpu")

    def finish_drafts(seeds, session: SessionState, request: gr.Request, progress=gr.Progress()):
        if not session or not session.draft_values:
            raise gr.Error("make drafts first", print_exception=False)
        if not seeds:
            raise gr.Error("tick the seeds of the drafts to finish first", print_exception=False)
        try:
            shots, info = studio.generate(session.draft_values, session=session_id(request), seeds=list(seeds),
                                          on_progress=lambda p: progress((p.done, p.total),
                                                                         desc=f"decoder step {p.step}/{p.steps}"))
        except Exception as exc:
            raise user_error(exc) from None
        keep_shots(session, shots)
        reused = sum(shot.prior_reused for shot in shots)
        note = f"finished {len(shots)} drafts in {info['seconds']:.1f} s ({reused} reused their prior)"
        return gallery_items(session), note, session

    wire(finish.click, finish_drafts, [picked, state], [gallery, drafts_note, state],
         note=1, concurrency_id="gpu")

    def reuse_last(session: SessionState):
        if not session or session.last_seed is None:
            raise gr.Error("no seed yet: generate an image first", print_exception=False)
        return session.last_seed, f"seed {session.last_seed} of the last run is back in the seed box"

    wire(controls.reuse_seed.click, reuse_last, state, [controls.seed, status], note=1)

    def select(session: SessionState, evt: gr.SelectData):
        if session and session.order and evt.index is not None and evt.index < len(session.order):
            session.selected = session.order[evt.index]
            shot = session.shots[session.selected]
            return session, shot.request.composed_prompt(), f"selected: {describe_request(shot.request)}"
        return session, gr.update(), gr.update()

    gallery.select(select, state, [state, selected_prompt, image_note], api_visibility="private",
                   show_progress="hidden")

    def reuse_settings(session: SessionState):
        _, shot = selected_shot(session)
        updates, notes = form_updates(shot.request.to_dict())
        message = f"applied the settings of {describe_request(shot.request)}"
        return (*updates, " · ".join([message] + notes))

    wire(reuse.click, reuse_settings, state, controls.form() + [image_note], note=len(controls.form()))

    def remove_selected(session: SessionState):
        index, shot = selected_shot(session)
        del session.shots[index]
        session.selected = None
        return (session, gallery_items(session),
                f"removed seed {shot.request.seed} from this session's gallery (the file stays in the outputs "
                "folder)", "")

    wire(remove.click, remove_selected, state, [state, gallery, image_note, selected_prompt], note=2)

    # 3. Presets: shipped ones read-only, user ones saved to their own folder.
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

    wire(load_preset.click, apply_preset, preset, controls.form() + [preset_status], api_name="load_preset",
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

    save_event = wire(save_preset.click, save, [preset_name] + inputs + [overwrite], [preset, preset_status],
                      api_name="save_preset", note=1)

    def delete(name):
        try:
            studio.presets.delete(name)
        except Exception as exc:
            raise user_error(exc) from None
        return refreshed(None), f"deleted preset {name}"

    delete_event = wire(delete_preset.click, delete, preset, [preset, preset_status], api_name="delete_preset",
                        note=1)

    # 4. Memory mode: switching frees the old mode's memory; no restart. Modes this device can't run are
    # listed once with their reason, and the picker offers only the others.
    def device_markdown() -> str:
        report = studio.device_report()
        lines = [f"**Device:** {report['device']}  \n**Mode:** {report['mode']}"]
        if report.get("reason"):
            lines.append(f"  \n{report['reason']}")
        usable = [(m, need) for m, need, note in report["modes"] if not note]
        refused: dict[str, list[str]] = {}
        for m, _need, note in report["modes"]:
            if note:  # reasons name their mode ("offload-fp8 moves models..."): group by the rest
                reason = note[len(m):].strip() if note.startswith(m) else note
                refused.setdefault(reason, []).append(f"`{m}`")
        if usable:
            lines.append("\n\n| mode | needs at 1024x1536 |\n|---|---|")
            lines += [f"| `{m}` | {need} |" for m, need in usable]
        if refused:
            lines.append("\n\n*Not on this device:*")
            lines += [f"\n- {', '.join(modes)}: {reason}" for reason, modes in refused.items()]
        return "".join(lines[:2]) + "\n".join(lines[2:])

    def mode_choices():
        report = studio.device_report()
        usable = {m for m, _need, note in report["modes"] if not note} if report["modes"] else None
        current = report["mode"] if report["mode"] not in ("not loaded", "not detected yet") else studio.config.mode
        choices = [(f"{m.value}: {MODE_HELP[m]}", m.value) for m in Mode
                   if usable is None or m.value in usable or m == Mode.AUTO or m.value == current]
        return gr.update(choices=choices, value=current)

    def switch_mode(new_mode: str, progress=gr.Progress()):
        progress(0, desc=f"switching to {new_mode}")
        try:
            studio.set_mode(new_mode)
        except Exception as exc:
            raise user_error(exc) from None
        return device_markdown(), studio.status()

    def switch_mode_in_page(new_mode: str, progress=gr.Progress()):
        """As /set_mode, but a refused mode puts the picker back on the mode the engine is in."""
        try:
            return (*switch_mode(new_mode, progress), mode_choices())
        except gr.Error as exc:
            gr.Warning(exc.message)
            return device_markdown(), f"⚠️ {exc.message}", mode_choices()

    mode.input(switch_mode_in_page, mode, [device_info, status, mode], api_visibility="private",
               concurrency_id="gpu")
    gr.Button(visible=False).click(switch_mode, mode, [device_info, status], api_name="set_mode",
                                   concurrency_id="gpu")

    # 5. Tag suggestions, keyboard habits and the prompt history.
    tools = attach_prompt_tools(studio, inputs, [gen_event, submit_event, api_event])

    return {
        "controls": controls,
        "inputs": inputs,
        "form": controls.form(),
        "state": state,
        "status": status,
        "composed": controls.composed,
        "device_info": device_info,
        "device_markdown": device_markdown,
        "mode": mode,
        "mode_choices": mode_choices,
        "generate_button": generate,
        "compose": compose,
        "tag_inputs": tag_inputs,
        "preset": preset,
        "preset_status": preset_status,
        "gen_event": gen_event,
        "save_event": save_event,
        "delete_event": delete_event,
        "to_a": to_a,
        "to_b": to_b,
        "to_info": to_info,
        "image_note": image_note,
        "selected_shot": selected_shot,
        "stop_job": stop_job,
        **tools,
    }


SESSION_TTL = 24 * 3600  # a session's images list is dropped a day after its last change at the latest


def _drop_session(session: SessionState | None) -> None:
    if session is not None:
        session.shots.clear()
        session.order.clear()


def _clock() -> float:
    import time

    return time.monotonic()


__all__ = ["Controls", "build_generate_tab", "named_api", "updates_for", "values_of"]
