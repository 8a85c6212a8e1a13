"""The Generate tab: the request's controls (with image to image and the hi-res fix), remix, drafts, presets
and memory mode on the left; Generate, Stop, Skip, Stop and finish and the session's gallery (led by the live
preview while a run goes, with "Send to image-to-image" under it) on the right; the prompt history below.

Each piece is built and wired in the module named after it; this module lays
them out and hands the other tabs one typed :class:`GenerateTab`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import gradio as gr

from ...core.request import GenerationRequest
from ...service.studio import Studio
from ..session import SessionState
from ..wiring import wire
from .controls import Controls, build_controls
from .drafts import build_drafts_box, wire_drafts
from .fixer_box import FixerBox, build_fixer_box, wire_fixer_box
from .gallery import SESSION_TTL, Gallery, build_gallery, drop_session, selected_shot, wire_gallery, wire_redecode
from .history_panel import HistoryPanel
from .img2img_box import sent_to_panel
from .memory_box import MemoryBox, build_memory_box, device_markdown, mode_choices, wire_memory_box
from .persist import attach_persistence
from .presets_box import PresetEvents, PresetsBox, build_presets_box, wire_presets_box
from .prompt_box import tag_inputs, wire_prompt_box
from .prompt_tools import attach_prompt_tools
from .remix_box import build_remix_box, wire_remix
from .run import RunEvents, RunInputs, RunPanel, build_actions, wire_run


@dataclass
class GenerateTab:
    """What the other tabs use of the Generate tab."""

    studio: Studio
    controls: Controls
    state: gr.State  # the session's SessionState
    run: RunPanel
    gallery: Gallery
    presets: PresetsBox
    preset_events: PresetEvents
    memory: MemoryBox
    events: RunEvents
    history: HistoryPanel
    compose: Callable[..., str]  # the line under the prompt box, from the tag controls
    fixer: FixerBox | None = None  # the prompt fixer under the prompt box
    to_img2img: gr.Button | None = None  # under the gallery: the selected image becomes the start image

    def send_to_img2img(self, path: str, what: str) -> tuple:
        """Updates of :attr:`img2img_outputs` that make ``path`` the start image (``what`` names it)."""
        return sent_to_panel(path, what)

    @property
    def img2img_outputs(self) -> list:
        """What sending an image to image to image writes: the start image, its accordion, the panel's note."""
        box = self.controls.img2img
        return [box.init_image, box.accordion, box.note]

    @property
    def inputs(self) -> list:
        """The request controls, in the request's field order."""
        return self.controls.as_list()

    @property
    def form(self) -> list:
        """The request controls and then the Resolution picker (what ``form_updates`` writes)."""
        return self.controls.form()

    @property
    def tag_inputs(self) -> list:
        return tag_inputs(self.controls)

    @property
    def status(self) -> gr.Markdown:
        return self.run.status

    @property
    def image_note(self) -> gr.Markdown:
        return self.gallery.image_note

    def device_markdown(self) -> str:
        return device_markdown(self.studio)

    def mode_choices(self):
        return mode_choices(self.studio)

    def stop_job(self, request: gr.Request) -> str:
        return self.events.stop_job(request)

    @staticmethod
    def selected_shot(session: SessionState | None):
        """``(index, shot)`` of the gallery's selected image (its first one when none is)."""
        return selected_shot(session)


def build_generate_tab(studio: Studio, waiting: Callable[[str], int] | None = None,
                       page: gr.Blocks | None = None) -> GenerateTab:
    """Lay out the Generate tab inside the current Blocks and wire it.

    ``waiting(session)`` counts the session's jobs still waiting in the GPU
    queue, which Stop cancels too. With ``page`` (the whole app's Blocks), the
    form and the browser's images come back when the page is reloaded.
    """
    defaults = GenerationRequest()
    state = gr.State(SessionState(), time_to_live=SESSION_TTL, delete_callback=drop_session)
    fixer = build_fixer_box()
    with gr.Row(elem_id="generate_layout"):
        with gr.Column(scale=5, elem_id="settings_column"):
            history_opener = gr.Button("🕘 Prompt history", size="sm", elem_id="open_history", render=False)

            def under_prompt():
                fixer.render()
                history_opener.render()

            controls = build_controls(studio, defaults, under_prompt=under_prompt)
            remix = build_remix_box()
            drafts = build_drafts_box()
            presets = build_presets_box(studio)
            memory = build_memory_box(studio)
        with gr.Column(scale=6, elem_id="output_column"):
            actions = build_actions()
            status = gr.Markdown(studio.status(), elem_id="status")
            # Only /generate's stream of previews: on the page the live preview leads the gallery.
            live_preview = gr.Image(label="Live preview", visible=False, interactive=False, format="png",
                                    elem_id="live_preview")
            gallery = build_gallery()
            to_img2img = gr.Button("Send to image-to-image", size="sm", elem_id="to_img2img")
            to_inpaint = gr.Button("Send to inpaint", size="sm", elem_id="to_inpaint")
            summary = gr.Markdown(elem_id="summary")
            with gr.Accordion("Last run, in full", open=False, elem_id="report_box"):
                report = gr.JSON(label="Last run", elem_id="report")
            job_images = gr.Gallery(visible=False, format="png", label="This job's images")
    panel = RunPanel(actions.generate, actions.stop, status, live_preview, summary, report, job_images, actions.skip,
                     actions.finish)
    inputs = RunInputs(state, remix.files, remix.strengths_text, drafts.preview_kind)
    wire_remix(studio, remix)

    compose = wire_prompt_box(studio, controls)
    wire_fixer_box(studio, fixer, tag_inputs(controls))
    events = wire_run(studio, controls, inputs, panel, gallery, waiting)
    wire_drafts(studio, drafts, inputs.after(controls), state, gallery, [panel.status, panel.summary])
    wire_gallery(gallery, controls, state, status)

    def send_selected(session):
        _, shot = selected_shot(session)
        return (*sent_to_panel(shot.path, f"seed {shot.request.seed}"),
                f"seed {shot.request.seed} is the start image of image to image")

    box = controls.img2img
    wire(to_img2img.click, send_selected, state, [box.init_image, box.accordion, box.note, gallery.image_note],
         note=3)
    wire_redecode(studio, gallery, state, status)

    def send_to_inpaint(session):
        _, shot = selected_shot(session)
        what = f"seed {shot.request.seed}"
        return (shot.path, gr.Accordion(open=True), f"{what} is the picture to repaint: paint the mask over it",
                f"{what} is the start image of inpainting")

    wire(to_inpaint.click, send_to_inpaint, state,
         [box.init_image, controls.inpaint.accordion, controls.inpaint.note, gallery.image_note], note=3)
    preset_events = wire_presets_box(studio, presets, controls)
    wire_memory_box(studio, memory, status)
    # Tag suggestions, keyboard habits and the prompt history (below the tab's two columns).
    history = attach_prompt_tools(studio, controls.as_list(), [events.button, events.submit, events.api],
                                  history_opener)
    if page is not None:
        attach_persistence(studio, page, controls, state, gallery, status)
    return GenerateTab(studio, controls, state, panel, gallery, presets, preset_events, memory, events, history,
                       compose, fixer, to_img2img)


__all__ = ["GenerateTab", "build_generate_tab"]
