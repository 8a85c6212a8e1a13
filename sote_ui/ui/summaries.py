"""One-line summaries of runs, and the elapsed and remaining time of one."""

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
