"""Live previews and drafts: prior-only compositions, one per seed; finishing the picked ones runs only their decoders."""

from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from ...service.studio import Studio
from ..session import SessionState
from ..wiring import named_api, session_id, user_error, wire
from .gallery import Gallery, keep_shots, shown

PREVIEW_CHOICES = [("auto (Stability's previewer if here, else fast)", "auto"),
                   ("Stability's previewer (downloads it)", "previewer"), ("fast projection", "fast"),
                   ("off", "off")]


@dataclass
class DraftsBox:
    preview_kind: gr.Radio
    draft: gr.Button
    finish: gr.Button
    gallery: gr.Gallery
    picked: gr.CheckboxGroup
    note: gr.Markdown


def build_drafts_box() -> DraftsBox:
    with gr.Accordion("Live previews and drafts", open=False, elem_id="drafts_box"):
        preview_kind = gr.Radio(PREVIEW_CHOICES, value="auto", label="Live preview of stage C",
                                elem_id="preview_kind")
        with gr.Row():
            draft = gr.Button("Draft compositions (prior only)", size="sm", elem_id="draft")
            finish = gr.Button("Finish picked drafts", size="sm", variant="primary", elem_id="finish")
        drafts_gallery = gr.Gallery(label="Drafts: one per seed (click one to pick it, again to unpick it)", columns=4,
                                    object_fit="contain", height=220, format="png", elem_id="drafts", preview=False,
                                    allow_preview=False)
        picked = gr.CheckboxGroup([], label="Seeds to finish", elem_id="picked")
        drafts_note = gr.Markdown(elem_id="drafts_note")
    return DraftsBox(preview_kind, draft, finish, drafts_gallery, picked, drafts_note)


def wire_drafts(studio: Studio, box: DraftsBox, run_inputs: list, state: gr.State, gallery: Gallery,
                lines: list) -> None:
    """Draft (button and ``/draft``, same inputs as ``/generate``) and Finish picked drafts.

    ``lines`` (the status line and the run summary) are rewritten with each outcome, so neither
    keeps telling of an earlier run.
    """

    def rewrite(note: str):
        return (note,) * len(lines)

    @named_api(after=("session",), optional=("images", "image_strengths", "preview"))
    def make_drafts(values, session, images, image_strengths, preview, request: gr.Request,
                    progress=gr.Progress()):
        values["images"] = list(images or [])
        values["image_strengths"] = image_strengths if image_strengths not in (None, "") else None
        session = session or SessionState()
        try:
            studio.check_uploads(values["images"])  # a file that is no image goes from the upload cache at once
        except Exception as exc:
            raise user_error(exc) from None

        def on_progress(p):
            progress((p.done, p.total), desc=f"draft {p.image + 1}/{p.images} · prior step {p.step}/{p.steps}")

        try:
            drafts, info = studio.draft(values, session=session_id(request), on_progress=on_progress,
                                        preview=preview or "auto")
        except Exception as exc:
            raise user_error(exc) from None
        session.draft_values = {**values, "seed": drafts[0][1] if drafts else values.get("seed")}
        seeds = [seed for _, seed in drafts]
        session.draft_seeds = seeds
        note = (f"{len(drafts)} drafts in {info['seconds']:.1f} s, no decoder step run: tick the seeds to finish, "
                "then Finish picked drafts")
        return [(path, f"seed {seed}") for path, seed in drafts], gr.update(choices=seeds, value=[]), note, session

    draft_outputs = [box.gallery, box.picked, box.note, state]
    drafted = wire(box.draft.click, make_drafts, run_inputs, draft_outputs, api_name="draft", note=2,
                   concurrency_id="gpu")
    drafted.then(rewrite, box.note, lines, api_visibility="private", queue=False, show_progress="hidden")

    def toggle_pick(picked, session: SessionState, event: gr.SelectData):
        seeds = session.draft_seeds if session else []
        if event.index is None or not 0 <= event.index < len(seeds):
            return gr.update()
        seed, picked = seeds[event.index], list(picked or [])
        return [s for s in picked if s != seed] if seed in picked else picked + [seed]

    box.gallery.select(toggle_pick, [box.picked, state], box.picked, api_visibility="private", queue=False,
                       show_progress="hidden")

    def finish_drafts(seeds, session: SessionState, request: gr.Request, progress=gr.Progress()):
        if not session or not session.draft_values:
            raise gr.Error("make drafts first", print_exception=False)
        if not seeds:
            raise gr.Error("tick the seeds of the drafts to finish first", print_exception=False)
        if any(seed not in session.draft_seeds for seed in seeds):
            raise gr.Error("only the seeds of this page's last drafts can be finished", print_exception=False)
        try:
            shots, info = studio.generate(session.draft_values, session=session_id(request), seeds=list(seeds),
                                          on_progress=lambda p: progress((p.done, p.total),
                                                                         desc=f"decoder step {p.step}/{p.steps}"))
        except Exception as exc:
            raise user_error(exc) from None
        keep_shots(session, shots)
        reused = sum(shot.prior_reused for shot in shots)
        note = f"finished {len(shots)} drafts in {info['seconds']:.1f} s ({reused} reused their prior)"
        return (*shown(session), note, session)

    finished = wire(box.finish.click, finish_drafts, [box.picked, state],
                    [gallery.gallery, gallery.selected_prompt, gallery.image_note, box.note, state], note=3,
                    concurrency_id="gpu")
    finished.then(rewrite, box.note, lines, api_visibility="private", queue=False, show_progress="hidden")

