"""The GPU job runner: one home for running work on the engine, queued or inside ZeroGPU's worker.

A job is a task name (``generate``, ``compare``, ``grid``) and its plain-data
arguments. :class:`JobRunner` runs it for a browser session: Stop reaches it
between steps (also while the model still loads), and jobs a session left
waiting in the queue end at once when Stop was pressed. A ``generate`` job
also hears Skip (drop the image in progress, go on with the next) and Stop
and finish (end the batch after the image in progress, finishing it from
what its prior reached). On ZeroGPU the job
runs inside ``spaces.GPU`` in a worker process, its duration estimated from
steps, size and image count. With several devices, a job takes a free engine
of an :class:`~.pool.EnginePool` and keeps it to the end.

No torch, no gradio: the engine is handed in.

Example::

    runner = JobRunner()
    result = runner.run("generate", ([request],), {}, gpu_seconds([request]), session="abc",
                        engine=lambda: engine)
    runner.stop("abc")                      # from another thread: the job ends after its current step
    runner.skip("abc")                      # ...or drops the image in progress and goes on
    runner.stop_and_finish("abc")           # ...or ends once the image in progress is finished
"""

from __future__ import annotations

import threading
from typing import Any, Callable

from ..core.errors import Cancelled
from ..core.request import GenerationRequest
from . import hosting
from .pool import EnginePool

MAX_GPU_SECONDS = 300
WAITING_CANCELLED = "stopped before it started"


def gpu_seconds(requests: list[GenerationRequest]) -> int:
    """A generous estimate of GPU seconds for ``requests`` on a ZeroGPU H200 slice."""
    total = 10.0
    for request in requests:
        scale = request.width * request.height / (1024 * 1536)
        prior = request.prior_steps * 0.12 * (2 if request.prior_cfg > 1 else 1)
        decoder = request.decoder_steps * 0.25 * (2 if request.decoder_cfg > 1 else 1)
        total += request.count * ((prior + decoder) * scale + 1.5)
    return int(min(MAX_GPU_SECONDS, total * 1.5))


class Signals:
    """What a session's buttons ask of its running job: Stop, Skip, Stop and finish."""

    def __init__(self, task: str = "generate"):
        self.task = task
        self.stop = threading.Event()
        self.skip = threading.Event()
        self.finish = threading.Event()

    def stopped(self) -> bool:
        return self.stop.is_set()

    def take_skip(self) -> bool:
        """True once per Skip: it drops one image (presses before the job reaches a step count once)."""
        if self.skip.is_set():
            self.skip.clear()
            return True
        return False

    def finishing(self) -> bool:
        return self.finish.is_set()


def run_task(task: str, args: tuple, kwargs: dict, engine, on_progress: Callable | None = None,
             should_stop: Callable | None = None, signals: Signals | None = None) -> Any:
    """Run one GPU job on ``engine``: ``generate`` (engine.generate_many), ``redecode``, ``compare`` or ``grid``."""
    if task == "generate":
        if signals is not None:
            kwargs = {"should_skip": signals.take_skip, "should_finish": signals.finishing, **kwargs}
        return engine.generate_many(*args, on_progress=on_progress, should_stop=should_stop, **kwargs)
    if task == "redecode":
        return engine.redecode(*args, on_progress=on_progress, should_stop=should_stop, **kwargs)
    from .compare import compare, run_grid

    work = {"compare": compare, "grid": run_grid}[task]
    return work(engine, *args, on_progress=on_progress, should_stop=should_stop, **kwargs)


# ZeroGPU runs the decorated function in a worker process and pickles its arguments, so they are
# plain data (the task's name and its requests); the engine is reached through this module.
_ENGINE = None


def register_engine(engine) -> None:
    global _ENGINE
    _ENGINE = engine


def _gpu_seconds_of(task: str, args: tuple, kwargs: dict, seconds: int) -> int:
    return seconds


def _run_on_gpu(task: str, args: tuple, kwargs: dict, seconds: int) -> Any:
    return run_task(task, args, kwargs, _ENGINE)


def gpu_runner() -> Callable[[str, tuple, dict, int], Any] | None:
    """On ZeroGPU, ``run(task, args, kwargs, seconds)`` inside ``spaces.GPU``; elsewhere None.

    There is no progress or stop inside the GPU worker: callbacks can't cross processes.
    """
    if not hosting.zero_gpu():
        return None
    import spaces

    return spaces.GPU(duration=_gpu_seconds_of)(_run_on_gpu)


class JobRunner:
    """Runs GPU jobs for browser sessions, with Stop per session."""

    def __init__(self):
        # A session's running jobs: one, or more where several engines serve one queue.
        self._stops: dict[str, list[Signals]] = {}
        self._cancel_waiting: dict[str, int] = {}  # jobs of a session to drop when they leave the queue
        self._lock = threading.Lock()
        self._gpu = gpu_runner()  # spaces.GPU on ZeroGPU, None elsewhere

    @property
    def on_zero_gpu(self) -> bool:
        """True where jobs run inside ZeroGPU's worker (no progress, previews or Stop reach them there)."""
        return self._gpu is not None

    def run(self, task: str, args: tuple, kwargs: dict, seconds: int, session: str, engine: Callable[[], Any],
            on_progress: Callable | None = None, pool: EnginePool | None = None,
            on_engine: Callable[[Any, str | None], None] | None = None, remote: Callable | None = None) -> Any:
        """Run ``task`` for ``session`` on the engine ``engine()`` gives (it may wait for loading).

        With a ``pool`` of several engines, ``engine()`` only waits for
        loading and the job runs on a free engine of the pool, all its images
        on that one. ``on_engine(engine, label)`` hears which engine the job
        got (label None without a pool) before it starts. With ``remote``
        (a Ray Serve backend's ``run``) the job runs there instead, and hears
        Stop, Skip and Stop and finish through it. Stop works from the
        moment the job is asked for, also while the model is still loading.
        Raises :class:`Cancelled` if Stop came first.
        """
        signals = Signals(task)
        stop = signals.stop
        with self._lock:
            if self._cancel_waiting.get(session, 0) > 0:  # Stop was pressed while this job waited
                self._cancel_waiting[session] -= 1
                if not self._cancel_waiting[session]:
                    del self._cancel_waiting[session]
                raise Cancelled(WAITING_CANCELLED)
            self._stops.setdefault(session, []).append(signals)
        try:
            loaded = engine()
            if stop.is_set():
                raise Cancelled()
            if self._gpu is not None:
                register_engine(loaded)
                return self._gpu(task, args, kwargs, seconds)
            if remote is not None:
                return remote(task, args, kwargs, on_progress, signals, on_engine)
            if pool is None:
                if on_engine is not None:
                    on_engine(loaded, None)
                return run_task(task, args, kwargs, loaded, on_progress, stop.is_set, signals)
            with pool.take(session) as (picked, label):
                if stop.is_set():  # pressed while the job waited for a free engine
                    raise Cancelled()
                if on_engine is not None:
                    on_engine(picked, label)
                return run_task(task, args, kwargs, picked, on_progress, stop.is_set, signals)
        finally:
            with self._lock:
                running = self._stops.get(session, [])
                if signals in running:
                    running.remove(signals)
                if not running:
                    self._stops.pop(session, None)

    def stop(self, session: str, waiting: int = 0) -> bool:
        """Stop the session's running job after the current step, and drop its ``waiting`` queued jobs.

        The queue hands jobs out in order, so the next ``waiting`` jobs this
        session starts are the ones that were waiting when Stop was pressed:
        each of them ends at once with :class:`Cancelled` instead of running.
        Returns False when there was nothing to stop.
        """
        with self._lock:
            if waiting > 0:
                self._cancel_waiting[session] = self._cancel_waiting.get(session, 0) + waiting
            running = list(self._stops.get(session, []))
        for signals in running:
            signals.stop.set()
        return bool(running) or waiting > 0

    def skip(self, session: str) -> bool:
        """Drop the image the session's job is making and go on with the next (generate jobs).

        Returns False when nothing runs.
        """
        return self._signal(session, "skip")

    def stop_and_finish(self, session: str) -> bool:
        """End the session's job after the image in progress, which is still finished (generate jobs):
        stopped in its prior, its decoder runs on what the prior reached. Returns False when nothing runs."""
        return self._signal(session, "finish")

    def _signal(self, session: str, which: str) -> bool:
        with self._lock:
            running = list(self._stops.get(session, []))
        # Compare and grid jobs hear Stop only; nothing reaches a job inside ZeroGPU's worker.
        generating = [signals for signals in running if signals.task == "generate"]
        if not generating or self._gpu is not None:
            return False
        for signals in generating:
            getattr(signals, which).set()
        return True

    def running_sessions(self) -> list[str]:
        """The sessions whose job runs now."""
        with self._lock:
            return list(self._stops)

    def forget(self, session: str) -> None:
        """Drop what is kept for a closed browser session."""
        with self._lock:
            self._cancel_waiting.pop(session, None)
