"""The session's gallery: its order, captions, the selected image, and the actions on it (among them
Re-decode: a new version of the selected image from its stored composition, the decoder alone)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import gradio as gr

from ...core import loras
from ...core.errors import InputError
from ...core.request import GenerationRequest
from ...service.studio import Studio
from ..form import form_updates
from ..session import SessionState
from ..wiring import session_id, user_error, wire
from .controls import Controls

SESSION_TTL = 24 * 3600  # a session's images list is dropped a day after its last change at the latest
GALLERY_SIZE = 48  # the newest images shown


def gallery_order(state: SessionState) -> list[int]:
    """Indices of the shots shown: newest run first, each run's images in seed order."""
    shown = range(max(0, len(state.shots) - GALLERY_SIZE), len(state.shots))
    return sorted(shown, key=lambda i: (-state.shots[i].job, state.shots[i].request.seed))


def caption(request: GenerationRequest, width: int = 90) -> str:
    """The seed and the image's own prompt (with its wildcards picked)."""
    prompt = " ".join(request.prompt.split())
    prompt = ", ".join([prompt] * bool(prompt) + [loras.tag_text(ref) for ref in request.loras])  # picker's LoRAs
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


def keep_shots(session: SessionState, shots: list) -> None:
    """Add one job's images to the session's gallery, as one run."""
    session.jobs += 1
    for shot in shots:
        shot.job = session.jobs
    session.shots.extend(shots)
    if shots:
        session.last_seed = shots[-1].request.seed if len(shots) == 1 else shots[0].request.seed
        # The run's first image (lowest seed) is selected, so every action acts on what the page shows.
        new = range(len(session.shots) - len(shots), len(session.shots))
        session.selected = min(new, key=lambda i: session.shots[i].request.seed)


def shown(session: SessionState) -> tuple:
    """The gallery with the session's selected image selected, that image's prompt, and the line about it."""
    items = gallery_items(session)
    if session.selected is None or session.selected not in session.order:
        return gr.Gallery(value=items, selected_index=None), "", gr.update()
    shot = session.shots[session.selected]
    return (gr.Gallery(value=items, selected_index=session.order.index(session.selected)),
            shot.request.composed_prompt(), f"selected: {describe_request(shot.request)}")


def drop_session(session: SessionState | None) -> None:
    """Free a closed session's gallery (gr.State's delete callback)."""
    if session is not None:
        session.shots.clear()
        session.order.clear()


@dataclass
class Redecode:
    """Re-decode the selected image: its decoder seed, steps and CFG, and the button."""

    seed: gr.Textbox
    steps: gr.Textbox
    cfg: gr.Textbox
    button: gr.Button


@dataclass
class Gallery:
    """The gallery, its action buttons and the lines about the selected image."""

    gallery: gr.Gallery
    reuse: gr.Button
    to_a: gr.Button
    to_b: gr.Button
    to_info: gr.Button
    remove: gr.Button
    image_note: gr.Markdown
    selected_prompt: gr.Textbox
    redecode: Redecode | None = None


def build_gallery() -> Gallery:
    """The gallery and its actions, laid out where it is called."""
    gallery = gr.Gallery(label="This session's images", columns=2, height=600, format="png", object_fit="contain",
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
    with gr.Accordion("Re-decode the selected image: same composition, new details", open=False,
                      elem_id="redecode_box"):
        with gr.Row():
            # Text boxes, as an empty number box reaches the server as 0: empty here is "the image's own".
            seed = gr.Textbox("-1", label="Decoder seed (-1: random, empty: the image's own)", elem_id="redecode_seed",
                              min_width=120)
            steps = gr.Textbox("", label="Decoder steps (empty: the image's)", elem_id="redecode_steps",
                               min_width=120)
            cfg = gr.Textbox("", label="Decoder CFG (empty: the image's)", elem_id="redecode_cfg", min_width=120)
        redecode = gr.Button("Re-decode", size="sm", elem_id="redecode", min_width=100)
    return Gallery(gallery, reuse, to_a, to_b, to_info, remove, image_note, selected_prompt,
                   Redecode(seed, steps, cfg, redecode))


def typed_number(text, label: str, whole: bool) -> int | float | None:
    """A number typed into a text box ('' is None), or a one-line InputError naming the box."""
    text = str(text if text is not None else "").strip()
    if not text:
        return None
    try:
        value = float(text)
        if not math.isfinite(value) or (whole and value != int(value)):
            raise ValueError
    except ValueError:
        kind = "a whole number" if whole else "a number"
        raise InputError(f"{label} must be {kind} or empty, got {text[:20]!r}") from None
    return int(value) if whole else value


def redecoded_line(report: dict) -> str:
    """The status line after a re-decode."""
    noise = "its own decoder noise" if report["decoder_seed"] is None else f"decoder seed {report['decoder_seed']}"
    return (f"re-decoded seed {report['seed']} with {noise}: {report['decoder_steps_run']} decoder steps at CFG "
            f"{report['decoder_cfg']:g} in {report['seconds']:.1f} s; the prior did not run again")


def wire_redecode(studio: Studio, box: Gallery, state: gr.State, status) -> None:
    """Re-decode on the page (the selected image joins the gallery, selected) and as ``/redecode``.

    ``/redecode`` takes the PNG (``handle_file(path)``: an image this app
    saved, found by its name), ``decoder_seed`` (None: the image's own noise,
    -1: random), ``decoder_steps`` and ``decoder_cfg`` (None: the image's);
    it returns the new PNG and a report (``decoder_seed``, ``prior_runs``: 0).
    """
    controls = box.redecode

    def on_page(session: SessionState, seed, steps, cfg, request: gr.Request):
        _, shot = selected_shot(session)
        values = (typed_number(seed, "decoder seed", True), typed_number(steps, "decoder steps", True),
                  typed_number(cfg, "decoder CFG", False))
        new, report = studio.redecode(shot.path, *values, session_id(request))
        keep_shots(session, [new])
        gallery, prompt, note = shown(session)
        return session, gallery, prompt, note, redecoded_line(report)

    wire(controls.button.click, on_page, [state, controls.seed, controls.steps, controls.cfg],
         [state, box.gallery, box.selected_prompt, box.image_note, status], note=4, concurrency_id="gpu",
         show_progress_on=[status])

    def redecode(image, decoder_seed=None, decoder_steps=None, decoder_cfg=None, request: gr.Request = None):
        try:
            shot, report = studio.redecode(image, decoder_seed, decoder_steps, decoder_cfg, session_id(request))
        except Exception as exc:
            raise user_error(exc) from None
        return shot.path, report

    with gr.Row(visible=False):
        image = gr.File(label="image", file_types=[".png"])
        seed = gr.Number(None, label="decoder_seed", precision=0)
        steps = gr.Number(None, label="decoder_steps", precision=0)
        cfg = gr.Number(None, label="decoder_cfg")
        result = gr.File(label="redecoded")
        report = gr.JSON(label="report")
    gr.Button(visible=False).click(redecode, [image, seed, steps, cfg], [result, report], api_name="redecode",
                                   concurrency_id="gpu")


def wire_gallery(box: Gallery, controls: Controls, state: gr.State, status) -> None:
    """Select, reuse settings, remove, and bring back the last seed."""

    def reuse_last(session: SessionState):
        if not session or session.last_seed is None:
            raise gr.Error("no seed yet: generate an image first", print_exception=False)
        return session.last_seed, f"seed {session.last_seed} of the last run is back in the seed box"

    wire(controls.reuse_seed.click, reuse_last, state, [controls.seed, status], note=1)

    def select(session: SessionState, evt: gr.SelectData):
        index = None if evt.index is None else evt.index - (1 if session and session.previewing else 0)
        if session and session.order and index is not None and 0 <= index < len(session.order):
            session.selected = session.order[index]
            shot = session.shots[session.selected]
            return session, shot.request.composed_prompt(), f"selected: {describe_request(shot.request)}"
        return session, gr.update(), gr.update()

    box.gallery.select(select, state, [state, box.selected_prompt, box.image_note], api_visibility="private",
                       show_progress="hidden")

    def reuse_settings(session: SessionState):
        _, shot = selected_shot(session)
        updates, notes = form_updates(shot.request.to_dict())
        message = f"applied the settings of {describe_request(shot.request)}"
        return (*updates, " · ".join([message] + notes))

    wire(box.reuse.click, reuse_settings, state, controls.form() + [box.image_note], note=len(controls.form()))

    def remove_selected(session: SessionState):
        index, shot = selected_shot(session)
        del session.shots[index]
        session.selected = None
        return (session, gallery_items(session),
                f"removed seed {shot.request.seed} from this session's gallery (the file stays in the outputs "
                "folder)", "")

    wire(box.remove.click, remove_selected, state, [state, box.gallery, box.image_note, box.selected_prompt],
         note=2)
