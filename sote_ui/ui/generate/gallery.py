"""The session's gallery: its order, captions, the selected image, and the actions on it."""

from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from ...core import loras
from ...core.request import GenerationRequest
from ..form import form_updates
from ..session import SessionState
from ..wiring import wire
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
    return Gallery(gallery, reuse, to_a, to_b, to_info, remove, image_note, selected_prompt)


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
