"""The generation engine: one object owns the pipelines, the memory mode and the caches.

UI handlers and the CLI build a :class:`~sote_ui.request.GenerationRequest`
and call :meth:`Engine.generate`; nothing else touches a pipeline.

Example::

    from sote_ui.engine import Engine
    from sote_ui.metadata import png_info
    from sote_ui.request import build_request

    engine = Engine()                      # the default model; loads on first use
    result = engine.generate(build_request({"prompt": "1girl, solo, smile", "seed": 42}))
    result.images[0].image.save("out.png", pnginfo=png_info(result.images[0].parameters))
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from typing import Callable

import numpy as np
import torch
from PIL import Image

from . import __version__, devices
from .encoding import PromptEmbeds, count_tokens, encode_pair
from .errors import Cancelled, GenerationError
from .loading import (
    FP8_SKIP,  # noqa: F401  (re-exported: the layers kept out of fp8)
    QUANTO_QTYPES,
    Components,
    Folders,
    component_sizes,
    fetch,
    layerwise_skip,
    load_components,
    quanto_exclude,
    release_memory,
)
from .memory import (
    GiB,
    Mode,
    Placement,
    Plan,
    Weights,
    choose_mode,
    estimate,
    parse_mode,
    smaller_mode,
    unsupported_reason,
)
from .metadata import ModelInfo, format_parameters
from .models import ModelError, ModelSource, default_source
from .request import GenerationRequest, InputError


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
class GeneratedImage:
    image: Image.Image
    request: GenerationRequest  # seed concrete, count 1
    parameters: str  # A1111 text for the PNG
    prior_reused: bool
    seconds: float


@dataclass
class GenerationResult:
    images: list[GeneratedImage]
    counters: StepCounters  # what this call ran
    seconds: float
    warnings: list[str] = field(default_factory=list)


def _dtype(name: str) -> torch.dtype:
    return {"bfloat16": torch.bfloat16, "float32": torch.float32}[name]


def apply_mode(parts: Components, plan: Plan, torch_device: str):
    """Build the prior and decoder pipelines from ``parts`` in ``plan``'s mode.

    Uses diffusers', accelerate's and optimum-quanto's own APIs: quanto
    ``qfloat8`` weights or diffusers layerwise fp8 casting, then
    ``.to(device)``, ``enable_model_cpu_offload`` or
    ``enable_sequential_cpu_offload``. Parts that ``load_components(...,
    fp8=...)`` already made fp8 (the engine's way: lighter and cached) are
    used as they are; bf16 parts are converted here.
    """
    from diffusers import StableCascadeDecoderPipeline, StableCascadePriorPipeline

    compute = _dtype(plan.compute_dtype)
    if plan.mode.weights == Weights.FP8 and parts.fp8 != plan.fp8_backend:
        if plan.fp8_backend in QUANTO_QTYPES:
            from optimum.quanto import freeze, qtypes, quantize

            for kind in ("text_encoder", "prior", "decoder"):
                module = getattr(parts, kind)
                quantize(module, weights=qtypes[QUANTO_QTYPES[plan.fp8_backend]], exclude=quanto_exclude(kind) or None)
                freeze(module)
                release_memory()
        else:
            for module in (parts.prior, parts.decoder):
                module.enable_layerwise_casting(storage_dtype=torch.float8_e4m3fn, compute_dtype=compute,
                                                skip_modules_pattern=layerwise_skip())
    prior_pipe = StableCascadePriorPipeline(
        tokenizer=parts.tokenizer, text_encoder=parts.text_encoder, prior=parts.prior,
        scheduler=parts.prior_scheduler,
    )
    # The decoder takes the prior's embeddings; its own text encoder never runs.
    decoder_pipe = StableCascadeDecoderPipeline(
        decoder=parts.decoder, tokenizer=parts.tokenizer, text_encoder=None,
        scheduler=parts.decoder_scheduler, vqgan=parts.vqgan,
    )
    for pipe in (prior_pipe, decoder_pipe):
        pipe.set_progress_bar_config(disable=True)
        if plan.mode.placement == Placement.DEVICE:
            pipe.to(torch_device)
        elif plan.mode.placement == Placement.OFFLOAD:
            pipe.enable_model_cpu_offload(device=torch_device)
        else:
            pipe.enable_sequential_cpu_offload(device=torch_device)
    return prior_pipe, decoder_pipe


def weight_bytes(module: torch.nn.Module) -> int:
    """Bytes the module's weights take as stored (quantized tensors counted by their data)."""
    total = 0
    for tensor in list(module.parameters()) + list(module.buffers()):
        inner = [getattr(tensor, name) for name in ("_data", "_scale") if hasattr(tensor, name)]
        if inner:
            total += sum(t.numel() * t.element_size() for t in inner)
        else:
            total += tensor.numel() * tensor.element_size()
    return total


def _is_oom(exc: BaseException) -> bool:
    if isinstance(exc, torch.OutOfMemoryError):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and ("out of memory" in text or "not enough memory" in text)


class Engine:
    """Owns the model: loading, memory mode, caches, and generation.

    Thread-safe: one generation or mode switch at a time. Loading happens on
    the first :meth:`generate` (or an explicit :meth:`load`), never at import.
    """

    def __init__(self, source: ModelSource | None = None, mode: str | Mode = "auto", device: str | None = None,
                 *, prior_cache_size: int = 16, text_cache_size: int = 16):
        self.source = source or default_source()
        self.requested_mode = parse_mode(mode)
        self.requested_device = device
        self.counters = StepCounters()
        self.state = "not loaded"
        self.error: str | None = None
        self.plan: Plan | None = None
        self.device: devices.DeviceInfo | None = None
        self.folders: Folders | None = None
        self.sizes = None
        self.load_notes: list[str] = []  # what the last load did (fp8 cache built or used, and its size)
        self._lock = threading.RLock()
        self._prior_pipe = None
        self._decoder_pipe = None
        self._text_cache: OrderedDict = OrderedDict()
        self._prior_cache: OrderedDict = OrderedDict()
        self._prior_cache_size = prior_cache_size
        self._text_cache_size = text_cache_size
        self._stage = ""

    # 1. Loading and memory modes -------------------------------------------------

    @property
    def loaded(self) -> bool:
        return self._prior_pipe is not None

    def model_info(self) -> ModelInfo:
        return ModelInfo(self.source.prior, self.source.decoder, self.plan.mode.value if self.plan else "")

    def load(self, on_status: Callable[[str], None] | None = None) -> Plan:
        """Fetch (download on first use) and load the pair in the requested mode."""
        with self._lock:
            if self.loaded:
                return self.plan
            return self._load(self.requested_mode, on_status)

    def _load(self, mode: Mode, on_status) -> Plan:
        say = on_status or (lambda message: None)
        self.state = "loading"
        self.error = None
        try:
            self.device = devices.detect_device(self.requested_device)
            if self.folders is None:
                say(f"fetching {self.source.label} (downloads on first use)")
                self.folders = fetch(self.source)
                self.sizes = component_sizes(self.folders)
            plan = choose_mode(mode, self.device, self.sizes)
            say(f"loading weights: {plan.reason}")
            parts = load_components(self.folders, _dtype(plan.compute_dtype), fp8=plan.fp8_backend, on_status=say)
            say(f"applying {plan.mode.value}")
            try:
                self._prior_pipe, self._decoder_pipe = apply_mode(parts, plan, self.device.torch_device)
            except Exception as exc:
                if _is_oom(exc):
                    raise GenerationError(
                        f"{plan.mode.value} does not fit in {self.device.describe()}; try {self._smaller_mode(plan)}"
                    ) from None
                raise
            self.plan = plan
            self.requested_mode = mode
            self.state = "ready"
            self.load_notes = list(parts.notes)
            del parts
            release_memory()  # hand what loading freed back to the OS
            say(f"ready: {plan.reason}" + "".join(f"; {note}" for note in self.load_notes))
            return plan
        except (InputError, GenerationError) as exc:
            self._drop()
            self.state = "error"
            self.error = str(exc)
            raise
        except Exception as exc:  # an unexpected load failure still leaves a usable engine
            self._drop()
            self.state = "error"
            self.error = f"loading the model failed: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
            raise ModelError(self.error) from exc

    def _drop(self) -> None:
        self._prior_pipe = None
        self._decoder_pipe = None
        self._text_cache.clear()
        self._prior_cache.clear()
        if self.device is not None:
            devices.free_memory(self.device)

    def unload(self) -> None:
        with self._lock:
            self._drop()
            self.plan = None
            self.state = "not loaded"

    def set_mode(self, mode: str | Mode, on_status: Callable[[str], None] | None = None) -> Plan:
        """Switch memory mode at runtime: free the old mode's memory, reload in the new one."""
        mode = parse_mode(mode)
        with self._lock:
            device = self.device or devices.detect_device(self.requested_device)
            why = unsupported_reason(mode, device)
            if why:
                raise InputError(why)
            self._drop()
            self.plan = None
            return self._load(mode, on_status)

    def mode_table(self, width: int = 1024, height: int = 1536) -> list[tuple[str, str, str]]:
        """(mode, estimated need, note) for every mode on this device."""
        device = self.device or devices.detect_device(self.requested_device)
        rows = []
        for mode in Mode:
            if mode == Mode.AUTO:
                continue
            why = unsupported_reason(mode, device)
            need = f"~{estimate(mode, self.sizes, width, height, device) / GiB:.1f} GiB" if self.sizes else "?"
            rows.append((mode.value, need, why or ""))
        return rows

    def _smaller_mode(self, plan: Plan) -> str:
        smaller = smaller_mode(plan.mode, self.device, self.sizes) if self.sizes else None
        return smaller.value if smaller else "a smaller image size"

    # 2. Prompt encoding ----------------------------------------------------------

    def count_tokens(self, text: str) -> int | None:
        """Tokens of ``text`` with the loaded tokenizer (None before loading)."""
        if not self.loaded:
            return None
        return count_tokens(self._prior_pipe.tokenizer, text)

    def _embeds(self, prompt: str, negative: str) -> PromptEmbeds:
        key = (prompt, negative)
        if key in self._text_cache:
            self._text_cache.move_to_end(key)
            self.counters.text_cache_hits += 1
            return self._text_cache[key]
        self._stage = "text encoder"
        pipe = self._prior_pipe
        embeds = encode_pair(pipe.tokenizer, pipe.text_encoder, prompt, negative, pipe._execution_device)
        if self.plan.mode.placement == Placement.OFFLOAD:
            pipe.maybe_free_model_hooks()  # don't keep the text encoder on the GPU while the decoder runs
        self.counters.text_encodes += 1
        self._text_cache[key] = embeds
        while len(self._text_cache) > self._text_cache_size:
            self._text_cache.popitem(last=False)
        return embeds

    # 3. The two denoising stages --------------------------------------------------

    def _prior(self, request: GenerationRequest, embeds: PromptEmbeds, step) -> tuple[torch.Tensor, bool]:
        key = self._prior_key(request)
        if key in self._prior_cache:
            self._prior_cache.move_to_end(key)
            self.counters.prior_cache_hits += 1
            return self._prior_cache[key], True
        self._stage = "prior"
        output = self._prior_pipe(
            **embeds.conditioning(guided=request.prior_cfg > 1),
            width=request.width,
            height=request.height,
            num_inference_steps=request.prior_steps,
            guidance_scale=request.prior_cfg,
            generator=torch.Generator("cpu").manual_seed(request.seed),
            output_type="pt",
            callback_on_step_end=step,
        )
        latents = output.image_embeddings
        if not torch.isfinite(latents).all():
            raise GenerationError(
                "the prior produced NaN values; this happens in fp16, or when a GPU emulates bf16 badly: "
                "use an fp32 mode (--mode fp32 or offload-fp32)"
            )
        self.counters.prior_runs += 1
        self._prior_cache[key] = latents
        while len(self._prior_cache) > self._prior_cache_size:
            self._prior_cache.popitem(last=False)
        return latents, False

    def _decoder(self, request: GenerationRequest, embeds: PromptEmbeds, latents: torch.Tensor, step) -> Image.Image:
        self._stage = "decoder"
        output = self._decoder_pipe(
            image_embeddings=latents,
            **embeds.conditioning(guided=request.decoder_cfg > 1),
            num_inference_steps=request.decoder_steps,
            guidance_scale=request.decoder_cfg,
            generator=torch.Generator("cpu").manual_seed(request.seed),
            output_type="np",
            callback_on_step_end=step,
        )
        pixels = output.images[0]
        if not np.isfinite(pixels).all():
            raise GenerationError(
                "the decoder produced NaN values (the image would be black); this happens in fp16 or when a GPU "
                "emulates bf16 badly: use an fp32 mode (--mode fp32 or offload-fp32)"
            )
        self.counters.decoder_runs += 1
        return Image.fromarray((np.clip(pixels, 0.0, 1.0) * 255).round().astype(np.uint8))

    # 4. Generation ----------------------------------------------------------------

    def generate(self, request: GenerationRequest, on_progress: Callable[[Progress], None] | None = None,
                 should_stop: Callable[[], bool] | None = None) -> GenerationResult:
        """Generate ``request.count`` images with seeds seed, seed+1, ...

        Raises InputError (bad input), ModelError (model can't load),
        GenerationError (out of memory, NaN output) or Cancelled.
        """
        return self.generate_many([request.with_seed()], on_progress, should_stop)

    def generate_many(self, requests: list[GenerationRequest],
                      on_progress: Callable[[Progress], None] | None = None,
                      should_stop: Callable[[], bool] | None = None) -> GenerationResult:
        """Generate several requests in order, each expanded by its ``count``.

        Runs sharing a prior (same prompt, size, seed and prior settings)
        compute it once; order them so they are adjacent to reuse it.
        """
        with self._lock:
            start = time.perf_counter()
            before = self.counters.snapshot()
            self.load()
            jobs: list[GenerationRequest] = []
            for request in requests:
                request = request.with_seed()
                jobs += [replace(request, seed=request.seed + i, count=1) for i in range(request.count)]
            # A prior shared by several jobs runs once: count its steps once.
            total, planned = 0, set()
            for job in jobs:
                key = self._prior_key(job)
                total += job.decoder_steps + (0 if key in self._prior_cache or key in planned else job.prior_steps)
                planned.add(key)
            done = [0]
            images: list[GeneratedImage] = []
            try:
                for index, job in enumerate(jobs):
                    images.append(self._one(job, index, len(jobs), total, done, on_progress, should_stop))
            except Cancelled as exc:
                self._release_models()
                exc.images = images  # the finished images are kept
                raise
            except Exception as exc:
                self._release_models()
                if not _is_oom(exc):
                    raise
                stage = self._stage or "generation"
                self._prior_cache.clear()
                exc = None  # drop the frames holding activations before emptying the cache
                devices.free_memory(self.device)
                raise GenerationError(
                    f"out of GPU memory in the {stage} ({self.plan.mode.value}); memory was freed: "
                    f"switch to {self._smaller_mode(self.plan)} or a smaller size"
                ) from None
            finally:
                self._stage = ""
            return GenerationResult(images, self.counters.since(before), time.perf_counter() - start)

    def _release_models(self) -> None:
        """After a stop or a failure mid-pipeline, move offloaded models back to the CPU.

        diffusers frees offloaded models only at the end of a pipeline call, and
        each pipeline's hooks only evict its own models: without this, a decoder
        stopped mid-run would stay on the GPU next to the next job's prior.
        """
        if self.plan is not None and self.plan.mode.placement == Placement.OFFLOAD:
            for pipe in (self._prior_pipe, self._decoder_pipe):
                if pipe is not None:
                    pipe.maybe_free_model_hooks()

    @staticmethod
    def _prior_key(request: GenerationRequest) -> tuple:
        return (request.composed_prompt(), request.negative_prompt, request.width, request.height, request.seed,
                request.prior_steps, float(request.prior_cfg))

    def _one(self, job, index, count, total, done, on_progress, should_stop) -> GeneratedImage:
        started = time.perf_counter()
        if should_stop and should_stop():
            raise Cancelled()

        def stepper(stage: str, steps: int):
            def callback(pipe, i, t, kwargs):
                if stage == "prior":
                    self.counters.prior_steps += 1
                else:
                    self.counters.decoder_steps += 1
                    if i + 1 == steps:
                        self._stage = "VQGAN"
                done[0] += 1
                if on_progress:
                    on_progress(Progress(stage, i + 1, steps, index, count, done[0], total))
                if should_stop and should_stop():
                    raise Cancelled()
                return {}

            return callback

        embeds = self._embeds(job.composed_prompt(), job.negative_prompt)
        latents, reused = self._prior(job, embeds, stepper("prior", job.prior_steps))
        image = self._decoder(job, embeds, latents, stepper("decoder", job.decoder_steps))
        parameters = format_parameters(job, job.seed, self.model_info(),
                                       extra={"Version": f"sote-studio {__version__}"})
        return GeneratedImage(image, job, parameters, reused, time.perf_counter() - started)
