"""Generate and Stop: the run handler, its streaming of progress and live previews, and the events around it.

The job runs in a worker thread; its progress and each live preview of stage
C come back through a queue (:func:`stream_job`), so the progress bar is
driven from the handler and the previews are streamed as they come. The
gallery is not an output of the run, so it stays visible meanwhile.
"""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import gradio as gr

from ...service.studio import Studio
from ..session import SessionState
from ..summaries import Eta, run_summary
from ..wiring import named_api, page_action, session_id, user_error
from .controls import RANDOM_SEED_LABEL, Controls
from .gallery import Gallery, caption, keep_shots, shown


@dataclass
class RunPanel:
    """What the run writes: the buttons, the status line, the live preview and the last run's summary."""

    generate: gr.Button
    stop: gr.Button
    status: gr.Markdown
    live_preview: gr.Image
    summary: gr.Markdown
    report: gr.JSON
    job_images: gr.Gallery  # hidden: /generate's images of this job alone


@dataclass
class RunInputs:
    """Where the run's values come from, besides the request controls."""

    state: gr.State
    remix_images: gr.File
    remix_strengths: gr.Textbox
    preview_kind: gr.Radio

    def after(self, controls: Controls) -> list:
        """Every input of ``/generate`` and ``/draft``, in their order."""
        return controls.as_list() + [self.state, self.remix_images, self.remix_strengths, self.preview_kind]


@dataclass
class RunEvents:
    """The events that generate (the history records their prompts) and the Stop function other tabs share."""

    button: object
    submit: object
    api: object
    stop_job: Callable


def build_actions() -> tuple[gr.Button, gr.Button]:
    with gr.Row(elem_id="actions"):
        generate = gr.Button("Generate", variant="primary", elem_id="generate", scale=3)
        stop = gr.Button("Stop", variant="stop", elem_id="stop", interactive=False, scale=1)
    return generate, stop


def stream_job(work: Callable[[Callable, Callable], Any], on_progress: Callable) -> Iterator[Any]:
    """Run ``work(progress, preview)`` in a worker; call ``on_progress`` here and yield each preview as it comes.

    Returns (as the generator's value) what ``work`` returned; re-raises what it raised.
    """
    events: queue.Queue = queue.Queue()
    outcome: dict[str, Any] = {}

    def worker():
        try:
            outcome["result"] = work(lambda p: events.put(("progress", p)), lambda item: events.put(("preview", item)))
        except Exception as exc:  # handed to the handler
            outcome["error"] = exc
        finally:
            events.put(None)

    thread = threading.Thread(target=worker, name="sote-job", daemon=True)
    thread.start()
    while (event := events.get()) is not None:
        kind, item = event
        if kind == "progress":
            on_progress(item)
        else:
            yield item
    thread.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["result"]


def wire_run(studio: Studio, controls: Controls, inputs: RunInputs, panel: RunPanel, gallery: Gallery,
             waiting: Callable[[str], int] | None) -> RunEvents:
    """Generate (button, Enter in the prompt box, ``/generate``) and Stop (button, ``/stop``).

    ``waiting(session)`` counts the session's jobs still waiting in the GPU
    queue, which Stop cancels too.
    """

    @named_api(after=("session",), optional=("images", "image_strengths", "preview"))
    def run(values, session, images, image_strengths, preview, request: gr.Request, progress=gr.Progress()):
        values["images"] = list(images or [])
        values["image_strengths"] = image_strengths if image_strengths not in (None, "") else None
        session = session or SessionState()
        try:
            studio.check_uploads(values["images"])  # a file that is no image goes from the upload cache at once
        except Exception as exc:
            raise user_error(exc) from None
        if not studio.settled():
            progress(0, desc=f"waiting for the model: {studio.status()}")
        eta = Eta(time.monotonic)

        def on_progress(p):
            progress((p.done, p.total), desc=f"image {p.image + 1}/{p.images} · {p.stage} step {p.step}/{p.steps}"
                                             f" · {eta.text(p.done, p.total)}")

        def work(report_progress, report_preview):
            return studio.generate(values, session=session_id(request), on_progress=report_progress,
                                   on_preview=report_preview, preview=preview or "auto")

        job = stream_job(work, on_progress)
        try:
            while True:
                item = next(job)
                label = f"Live preview: image {item.index + 1}, stage C step {item.step}/{item.steps}"
                yield (*[gr.update()] * (len(run_outputs) - 1),
                       gr.update(value=item.image, label=label, visible=True))
        except StopIteration as done:
            shots, info = done.value
        except Exception as exc:
            raise user_error(exc) from None
        keep_shots(session, shots)
        info["files"] = [shot.path for shot in shots]
        info["parameters"] = [shot.parameters for shot in shots]
        line = run_summary(info, studio.device_word())
        message = line if info.get("stopped") else studio.status()
        images = [(shot.path, caption(shot.request)) for shot in shots]
        yield images, line, info, session, message, gr.update(value=None, visible=False)

    run_inputs = inputs.after(controls)
    run_outputs = [panel.job_images, panel.summary, panel.report, inputs.state, panel.status, panel.live_preview]

    def running():
        return gr.update(value="Stop", interactive=True), gr.update(value="Generating…"), ""

    def finished(session: SessionState | None):
        session = session or SessionState()
        seed_label = RANDOM_SEED_LABEL
        if session.last_seed is not None:
            seed_label += f" · last run: {session.last_seed}"
        return (*shown(session), gr.update(value="Stop", interactive=False), gr.update(value="Generate"),
                gr.update(label=seed_label))

    def chain(trigger):
        start = trigger(running, None, [panel.stop, panel.generate, panel.status], api_visibility="private",
                        queue=False, show_progress="hidden")
        job = start.then(page_action(run, len(run_outputs), 4), run_inputs, run_outputs, api_visibility="private",
                         concurrency_id="gpu", show_progress_on=[panel.status])
        job.then(finished, inputs.state, [gallery.gallery, gallery.selected_prompt, gallery.image_note, panel.stop,
                                          panel.generate, controls.seed],
                 api_visibility="private", queue=False, show_progress="hidden")
        return job

    button_event = chain(panel.generate.click)
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

    panel.stop.click(stop_in_page, None, panel.stop, api_visibility="private", queue=False, show_progress="hidden")
    stop_reply = gr.Textbox(visible=False, label="Stop")
    gr.Button(visible=False).click(stop_job, None, stop_reply, api_name="stop", queue=False)
    return RunEvents(button_event, submit_event, api_event, stop_job)
