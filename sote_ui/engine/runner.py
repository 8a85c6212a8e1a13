"""One generate call: its jobs (one image each), their shared run context, and the order the stages run in.

The engine (:mod:`sote_ui.engine.facade`) owns the models and caches and
provides the stages; this module expands requests into jobs, counts the steps
a run needs, and drives the stages through the jobs, carrying progress,
previews, Stop, Skip and Stop-and-finish in one typed :class:`RunContext`.

Skip abandons the image in progress and goes on with the next. Stop and
finish ends the batch but still finishes the image in progress: stopped in its
prior, the decoder runs on the prior's latest predicted clean latent (cheap:
the decoder is the short stage); stopped in its decoder, that decoder ends.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable, Hashable, Protocol

from ..core.errors import Cancelled
from ..core.request import GenerationRequest
from ..core.wildcards import resolve_request
from .results import Draft, GeneratedImage, Preview, PriorOutput, Progress


class Skipped(Exception):
    """Skip was asked: the image in progress is abandoned; the run goes on with the next one."""


class PriorStopped(Exception):
    """Stop and finish was asked in an image's prior, after ``step`` of its ``steps``.

    The engine catches it where the prior runs and hands the decoder what the
    prior had reached (``latents``).
    """

    def __init__(self, step: int, steps: int):
        super().__init__(f"prior stopped at {step}/{steps}")
        self.step, self.steps = step, steps
        self.latents = None


@dataclass
class RunContext:
    """What the images of one call share: how many there are, the steps planned and done, and the callbacks.

    ``should_skip`` answers True once per press of Skip (it is consumed);
    ``should_finish`` stays True once Stop and finish was pressed.
    """

    images: int
    total: int  # steps the whole run needs
    on_progress: Callable[[Progress], None] | None = None
    should_stop: Callable[[], bool] | None = None
    on_preview: Callable[[Preview], None] | None = None
    should_skip: Callable[[], bool] | None = None
    should_finish: Callable[[], bool] | None = None
    on_image: Callable[[GeneratedImage], None] | None = None
    done: int = 0  # steps done so far
    finishing: bool = False  # Stop and finish was seen: the image in progress is the last one
    pending: int = 0  # steps of the image in progress's later pass (the hi-res fix's second), not yet begun
    _skipped_at: tuple[str, int, int] = ("", 0, 0)

    def finish_asked(self) -> bool:
        if not self.finishing and self.should_finish and self.should_finish():
            self.finishing = True
        return self.finishing

    def stop_if_asked(self, stage: str = "") -> None:
        """Stop before a stage starts; with Stop and finish only a decoder (its prior is done) may still start."""
        if self.should_stop and self.should_stop():
            raise Cancelled()
        if stage != "decoder" and self.finish_asked():
            raise Cancelled()

    def step_done(self, stage: str, step: int, steps: int, index: int) -> None:
        """Count one denoising step, report it, and stop, skip or finish here if asked."""
        self.done += 1
        if self.on_progress:
            self.on_progress(Progress(stage, step, steps, index, self.images, self.done, self.total))
        if self.should_stop and self.should_stop():
            raise Cancelled()
        if self.should_skip and self.should_skip():
            self._skipped_at = (stage, step, steps)
            raise Skipped()
        if self.finish_asked() and stage == "prior" and step < steps:
            raise PriorStopped(step, steps)

    def skipped(self, job: GenerationRequest, prior_only: bool = False) -> None:
        """``job`` was skipped: the run needs the steps it would still have run fewer."""
        stage, step, steps = self._skipped_at
        left = steps - step + (job.decoder_steps if stage == "prior" and not prior_only else 0) + self.pending
        self.pending = 0
        self.total = max(self.done, self.total - left)

    def finished(self, image: GeneratedImage) -> None:
        """An image is done: hand it on at once (the caller saves and shows it while the run goes on)."""
        if self.on_image:
            self.on_image(image)


@dataclass
class PriorRun:
    """An image's prior output, whether it came from the cache, and when its work began.

    ``stopped_at`` is ``(k, N)`` when Stop and finish ended the prior after step k of N.
    """

    output: PriorOutput
    reused: bool
    started: float
    stopped_at: tuple[int, int] | None = None


class Stages(Protocol):
    """The engine's side of a run: each stage of one image."""

    def encode(self, job: GenerationRequest): ...

    def prior(self, job: GenerationRequest, index: int, embeds, run: RunContext) -> PriorRun: ...

    def decoder(self, job: GenerationRequest, index: int, embeds, prior: PriorRun, run: RunContext) -> GeneratedImage: ...

    def draft(self, job: GenerationRequest, prior: PriorRun) -> Draft: ...

    def hires(self, job: GenerationRequest, index: int, embeds, run: RunContext) -> GeneratedImage: ...

    def release(self) -> None: ...


def expand(requests: list[GenerationRequest]) -> list[GenerationRequest]:
    """One job per image: seed, seed+1, ... of each request, each with its own wildcards picked from its seed."""
    jobs: list[GenerationRequest] = []
    for request in requests:
        request = request.with_seed()
        # Each image's wildcards are picked from its own seed: its prompt is what its metadata records.
        jobs += [resolve_request(replace(request, seed=request.seed + i, count=1)) for i in range(request.count)]
    return jobs


def planned_steps(jobs: list[GenerationRequest],
                  passes: Callable[[GenerationRequest, bool], list[tuple[Hashable, int, int]]],
                  cached: Callable[[Hashable], bool], prior_only: bool) -> int:
    """The steps the jobs need. ``passes(job, prior_only)`` gives each pass's (prior key, prior steps, decoder
    steps): one, or two with the hi-res fix. A prior shared by several jobs (or already cached) counts once
    (or not at all)."""
    total, planned = 0, set()
    for job in jobs:
        for key, prior_steps, decoder_steps in passes(job, prior_only):
            total += decoder_steps + (0 if cached(key) or key in planned else prior_steps)
            planned.add(key)
    return total


def run_in_turn(stages: Stages, jobs: list[GenerationRequest], run: RunContext, prior_only: bool,
                images: list[GeneratedImage], drafts: list[Draft]) -> None:
    """Each image through both stages before the next (or only its prior, for drafts).

    Skip drops the image in progress; Stop and finish ends the run after it.
    """
    for index, job in enumerate(jobs):
        embeds = stages.encode(job)
        try:
            if job.hires and not prior_only:
                try:
                    image = stages.hires(job, index, embeds, run)
                except Cancelled as exc:
                    if getattr(exc, "first_pass", None) is not None:  # stopped in the second pass
                        images.append(exc.first_pass)
                    raise
                images.append(image)
                run.finished(image)
                if run.finishing:
                    raise Cancelled()
                continue
            prior = stages.prior(job, index, embeds, run)
            if prior_only:
                if prior.stopped_at:  # a draft is a whole prior or nothing
                    raise Cancelled()
                drafts.append(stages.draft(job, prior))
            else:
                image = stages.decoder(job, index, embeds, prior, run)
                images.append(image)
                run.finished(image)
        except Skipped:
            stages.release()
            run.skipped(job, prior_only)
            continue
        if run.finishing:
            raise Cancelled()


def run_priors_first(stages: Stages, jobs: list[GenerationRequest], run: RunContext, images: list[GeneratedImage],
                     hold_prior, hold_decoder) -> None:
    """Every prompt, then every prior, then every decoder (model offload, several images).

    ``hold_prior``/``hold_decoder`` keep each model on the device for its
    whole stage, so it crosses once per run instead of once per image (the
    prior alone is ~7 GB in bf16). Each image keeps its own generator, so it
    is the same as when generated alone. A skipped prior has no decoder; Stop
    and finish during the priors decodes only the prior it stopped.
    """
    embeds = [stages.encode(job) for job in jobs]
    priors: list[PriorRun | None] = []
    with hold_prior():
        for index, job in enumerate(jobs):
            if index and run.finish_asked():  # asked between two priors: the one just done is finished
                priors = [None] * (index - 1) + priors[index - 1:]
                break
            try:
                priors.append(stages.prior(job, index, embeds[index], run))
            except Skipped:
                priors.append(None)
                run.skipped(job)
            if run.finishing:
                priors = [None] * index + priors[index:]  # only the image in progress is finished
                break
    with hold_decoder():
        for index, prior in enumerate(priors):
            if prior is None:
                continue
            try:
                image = stages.decoder(jobs[index], index, embeds[index], prior, run)
            except Skipped:
                run.skipped(jobs[index])
                continue
            images.append(image)
            run.finished(image)
            if run.finishing:
                break
    if run.finishing:
        raise Cancelled()
