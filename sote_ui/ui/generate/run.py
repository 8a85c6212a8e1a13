"""Generate, Stop, Skip and Stop and finish: the run handler, its streaming of progress, live previews and
finished images, and the events around it.

The job runs in a worker thread; its progress, each live preview of stage C
and each finished image come back through a queue (:func:`stream_job`), so
the progress bar is driven from the handler and the rest is streamed as it
comes. On the page each finished image joins the session's gallery at once,
and the live preview takes the gallery's first place, captioned with its
step, until the image it shows is done. The ``/generate`` API keeps its own
outputs: previews stream there, the images come at the end.
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
from ..summaries import Eta, PassLabels, run_summary
from ..wiring import named_api, page_action, session_id, user_error
from .controls import RANDOM_SEED_LABEL, Controls
from .gallery import Gallery, caption, gallery_items, keep_shots, shown


@dataclass
class Actions:
    """The row of buttons over the gallery."""

    generate: gr.Button
    stop: gr.Button
    skip: gr.Button
    finish: gr.Button  # Stop and finish


@dataclass
class RunPanel:
    """What the run writes: the buttons, the status line, the live preview and the last run's summary."""

    generate: gr.Button
    stop: gr.Button
    status: gr.Markdown
    live_preview: gr.Image  # never shown on the page: /generate's stream of previews
    summary: gr.Markdown
    report: gr.JSON
    job_images: gr.Gallery  # hidden: /generate's images of this job alone
    skip: gr.Button
    finish: gr.Button


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


def build_actions() -> Actions:
    """Generate, and the three ways to end a run early (enabled while one runs)."""
    with gr.Row(elem_id="actions"):
        # Narrow minimum widths keep the four on one row of a phone's bottom bar.
        generate = gr.Button("Generate", variant="primary", elem_id="generate", scale=3, min_width=80)
        stop = gr.Button("Stop", variant="stop", elem_id="stop", interactive=False, scale=1, min_width=56)
        skip = gr.Button("Skip", elem_id="skip", interactive=False, scale=1, min_width=56)
        finish = gr.Button("Stop and finish", elem_id="stop_and_finish", interactive=False, scale=2, min_width=130)
    return Actions(generate, stop, skip, finish)


def stream_job(work: Callable[[Callable, Callable, Callable], Any], on_progress: Callable) -> Iterator[Any]:
    """Run ``work(progress, preview, shot)`` in a worker; call ``on_progress`` here and yield
    ``("preview", preview)`` and ``("shot", shot)`` as they come.

    Returns (as the generator's value) what ``work`` returned; re-raises what it raised.
    """
    events: queue.Queue = queue.Queue()
    outcome: dict[str, Any] = {}

    def worker():
        try:
            outcome["result"] = work(lambda p: events.put(("progress", p)), lambda item: events.put(("preview", item)),
                                     lambda shot: events.put(("shot", shot)))
        except Exception as exc:  # handed to the handler
            outcome["error"] = exc
        finally:
            events.put(None)

    thread = threading.Thread(target=worker, name="sote-job", daemon=True)
    thread.start()
    ended = False
    while not ended:
        for event in fresh_events(events):
            if event is None:
                ended = True
                break
            kind, item = event
            if kind == "progress":
                on_progress(item)
            else:
                yield kind, item
    thread.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["result"]


def fresh_events(events: queue.Queue) -> list:
    """The events waiting in ``events`` (at least one: it waits for the first), less the live previews a
    later preview replaces. A page slower than the engine (a busy machine, a far browser) then shows the
    step the run is at, not one it left seconds ago; every progress tick and finished image still comes."""
    waiting = [events.get()]
    while True:
        try:
            waiting.append(events.get_nowait())
        except queue.Empty:
            break
    previews = [index for index, event in enumerate(waiting) if event is not None and event[0] == "preview"]
    stale = set(previews[:-1])
    return [event for index, event in enumerate(waiting) if index not in stale]


def preview_caption(step: int, steps: int, index: int, images: int) -> str:
    """The live preview's caption in the gallery: which step (and, in a batch, which image) it shows."""
    return f"live preview · step {step}/{steps}" + (f" · image {index + 1}/{images}" if images > 1 else "")


def early_notes(info: dict[str, Any]) -> str:
    """What Skip and Stop and finish did, for the end of the run's summary line ('' when neither did)."""
    notes = [f"seed {item['seed']} finished from its prior stopped at step {item['prior_stopped_at']}"
             for item in info.get("prior_stopped_at", [])]
    if info.get("skipped"):
        notes.append("skipped seed" + ("s " if len(info["skipped"]) > 1 else " ")
                     + ", ".join(str(seed) for seed in info["skipped"]))
    return "".join(f" · {note}" for note in notes)


def wire_run(studio: Studio, controls: Controls, inputs: RunInputs, panel: RunPanel, gallery: Gallery,
             waiting: Callable[[str], int] | None) -> RunEvents:
    """Generate (button, Enter in the prompt box, ``/generate``), Stop (``/stop``), Skip (``/skip``) and
    Stop and finish (``/stop_and_finish``).

    ``waiting(session)`` counts the session's jobs still waiting in the GPU
    queue, which Stop cancels too.
    """

    def start_job(values, images, image_strengths, preview, request: gr.Request, progress):
        """The job's stream of ``("preview", ...)`` and ``("shot", ...)``; its value is (shots, report)."""
        values["images"] = list(images or [])
        values["image_strengths"] = image_strengths if image_strengths not in (None, "") else None
        try:
            studio.check_uploads(values["images"])  # a file that is no image goes from the upload cache at once
        except Exception as exc:
            raise user_error(exc) from None
        if not studio.settled():
            progress(0, desc=f"waiting for the model: {studio.status()}")
        eta, passes = Eta(time.monotonic), PassLabels()

        def on_progress(p):
            progress((p.done, p.total), desc=f"image {p.image + 1}/{p.images} · {passes.stage(p)} step "
                                             f"{p.step}/{p.steps} · {eta.text(p.done, p.total)}")

        def work(report_progress, report_preview, report_shot):
            return studio.generate(values, session=session_id(request), on_progress=report_progress,
                                   on_preview=report_preview, preview=preview or "auto", on_shot=report_shot)

        return stream_job(work, on_progress)

    def end_of(shots, info) -> tuple[str, str]:
        """The run's summary line and the status line."""
        info["files"] = [shot.path for shot in shots]
        info["parameters"] = [shot.parameters for shot in shots]
        line = run_summary(info, studio.device_word()) + early_notes(info)
        return line, line if info.get("stopped") else studio.status()

    @named_api(after=("session",), optional=("images", "image_strengths", "preview"))
    def run(values, session, images, image_strengths, preview, request: gr.Request, progress=gr.Progress()):
        session = session or SessionState()
        job = start_job(values, images, image_strengths, preview, request, progress)
        try:
            while True:
                kind, item = next(job)
                if kind == "preview":
                    label = f"Live preview: image {item.index + 1}, stage C step {item.step}/{item.steps}"
                    yield (*[gr.update()] * (len(run_outputs) - 1),
                           gr.update(value=item.image, label=label, visible=True))
        except StopIteration as done:
            shots, info = done.value
        except Exception as exc:
            raise user_error(exc) from None
        keep_shots(session, shots)
        line, message = end_of(shots, info)
        images = [(shot.path, caption(shot.request)) for shot in shots]
        yield images, line, info, session, message, gr.update(value=None, visible=False)

    def run_page(values, session, images, image_strengths, preview, request: gr.Request,
                 progress=gr.Progress()):
        """The page's run: each finished image joins the gallery at once; the live preview leads it meanwhile."""
        session = session or SessionState()
        session.jobs += 1  # this run's images are grouped as one run as they come
        run_id, new, batch = session.jobs, [], int(values.get("count") or 1)
        job = start_job(values, images, image_strengths, preview, request, progress)
        try:
            while True:
                kind, item = next(job)
                if kind == "shot":
                    item.job = run_id
                    session.shots.append(item)
                    new.append(item)
                    session.previewing = False
                    yield gr.Gallery(value=gallery_items(session), selected_index=None), *[gr.update()] * 4
                else:
                    session.previewing = True
                    live = (item.image, preview_caption(item.step, item.steps, item.index, batch))
                    yield (gr.Gallery(value=[live, *gallery_items(session)], selected_index=None),
                           *[gr.update()] * 4)
        except StopIteration as done:
            shots, info = done.value
        except Exception as exc:
            raise user_error(exc) from None
        finally:
            session.previewing = False
        kept = {id(shot) for shot in new}
        for shot in shots:  # on ZeroGPU nothing streamed: the images come now
            if id(shot) not in kept:
                shot.job = run_id
                session.shots.append(shot)
        if shots:
            session.last_seed = shots[-1].request.seed if len(shots) == 1 else shots[0].request.seed
            # The run's first image (lowest seed) is selected, so every action acts on what the page shows.
            session.selected = session.shots.index(min(shots, key=lambda shot: shot.request.seed))
        line, message = end_of(shots, info)
        # The gallery's final state comes with the summary, so the page never shows one without the other.
        yield shown(session)[0], line, info, session, message

    run_inputs = inputs.after(controls)
    run_outputs = [panel.job_images, panel.summary, panel.report, inputs.state, panel.status, panel.live_preview]
    page_outputs = [gallery.gallery, panel.summary, panel.report, inputs.state, panel.status]
    buttons = [panel.stop, panel.skip, panel.finish]

    def running():
        # The last run's summary goes, so what the page shows next is this run's.
        return (gr.update(value="Stop", interactive=True), gr.update(value="Skip", interactive=True),
                gr.update(value="Stop and finish", interactive=True), gr.update(value="Generating…"), "", "")

    def finished(session: SessionState | None):
        session = session or SessionState()
        seed_label = RANDOM_SEED_LABEL
        if session.last_seed is not None:
            seed_label += f" · last run: {session.last_seed}"
        return (*shown(session), gr.update(value="Stop", interactive=False),
                gr.update(value="Skip", interactive=False), gr.update(value="Stop and finish", interactive=False),
                gr.update(value="Generate"), gr.update(label=seed_label))

    def chain(trigger):
        start = trigger(running, None, [*buttons, panel.generate, panel.status, panel.summary], api_visibility="private",
                        queue=False, show_progress="hidden")
        page_run = named_api(after=("session",), optional=("images", "image_strengths", "preview"))(run_page)
        job = start.then(page_action(page_run, len(page_outputs), 4), run_inputs, page_outputs,
                         api_visibility="private", concurrency_id="gpu", show_progress_on=[panel.status])
        job.then(finished, inputs.state, [gallery.gallery, gallery.selected_prompt, gallery.image_note, *buttons,
                                          panel.generate, controls.seed],
                 api_visibility="private", queue=False, show_progress="hidden")
        return job

    button_event = chain(panel.generate.click)
    submit_event = chain(controls.prompt.submit)
    # The API endpoint: the same job, raising errors to the client, with the outputs scripts rely on.
    api_event = gr.Button(visible=False).click(run, run_inputs, run_outputs, api_name="generate",
                                               concurrency_id="gpu")

    def stop_job(request: gr.Request) -> str:
        sid = session_id(request)
        stopped = studio.stop(sid, waiting=waiting(sid) if waiting else 0)
        return "stopping after the current step" if stopped else "nothing is running"

    def skip_job(request: gr.Request) -> str:
        skipped = studio.skip(session_id(request))
        return "skipping the image in progress; the batch goes on" if skipped else "nothing is running"

    def finish_job(request: gr.Request) -> str:
        finishing = studio.stop_and_finish(session_id(request))
        return "finishing the image in progress, then stopping" if finishing else "nothing is running"

    # The buttons, not the status line, acknowledge: the run's own reply writes the status line, and these
    # replies may arrive after it.
    def stop_in_page(request: gr.Request):
        stop_job(request)
        return (gr.update(value="Stopping…", interactive=False), gr.update(interactive=False),
                gr.update(interactive=False))

    def finish_in_page(request: gr.Request):
        finish_job(request)
        return (gr.update(interactive=False), gr.update(interactive=False),
                gr.update(value="Finishing…", interactive=False))

    def skip_in_page(request: gr.Request):
        gr.Info(skip_job(request))  # a toast: Skip stays pressable for the next image

    for button, action in ((panel.stop, stop_in_page), (panel.finish, finish_in_page)):
        button.click(action, None, buttons, api_visibility="private", queue=False, show_progress="hidden")
    # Queued (on its own, not behind the GPU job) so that its toast shows.
    panel.skip.click(skip_in_page, None, None, api_visibility="private", show_progress="hidden")
    for name, label, fn in (("stop", "Stop", stop_job), ("skip", "Skip", skip_job),
                            ("stop_and_finish", "Stop and finish", finish_job)):
        reply = gr.Textbox(visible=False, label=label)
        gr.Button(visible=False).click(fn, None, reply, api_name=name, queue=False)
    return RunEvents(button_event, submit_event, api_event, stop_job)
