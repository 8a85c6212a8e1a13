"""The Ray Serve backend: the page's jobs run on replicas that each own one device and one engine.

For more GPUs than one machine has. The front end (``python app.py --backend
ray``) keeps the page, the queue, the sessions and the saved files; each job
goes, as the same plain request objects, to a replica of one Ray Serve
deployment, which streams back progress, previews and each finished image.
Stop, Skip and Stop and finish reach the replica running the job through a
small Ray actor both sides read (a Serve request can't be addressed to a
replica once it runs). A replica that dies mid-job ends that job with one
clear line; Serve replaces it and the next job goes to a healthy one.

Optional: ``pip install -r requirements-ray.txt``. Without ``--ray-address``
a local Ray cluster is started; with one, the front end joins that cluster
(``ray start --head`` on one machine, ``ray start --address HEAD:6379`` on
the others) and ships this package to its replicas.

Example::

    backend = RayBackend(source, mode="auto", options=RayOptions(replicas=(1, 2)))
    backend.start(print)
    result = backend.run("generate", ([request],), {}, on_progress=None, signals=Signals())
"""

from __future__ import annotations

import os
import queue
import socket
import threading
import time
import uuid
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

from ..core import errors
from ..core.errors import Cancelled, GenerationError, InputError
from .jobs import Signals, run_task

APP = "sote-studio"
POLL_SECONDS = 0.1  # how often Stop, Skip and Stop and finish are read on each side
STREAMED = ("on_preview", "on_image")  # callbacks that come back as events instead of travelling
REPLICA_LOST = ("the Ray Serve replica running this job stopped before it finished ({}); "
                "ask again: the next job goes to a healthy replica")


def installed() -> bool:
    """True where Ray Serve can be imported (``pip install -r requirements-ray.txt``)."""
    try:
        import ray  # noqa: F401
        from ray import serve  # noqa: F401
    except ImportError:
        return False
    return True


def parse_replicas(text: str | int | None) -> tuple[int, int]:
    """``--replicas``: ``N`` (a fixed count) or ``MIN:MAX`` (Serve adds replicas while jobs wait, down to MIN)."""
    text = str(text if text is not None else 1).strip()
    low, sep, high = text.partition(":")
    try:
        bounds = (int(low), int(high)) if sep else (int(low), int(low))
    except ValueError:
        raise InputError(f"--replicas: {text!r} is not a count like 2 or a range like 1:4") from None
    if not 1 <= bounds[0] <= bounds[1]:
        raise InputError(f"--replicas: {text!r} needs 1 <= MIN <= MAX")
    return bounds


@dataclass
class RayOptions:
    address: str | None = None  # None: start a local Ray cluster
    replicas: tuple[int, int] = (1, 1)  # (min, max) replicas
    gpus_per_replica: float | None = None  # None: 1 where the cluster has GPUs, else 0 (CPU replicas)
    cpus_per_replica: float = 1
    local_cpus: int | None = None  # CPUs of the local cluster (tests bound it)


class JobBoard:
    """What each running job's session asked for (Stop, Skips, Stop and finish): the front end writes,
    the replica running the job reads. A Ray actor, one per front end."""

    def __init__(self):
        self._jobs: dict[str, tuple[bool, int, bool]] = {}

    def set(self, job: str, stop: bool, skips: int, finish: bool) -> None:
        self._jobs[job] = (stop, skips, finish)

    def get(self, job: str) -> tuple[bool, int, bool] | None:
        return self._jobs.get(job)

    def drop(self, job: str) -> None:
        self._jobs.pop(job, None)


class EngineReplica:
    """One Serve replica: an engine on the replica's device (Ray hands it its GPU as ``cuda:0``)."""

    def __init__(self, source, mode: str, device: str | None, options: dict | None = None):
        from ..engine import Engine

        self.engine = Engine(source, mode=mode, device=device, **(options or {}))
        self.engine.load()
        try:
            from ray import serve

            tag = serve.get_replica_context().replica_id.unique_id
        except Exception:  # outside Serve (a direct test of the class)
            tag = uuid.uuid4().hex[:8]
        self.label = f"replica {tag} on {socket.gethostname()}"

    def describe(self) -> dict[str, Any]:
        """Where this replica runs: its label, pid, device and memory mode."""
        engine = self.engine
        return {"label": self.label, "pid": os.getpid(), "device": engine.device.describe(),
                "mode": engine.plan.mode.value if engine.plan else ""}

    def run(self, task: str, args: tuple, kwargs: dict, streamed: tuple[str, ...], board, job: str,
            preview_kind: str | None = None):
        """Run one job, yielding ``(event, payload)``: started, progress, preview, image, then done,
        cancelled or error."""
        import ray

        signals = Signals(task)
        events: queue.Queue = queue.Queue()
        finished = threading.Event()
        if preview_kind:
            self.engine.preview_kind = preview_kind
        callbacks = {name: (lambda item, name=name: events.put((name[3:], item))) for name in streamed}

        def listen():  # the session's buttons, read from the board while the job runs
            skips = 0
            while not finished.wait(POLL_SECONDS):
                try:
                    state = ray.get(board.get.remote(job), timeout=10)
                except Exception:
                    continue
                if state is None:
                    continue
                stop, asked, finish = state
                if stop:
                    signals.stop.set()
                if asked > skips:
                    skips = asked
                    signals.skip.set()
                if finish:
                    signals.finish.set()

        def work():
            try:
                result = run_task(task, args, {**kwargs, **callbacks}, self.engine,
                                  lambda progress: events.put(("progress", progress)), signals.stop.is_set, signals)
                if hasattr(result, "images") and "on_image" in callbacks:  # each image went back already
                    result = replace(result, images=[])
                events.put(("done", result))
            except Cancelled as exc:
                events.put(("cancelled", str(exc)))
            except InputError as exc:  # ModelError and GenerationError too: their one line
                events.put(("error", (type(exc).__name__, str(exc))))
            except Exception as exc:
                events.put(("error", ("GenerationError", errors.describe_error(exc))))
            finally:
                finished.set()
                board.drop.remote(job)

        threading.Thread(target=listen, name="sote-board", daemon=True).start()
        threading.Thread(target=work, name="sote-job", daemon=True).start()
        yield "started", {**self.describe(), "started": time.time()}
        while True:
            event = events.get()
            yield event
            if event[0] in ("done", "cancelled", "error"):
                return


class RayBackend:
    """The front end's side: starts (or joins) Ray, deploys the replicas, and runs each job on one."""

    def __init__(self, source, mode: str = "auto", options: RayOptions | None = None,
                 device: str | None = None, engine_options: dict | None = None):
        self.source = source
        self.engine_options = dict(engine_options or {})  # the Engine's file options (effnet...), as passed here
        self.mode = mode
        self.device = device
        self.options = options or RayOptions()
        self.ready = False
        self.replicas: list[dict[str, Any]] = []  # what each replica said when it started
        self._handle = None
        self._board = None
        self._running: dict[str, dict[str, Any]] = {}  # job -> the replica that runs it
        self._lock = threading.Lock()

    @property
    def slots(self) -> int:
        """How many jobs may run at once: one per replica, at most."""
        return self.options.replicas[1]

    def start(self, say: Callable[[str], None] | None = None) -> None:
        """Start or join Ray, deploy the replicas and wait until one serves (loading its model)."""
        import ray
        from ray import serve

        say = say or (lambda message: None)
        options = self.options
        if not ray.is_initialized():
            self._init_ray(say)
        gpus = options.gpus_per_replica
        if gpus is None:
            gpus = 1 if ray.cluster_resources().get("GPU", 0) >= 1 else 0
        low, high = options.replicas
        scaling: dict[str, Any] = {"num_replicas": low} if low == high else {
            "autoscaling_config": {"min_replicas": low, "max_replicas": high, "target_ongoing_requests": 1}}
        deployment = serve.deployment(
            EngineReplica, name="engine", max_ongoing_requests=1,
            ray_actor_options={"num_gpus": gpus, "num_cpus": options.cpus_per_replica}, **scaling)
        self._board = ray.remote(num_cpus=0)(JobBoard).remote()
        say(f"starting {low if low == high else f'{low} to {high}'} Ray Serve replica(s), each loading the model")
        serve.start(proxy_location="Disabled")
        self._handle = serve.run(deployment.bind(self.source, self.mode, self.device, self.engine_options), name=APP, route_prefix=None)
        self.ready = True

    def _init_ray(self, say: Callable[[str], None]) -> None:
        """``ray.init`` from a thread that lives as long as the process: a local cluster's processes are
        started with the signal to die when the thread that started them ends (the loader's would)."""
        import ray

        options = self.options
        package = str(Path(__file__).resolve().parents[1])
        started, failed = threading.Event(), []

        def keep():
            try:
                if options.address:
                    say(f"joining the Ray cluster at {options.address}")
                    # Replicas on other machines get this package from here; torch and diffusers must be
                    # installed there.
                    ray.init(address=options.address, runtime_env={"py_modules": [package]}, log_to_driver=False)
                else:
                    say("starting a local Ray cluster")
                    ray.init(num_cpus=options.local_cpus, include_dashboard=False, log_to_driver=False,
                             runtime_env={"env_vars": {"PYTHONPATH": str(Path(package).parent)}})
            except Exception as exc:
                failed.append(exc)
            finally:
                started.set()
            self._closed.wait()

        self._closed = threading.Event()
        threading.Thread(target=keep, name="sote-ray", daemon=True).start()
        started.wait()
        if failed:
            raise GenerationError(f"Ray could not start: {errors.describe_error(failed[0])}") from None

    def status(self) -> str:
        """One line about the replicas."""
        low, high = self.options.replicas
        count = f"{low}" if low == high else f"{low} to {high}"
        return f"ready on Ray Serve: {count} replica(s), one job each" + (
            f"; last: {self.replicas[-1]['label']} ({self.replicas[-1]['device']} in {self.replicas[-1]['mode']})"
            if self.replicas else "")

    def running(self) -> dict[str, dict[str, Any]]:
        """The replicas running jobs now (job id -> what the replica said: label, pid, device, mode)."""
        with self._lock:
            return dict(self._running)

    def run(self, task: str, args: tuple, kwargs: dict, on_progress: Callable | None, signals: Signals,
            on_engine: Callable[[Any, str | None], None] | None = None, preview_kind: str | None = None) -> Any:
        """Run one job on a free replica: the replica's events call ``on_progress`` and the streamed
        callbacks of ``kwargs`` here; Stop, Skip and Stop and finish of ``signals`` reach it."""
        import ray

        job = uuid.uuid4().hex
        callbacks = {name: kwargs[name] for name in STREAMED if kwargs.get(name) is not None}
        sent = {name: value for name, value in kwargs.items() if name not in STREAMED}
        board = self._board
        board.set.remote(job, False, 0, False)
        done = threading.Event()

        def forward():  # the session's buttons, written to the board for the replica
            last, skips = None, 0
            while not done.wait(POLL_SECONDS):
                if signals.take_skip():
                    skips += 1
                state = (signals.stop.is_set(), skips, signals.finishing())
                if state != last:
                    board.set.remote(job, *state)
                    last = state

        threading.Thread(target=forward, name="sote-forward", daemon=True).start()
        images: list = []
        ended = False  # the replica said how the job ended (and drops its board entry itself)
        try:
            response = self._handle.options(stream=True).run.remote(task, args, sent, tuple(callbacks), board, job,
                                                                    preview_kind)
            for event, payload in response:
                if event == "started":
                    with self._lock:
                        self._running[job] = payload
                        self.replicas = [*self.replicas[-15:], payload]
                    if on_engine is not None:
                        on_engine(payload, payload["label"])
                elif event == "progress":
                    if on_progress is not None:
                        on_progress(payload)
                elif event == "preview":
                    callbacks["on_preview"](payload)
                elif event == "image":
                    images.append(payload)
                    callbacks["on_image"](payload)
                elif event in ("done", "cancelled", "error"):
                    ended = True
                if event == "done":
                    if images and hasattr(payload, "images"):
                        payload = replace(payload, images=images)
                    return payload
                elif event == "cancelled":
                    stopped = Cancelled(payload) if payload else Cancelled()
                    stopped.images = images
                    raise stopped
                elif event == "error":
                    kind, message = payload
                    raise getattr(errors, kind, GenerationError)(message)
            raise GenerationError(REPLICA_LOST.format("its answer ended early"))
        except ray.exceptions.RayError as exc:
            raise GenerationError(REPLICA_LOST.format(type(exc).__name__)) from None
        finally:
            done.set()
            with self._lock:
                self._running.pop(job, None)
            if not ended:  # the answer broke off here (a failed save, say): the replica stops the job
                try:
                    board.set.remote(job, True, 0, False)
                except Exception:
                    pass

    def close(self) -> None:
        """Remove the deployment (and stop the local cluster this front end started)."""
        try:
            import ray
            from ray import serve

            if ray.is_initialized():
                serve.delete(APP)
                if not self.options.address:
                    serve.shutdown()
                ray.shutdown()
        except Exception:
            pass
        if getattr(self, "_closed", None) is not None:
            self._closed.set()
        self.ready = False
