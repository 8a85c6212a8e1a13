"""Several devices behind one queue: one engine per device, each job handed a free one.

Gradio's queue decides how many jobs run at once (the GPU events share one
``concurrency_id`` whose limit is the number of engines); the pool only says
which engine a job gets. A job keeps its engine to the end, so its images,
a comparison's shared prior and a batch's seeds stay on one device. A session
gets the engine it used last when that one is free, so its cached priors
(drafts, a repeated prompt) are found again.

No torch here: engines are handed in, and each is driven on its own device.

Example::

    pool = EnginePool([Engine(source, device="cuda:0"), Engine(source, device="cuda:1")],
                      ["cuda:0", "cuda:1"])
    with pool.take(session="abc") as (engine, label):
        engine.generate_many([request])
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from contextlib import contextmanager
from typing import Any, Iterator

from ..core.errors import InputError

ALL = "all"


def parse_devices(text: str | None) -> list[str]:
    """The device names of a ``--devices`` value: ``cuda:0,cuda:1``, ``cpu,cpu`` or ``all``.

    ``all`` stays as it is (the engine layer counts the GPUs when the engines are made).
    Raises InputError for an empty name or a name that is not a device.
    """
    if text is None or not text.strip():
        return []
    names = [name.strip().lower() for name in text.split(",")]
    if names == [ALL]:
        return [ALL]
    for name in names:
        kind, _, index = name.partition(":")
        if kind not in ("cuda", "rocm", "xpu", "mps", "cpu") or (index and not index.isdigit()):
            raise InputError(f"--devices: {name or 'an empty name'!r} is not a device like cuda:0, xpu:1, "
                             "mps or cpu (or give 'all')")
    return names


def labels(names: list[str]) -> list[str]:
    """How reports name each engine: its device, numbered when a device is named twice (``cpu #1``)."""
    return [name if names.count(name) == 1 else f"{name} #{names[:i].count(name) + 1}"
            for i, name in enumerate(names)]


def threads_per_engine(names: list[str], cores: int | None = None) -> int | None:
    """Intra-op threads for each CPU engine so that CPU engines share the cores instead of fighting
    over them; None with at most one CPU engine (torch's own default stays)."""
    cpu_engines = sum(1 for name in names if name.startswith("cpu"))
    if cpu_engines < 2:
        return None
    return max(1, (cores or os.cpu_count() or 1) // cpu_engines)


class EnginePool:
    """Free engines for jobs: :meth:`take` waits for one, :meth:`take_all` for every one (a mode switch)."""

    def __init__(self, engines: list[Any], names: list[str], threads: int | None = None,
                 remembered: int = 1000):
        if len(engines) != len(names) or not engines:
            raise ValueError("one device name per engine, and at least one engine")
        self.engines = list(engines)
        self.labels = labels(names)
        self.threads = threads
        self._cpu = [name.startswith("cpu") for name in names]
        self._free = list(range(len(engines)))
        self._last: OrderedDict[str, int] = OrderedDict()  # session -> the engine it used last
        self._remembered = remembered
        self._changed = threading.Condition()

    def __len__(self) -> int:
        return len(self.engines)

    def label_of(self, engine: Any) -> str:
        return self.labels[self.engines.index(engine)]

    def busy(self) -> int:
        """How many engines run a job now."""
        with self._changed:
            return len(self.engines) - len(self._free)

    @contextmanager
    def take(self, session: str = "") -> Iterator[tuple[Any, str]]:
        """Wait for a free engine and hold it for one job: yields ``(engine, label)``."""
        with self._changed:
            self._changed.wait_for(lambda: bool(self._free))
            index = self._last.get(session)
            if index not in self._free:
                index = self._free[0]
            self._free.remove(index)
            if session:
                self._last[session] = index
                self._last.move_to_end(session)
                while len(self._last) > self._remembered:
                    self._last.popitem(last=False)
        try:
            if self._cpu[index] and self.threads:
                from ..engine.devices import use_threads

                use_threads(self.threads)  # per thread: this job's thread, not the other engine's
            yield self.engines[index], self.labels[index]
        finally:
            with self._changed:
                self._free.append(index)
                self._free.sort()
                self._changed.notify_all()

    @contextmanager
    def take_all(self) -> Iterator[list[Any]]:
        """Wait until no engine runs a job, and hold them all (switching the memory mode of every one)."""
        with self._changed:
            self._changed.wait_for(lambda: len(self._free) == len(self.engines))
            self._free.clear()
        try:
            yield list(self.engines)
        finally:
            with self._changed:
                self._free = list(range(len(self.engines)))
                self._changed.notify_all()
