"""Wiring events: the session id, one-line errors on the page and to API clients, named API parameters,
and the Stop-able GPU job.

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
from typing import Any, Callable

import gradio as gr

from ..core.errors import describe_error
from ..core.request import FIELD_NAMES


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
    ``optional`` names come last; like the fields, they default to None, so API clients may leave out
    those whose controls hold no value.
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
        # The fields (and what follows them) default to None: a control without a value of its own (the start
        # image) is then one API clients may leave out, as Gradio reads a None default; the others keep
        # their controls' values as defaults. Python wants defaults on every later parameter too.
        params = [inspect.Parameter(name, kind) for name in before]
        params += [inspect.Parameter(name, kind, default=None) for name in names[len(before):]]
        params += [inspect.Parameter("request", kind, annotation=gr.Request, default=None),
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


def share_gpu(blocks: gr.Blocks, slots: int, concurrency_id: str = "gpu") -> int:
    """Let ``slots`` events of ``concurrency_id`` run at once (one per device); how many events share it.

    Gradio's queue gives a shared ``concurrency_id`` the smallest limit of its
    events, so every one of them gets the same limit. One slot is today's one
    job at a time.
    """
    shared = [fn for fn in blocks.fns.values() if fn.concurrency_id == concurrency_id]
    if slots > 1:  # one device keeps the queue's default (one at a time), as it always was
        for fn in shared:
            fn.concurrency_limit = slots
    return len(shared)


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
