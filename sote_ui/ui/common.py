"""Pieces every tab uses: the session id, user-facing errors, named API parameters,
control updates that keep the form consistent, size snapping and one-line summaries.

Errors on the page: a failed action shows its message as a toast and in the
status line next to the control, and leaves the form as it was. Gradio shows
a ``gr.Error`` as a toast only for queued events (its browser client drops
the message's ``visible`` flag on the direct, unqueued route, and the page
then shows bare "Error" badges over every output), so page actions are queued
and report failures through :func:`page_action`; API endpoints still raise
``gr.Error``, which clients receive as the exception message.
"""

from __future__ import annotations

import functools
import inspect
import math
import re
from typing import Any, Callable

import gradio as gr

from ..core.errors import describe_error
from ..core.request import FIELD_NAMES

SIDE_STEP = 128
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
# A1111 prompt syntax this model has no use for here: sent as plain text, so say so.
_UNSUPPORTED = re.compile(r"<(lora|lyco|hypernet|embedding):[^>]*>", re.IGNORECASE)


def session_id(request: gr.Request | None) -> str:
    return request.session_hash if request else ""


def user_error(exc: BaseException) -> gr.Error:
    """The one-line message for ``exc``, shown in the page and returned to API clients."""
    return gr.Error(describe_error(exc), print_exception=False)


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

        def split(args):
            *args, request, progress = args
            head, fields, tail = args[:first], args[first:first + count], args[first + count:]
            return (*head, values_of(fields), *tail), {"request": request, "progress": progress}

        if inspect.isgeneratorfunction(fn):  # streaming stays streaming
            def endpoint(*args):
                positional, named = split(args)
                yield from fn(*positional, **named)
        else:
            def endpoint(*args):
                positional, named = split(args)
                return fn(*positional, **named)

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


def page_action(fn: Callable, outputs: int, note: int | None) -> Callable:
    """Wrap an event function for the page: a failure becomes a toast plus the message in output ``note``.

    Every other output is left as it was, so no "Error" badge covers the form.
    The wrapper keeps ``fn``'s signature, so Gradio still passes requests,
    progress trackers and event data.
    """

    def failed(exc: Exception):
        message = exc.message if isinstance(exc, gr.Error) else describe_error(exc)
        gr.Warning(message)
        updates = [gr.update() for _ in range(outputs)]
        if note is not None:
            updates[note] = f"⚠️ {message}"
        return updates[0] if outputs == 1 else tuple(updates)

    if inspect.isgeneratorfunction(fn):  # a streaming handler: the failure is its last update
        @functools.wraps(fn)
        def streaming(*args, **kwargs):
            try:
                yield from fn(*args, **kwargs)
            except Exception as exc:
                yield failed(exc)

        return streaming

    @functools.wraps(fn)
    def action(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            return failed(exc)

    return action


def wire(trigger, fn: Callable, inputs, outputs, *, api_name: str | None = None, note: int | None = None,
         **options):
    """Attach ``fn`` to ``trigger`` for the page and, if ``api_name`` is given, as a public API endpoint.

    The page's event reports failures with :func:`page_action`; the API
    endpoint (a hidden twin of the same function) raises them to the client.
    Returns the page's event.
    """
    inputs = list(inputs) if isinstance(inputs, (list, tuple)) else inputs
    outputs = list(outputs) if isinstance(outputs, (list, tuple)) else ([outputs] if outputs is not None else [])
    event = trigger(page_action(fn, len(outputs), note), inputs, outputs, api_visibility="private", **options)
    if api_name:
        gr.Button(visible=False, elem_classes=["api-twin"]).click(fn, inputs, outputs, api_name=api_name,
                                                                  **options)
    return event


def wire_stoppable(run: gr.Button, stop: gr.Button, fn: Callable, inputs, outputs, *, api_name: str, note: int,
                   status, stop_job: Callable):
    """A GPU job started by ``run``: ``stop`` is enabled while it runs and stops it; failures go to
    output ``note``; the same function is the API endpoint ``api_name``. Returns the page's event."""
    start = run.click(lambda: gr.update(interactive=True), None, stop, api_visibility="private", queue=False,
                      show_progress="hidden")
    job = wire(start.then, fn, inputs, outputs, note=note, concurrency_id="gpu", show_progress_on=[status])
    job.then(lambda: gr.update(interactive=False), None, stop, api_visibility="private", queue=False,
             show_progress="hidden")
    gr.Button(visible=False).click(fn, inputs, outputs, api_name=api_name, concurrency_id="gpu")
    stop.click(stop_job, None, status, api_visibility="private", queue=False)
    return job


def queued_jobs(blocks: gr.Blocks, session: str, concurrency_id: str = "gpu") -> int:
    """How many of ``session``'s jobs wait (not yet running) in the queue of ``concurrency_id``.

    Reads Gradio's queue, which lists waiting events with their session; a
    running job has left that list. 0 if the queue can't be read.
    """
    try:
        queue = blocks._queue.event_queue_per_concurrency_id.get(concurrency_id)
        return sum(1 for event in list(queue.queue) if event.session_hash == session) if queue else 0
    except AttributeError:
        return 0


def snap_side(value: float) -> int:
    """The nearest multiple of 128 (halves round up), at least 128."""
    return max(SIDE_STEP, int(math.floor(float(value) / SIDE_STEP + 0.5)) * SIDE_STEP)


def size_to_resolution(width: float, height: float) -> str:
    choice = f"{int(width)}x{int(height)}"
    return choice if choice in RESOLUTION_VALUES else "custom"


def settings_for_form(values: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """Values ready for the controls (sizes snapped to multiples of 128) and notes on what was changed."""
    values = {k: v for k, v in values.items() if k in FIELD_NAMES}
    notes = []
    sizes = {}
    for key in ("width", "height"):
        if values.get(key) is None:
            continue
        try:
            sizes[key] = float(values[key])
        except (TypeError, ValueError):
            continue
    snapped = {key: snap_side(value) for key, value in sizes.items()}
    if any(snapped[key] != sizes[key] for key in snapped):
        old = "x".join(f"{sizes[k]:g}" for k in ("width", "height") if k in sizes)
        new = "x".join(str(snapped[k]) for k in ("width", "height") if k in snapped)
        notes.append(f"size {old} snapped to {new} (sizes are multiples of 128)")
    values.update(snapped)
    flagged = unsupported_syntax(values.get("prompt") or "")
    if flagged:
        notes.append(flagged)
    return values, notes


def unsupported_syntax(prompt: str) -> str:
    """A note naming A1111 syntax (``<lora:...>`` and kin) this app sends as plain text, or ''."""
    found = sorted({m.group(0) for m in _UNSUPPORTED.finditer(prompt or "")})
    if not found:
        return ""
    return (f"{', '.join(found[:3])}: LoRA and embedding tags are not supported here; "
            "they are sent as plain text, so remove them")


def form_updates(values: dict[str, Any], with_resolution: bool = True) -> tuple[list, list[str]]:
    """gr.update per request control (keys absent stay untouched), then the Resolution picker.

    The picker follows the size that is set, so it never shows a size other
    than the sliders'. Returns the updates and the notes of
    :func:`settings_for_form`.
    """
    values, notes = settings_for_form(values)
    updates = [gr.update(value=values[name]) if name in values else gr.update() for name in FIELD_NAMES]
    if with_resolution:
        if "width" in values and "height" in values:
            updates.append(gr.update(value=size_to_resolution(values["width"], values["height"])))
        else:
            updates.append(gr.update())
    return updates, notes


def seconds_text(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(int(round(seconds)), 60)
    return f"{minutes} min {rest:02d} s"


def seeds_text(seeds: list[int]) -> str:
    if not seeds:
        return "none"
    if len(seeds) > 2 and seeds == list(range(seeds[0], seeds[0] + len(seeds))):
        return f"{seeds[0]}-{seeds[-1]}"
    return ", ".join(str(s) for s in seeds)


def run_summary(report: dict[str, Any], device_word: str = "GPU") -> str:
    """One line about a Generate run: images, time, seeds, mode, prior reuse (or how it stopped)."""
    seeds = report.get("seeds", [])
    images = len(seeds)
    reused = sum(1 for r in report.get("prior_reused", []) if r)
    parts = [f"{images} image{'s' if images != 1 else ''} in {seconds_text(report.get('seconds', 0.0))}",
             f"seed{'s' if images != 1 else ''} {seeds_text(seeds)}"]
    if report.get("mode"):
        parts.append(report["mode"])
    if reused:
        parts.append(f"prior reused for {reused}")
    line = " · ".join(parts)
    if report.get("stopped"):
        if report.get("cancelled_in_queue"):
            return "stopped before it started: it was still waiting in the queue"
        if not images:
            return f"stopped before the first image was finished; the {device_word} is free"
        return f"stopped after {images} finished image{'s' if images != 1 else ''}; the {device_word} is free · {line}"
    return line


class Eta:
    """Elapsed and remaining time of a run, from the steps done so far."""

    def __init__(self, clock: Callable[[], float]):
        self._clock = clock
        self._start = clock()

    def text(self, done: int, total: int) -> str:
        elapsed = self._clock() - self._start
        if done <= 0 or total <= 0:
            return f"{seconds_text(elapsed)} elapsed"
        left = elapsed / done * max(total - done, 0)
        return f"{seconds_text(elapsed)} elapsed, ~{seconds_text(left)} left"


__all__ = [
    "Eta",
    "RESOLUTIONS",
    "form_updates",
    "named_api",
    "page_action",
    "queued_jobs",
    "run_summary",
    "session_id",
    "settings_for_form",
    "size_to_resolution",
    "snap_side",
    "unsupported_syntax",
    "user_error",
    "values_of",
    "wire",
]
