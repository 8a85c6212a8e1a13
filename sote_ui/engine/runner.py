"""One generate call: its jobs (one image each), their shared run context, and the order the stages run in.

The engine (:mod:`sote_ui.engine.facade`) owns the models and caches and
provides the stages; this module expands requests into jobs, counts the steps
a run needs, and drives the stages through the jobs, carrying progress,
previews and Stop in one typed :class:`RunContext`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable, Hashable, Protocol

from ..core.errors import Cancelled
from ..core.request import GenerationRequest
from ..core.wildcards import resolve_request
from .results import Draft, GeneratedImage, Preview, PriorOutput, Progress


@dataclass
class RunContext:
    """What the images of one call share: how many there are, the steps planned and done, and the callbacks."""

    images: int
    total: int  # steps the whole run needs
    on_progress: Callable[[Progress], None] | None = None
    should_stop: Callable[[], bool] | None = None
    on_preview: Callable[[Preview], None] | None = None
    done: int = 0  # steps done so far

    def stop_if_asked(self) -> None:
        if self.should_stop and self.should_stop():
            raise Cancelled()

    def step_done(self, stage: str, step: int, steps: int, index: int) -> None:
        """Count one denoising step, report it, and stop here if asked."""
        self.done += 1
        if self.on_progress:
            self.on_progress(Progress(stage, step, steps, index, self.images, self.done, self.total))
        self.stop_if_asked()


@dataclass
class PriorRun:
    """An image's prior output, whether it came from the cache, and when its work began."""

    output: PriorOutput
    reused: bool
    started: float


class Stages(Protocol):
    """The engine's side of a run: each stage of one image."""

    def encode(self, job: GenerationRequest): ...

    def prior(self, job: GenerationRequest, index: int, embeds, run: RunContext) -> PriorRun: ...

    def decoder(self, job: GenerationRequest, index: int, embeds, prior: PriorRun, run: RunContext) -> GeneratedImage: ...

    def draft(self, job: GenerationRequest, prior: PriorRun) -> Draft: ...


def expand(requests: list[GenerationRequest]) -> list[GenerationRequest]:
    """One job per image: seed, seed+1, ... of each request, each with its own wildcards picked from its seed."""
    jobs: list[GenerationRequest] = []
    for request in requests:
        request = request.with_seed()
        # Each image's wildcards are picked from its own seed: its prompt is what its metadata records.
        jobs += [resolve_request(replace(request, seed=request.seed + i, count=1)) for i in range(request.count)]
    return jobs


def planned_steps(jobs: list[GenerationRequest], prior_key: Callable[[GenerationRequest], Hashable],
                  cached: Callable[[Hashable], bool], prior_only: bool) -> int:
    """The steps the jobs need: a prior shared by several jobs (or already cached) counts once (or not at all)."""
    total, planned = 0, set()
    for job in jobs:
        key = prior_key(job)
        total += (0 if prior_only else job.decoder_steps) + (0 if cached(key) or key in planned else job.prior_steps)
        planned.add(key)
    return total


def run_in_turn(stages: Stages, jobs: list[GenerationRequest], run: RunContext, prior_only: bool,
                images: list[GeneratedImage], drafts: list[Draft]) -> None:
    """Each image through both stages before the next (or only its prior, for drafts)."""
    for index, job in enumerate(jobs):
        embeds = stages.encode(job)
        prior = stages.prior(job, index, embeds, run)
        if prior_only:
            drafts.append(stages.draft(job, prior))
        else:
            images.append(stages.decoder(job, index, embeds, prior, run))


def run_priors_first(stages: Stages, jobs: list[GenerationRequest], run: RunContext, images: list[GeneratedImage],
                     hold_prior, hold_decoder) -> None:
    """Every prompt, then every prior, then every decoder (model offload, several images).

    ``hold_prior``/``hold_decoder`` keep each model on the device for its
    whole stage, so it crosses once per run instead of once per image (the
    prior alone is ~7 GB in bf16). Each image keeps its own generator, so it
    is the same as when generated alone.
    """
    embeds = [stages.encode(job) for job in jobs]
    with hold_prior():
        priors = [stages.prior(job, index, embeds[index], run) for index, job in enumerate(jobs)]
    with hold_decoder():
        for index, job in enumerate(jobs):
            images.append(stages.decoder(job, index, embeds[index], priors[index], run))

