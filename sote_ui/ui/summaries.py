"""One-line summaries of runs, the elapsed and remaining time of one, and which pass each step belongs to."""

from __future__ import annotations

from typing import Any, Callable


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
    if report.get("device"):  # several devices serve the queue: which one ran this
        parts.append(f"on {report['device']}")
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


class PassLabels:
    """Names the stage of each progress report, telling the hi-res fix's second pass from the first.

    The engine reports both passes' stages alike ("prior", "decoder"); its
    step total already counts both, so the time left covers every pass. An
    image whose prior starts again (after its decoder, or back at an earlier
    step) is in its hi-res pass.
    """

    def __init__(self):
        self._last: dict[int, tuple[str, int]] = {}  # image -> (stage, step) of its last report
        self._hires: set[int] = set()

    def stage(self, progress) -> str:
        """``prior`` / ``decoder``, or ``hi-res prior`` / ``hi-res decoder`` in an image's second pass."""
        image, stage, step = progress.image, progress.stage, progress.step
        last = self._last.get(image)
        if stage == "prior" and last is not None and (last[0] != "prior" or step <= last[1]):
            self._hires.add(image)
        self._last[image] = (stage, step)
        return f"hi-res {stage}" if image in self._hires else stage
