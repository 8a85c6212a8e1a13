"""What the engine hands back: images, drafts, previews, progress, and counts of the work that really ran."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch
from PIL import Image

from ..core.request import GenerationRequest


@dataclass
class StepCounters:
    """How much work really ran; tests and the compare report read these."""

    text_encodes: int = 0
    prior_runs: int = 0
    prior_steps: int = 0
    decoder_runs: int = 0
    decoder_steps: int = 0
    prior_cache_hits: int = 0
    text_cache_hits: int = 0
    image_encodes: int = 0
    start_encodes: int = 0  # start images (image to image, the hi-res fix's second pass) encoded
    previews: int = 0
    stage_switches: int = 0  # runs of one stage (prior, decoder) right after the other stage's

    def snapshot(self) -> "StepCounters":
        return replace(self)

    def since(self, earlier: "StepCounters") -> "StepCounters":
        return StepCounters(**{k: getattr(self, k) - getattr(earlier, k) for k in self.__dataclass_fields__})


@dataclass(frozen=True)
class Progress:
    stage: str  # "prior", "decoder"
    step: int  # steps done in this stage
    steps: int  # steps of this stage
    image: int  # 0-based index of the image in the run
    images: int
    done: int  # steps done in the whole run
    total: int  # steps the whole run needs


@dataclass
class PriorOutput:
    """A prior run's stage-C latents, and the state of the image's generator after it.

    One generator runs through both stages of an image (as in diffusers'
    combined pipeline); keeping its state with a cached prior lets a
    decoder-only change reuse the prior and still draw the same decoder noise.
    """

    latents: torch.Tensor
    generator_state: torch.Tensor


@dataclass(frozen=True)
class Preview:
    """A look at the prior's latent while it denoises (or, for a draft, when it is done)."""

    image: Image.Image
    step: int  # prior steps done
    steps: int
    index: int  # 0-based index of the image in the run
    kind: str  # "previewer" or "fast"


@dataclass
class Draft:
    """A prior-only run: the stage-C latent is cached; finishing it runs only the decoder."""

    request: GenerationRequest  # seed concrete, count 1
    preview: Image.Image
    prior_reused: bool


@dataclass
class GeneratedImage:
    image: Image.Image
    request: GenerationRequest  # seed concrete, count 1
    parameters: str  # A1111 text for the PNG
    prior_reused: bool
    seconds: float
    prior_stopped_at: tuple[int, int] | None = None  # (k, N): Stop and finish ended its prior after step k of N


@dataclass
class GenerationResult:
    images: list[GeneratedImage]
    counters: StepCounters  # what this call ran
    seconds: float
    warnings: list[str] = field(default_factory=list)
    drafts: list[Draft] = field(default_factory=list)  # prior-only runs
