"""The generation engine: one object owns the pipelines, the memory mode and the caches.

UI handlers and the CLI build a :class:`~sote_ui.core.request.GenerationRequest`
and call :meth:`Engine.generate`; nothing else touches a pipeline.

Example::

    from sote_ui.engine import Engine
    from sote_ui.core.metadata import png_info
    from sote_ui.core.request import build_request

    engine = Engine()                      # the default model; loads on first use
    result = engine.generate(build_request({"prompt": "1girl, solo, smile", "seed": 42}))
    result.images[0].image.save("out.png", pnginfo=png_info(result.images[0].parameters))
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from PIL import Image

from .. import __version__
from ..core.errors import Cancelled, GenerationError
from ..core.memory import (
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
from ..core.metadata import ModelInfo, format_parameters
from ..core.request import GenerationRequest, InputError, Reference
from ..core.wildcards import resolve_request
from . import devices
from .encoding import TRAINED_CHUNKS, PromptEmbeds, check_chunks, chunk_token_counts, count_tokens, encode_pair
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
from .models import ModelError, ModelSource, default_source


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


@dataclass
class GenerationResult:
    images: list[GeneratedImage]
    counters: StepCounters  # what this call ran
    seconds: float
    warnings: list[str] = field(default_factory=list)
    drafts: list[Draft] = field(default_factory=list)  # prior-only runs


PREVIEW_EVERY = 4  # prior steps between two live previews (the last step always gives one)


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
                quantize(module, weights=qtypes[QUANTO_QTYPES[plan.fp8_backend]],
                         exclude=quanto_exclude(kind) or None)
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


def _forget_frames(exc: BaseException) -> None:
    """Clear the locals of every frame an exception (and those it chains) keeps alive.

    A traceback holds each frame of the failed call, and with them every
    activation the pipeline had made: they are only freed once the frames are.
    """
    import traceback

    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        traceback.clear_frames(exc.__traceback__)
        exc = exc.__cause__ or exc.__context__


def _offload_hooks(pipe) -> list:
    """accelerate's CPU-offload hooks of the pipeline's models (one per model under model offload)."""
    found = []
    for module in pipe.components.values():
        hook = getattr(module, "_hf_hook", None)
        for one in getattr(hook, "hooks", None) or ([hook] if hook is not None else []):
            if hasattr(one, "prev_module_hook"):
                found.append(one)
    return found


@contextmanager
def _held_on_device(pipe):
    """Keep an offloaded pipeline's models on the device across several calls; offload once at the end.

    With model CPU offload, diffusers sends every model back to the CPU at the
    end of each pipeline call, and each model's hook sends the previous one in
    the pipeline back when it starts (the decoder when the VQGAN decodes), so
    each image's call moves the big model over again. Both are paused here.
    """
    saved = pipe.__dict__.get("maybe_free_model_hooks")
    pipe.maybe_free_model_hooks = lambda: None
    chained = [(hook, hook.prev_module_hook) for hook in _offload_hooks(pipe)]
    for hook, _ in chained:
        hook.prev_module_hook = None
    try:
        yield
    finally:
        for hook, previous in chained:
            hook.prev_module_hook = previous
        if saved is None:
            del pipe.maybe_free_model_hooks
        else:
            pipe.maybe_free_model_hooks = saved
        pipe.maybe_free_model_hooks()


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
        self._last_run = ""  # the stage that ran last in this call, to count switches
        self.stage_order: list[str] = []  # "prior 0", "decoder 0", ... in the order the last call ran them
        self._image_encoder = None
        self._image_embeds: OrderedDict = OrderedDict()  # content hash -> (1, 1, dim) fp32 embedding
        self._hashes: dict[str, tuple[int, int, str]] = {}  # path -> (mtime_ns, size, sha256)
        self.preview_kind = "auto"  # see previews.KINDS
        self.preview_every = PREVIEW_EVERY
        self._preview_decoder = None
        self._preview_kind_loaded = None

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
            oom = False
            try:
                self._prior_pipe, self._decoder_pipe = apply_mode(parts, plan, self.device.torch_device)
            except Exception as exc:
                if not _is_oom(exc):
                    raise
                _forget_frames(exc)
                oom = True
            if oom:  # outside the handler, so the failed call's frames are gone before memory is freed
                del parts
                self._drop()
                raise GenerationError(
                    f"{plan.mode.value} does not fit in {self.device.describe()}; try {self._smaller_mode(plan)}")
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
        self._image_encoder = None
        self._text_cache.clear()
        self._prior_cache.clear()
        self._image_embeds.clear()
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

    def chunk_counts(self, text: str) -> list[int] | None:
        """Tokens in each 75-token chunk of ``text``, as the encoder splits it (None before loading)."""
        if not self.loaded:
            return None
        return chunk_token_counts(self._prior_pipe.tokenizer, text)

    def _check_prompts(self, jobs: list[GenerationRequest]) -> list[str]:
        """Refuse prompts past the chunk cap before any GPU work; warn past the trained 3 chunks."""
        warnings: list[str] = []
        tokenizer = self._prior_pipe.tokenizer
        for prompt, negative in dict.fromkeys((job.composed_prompt(), job.negative_prompt) for job in jobs):
            chunks = len(check_chunks(tokenizer, prompt, "the prompt"))
            check_chunks(tokenizer, negative, "the negative prompt")
            if chunks > TRAINED_CHUNKS:
                warnings.append(f"the prompt uses {chunks} chunks of 75 tokens; the model was trained with "
                                f"{TRAINED_CHUNKS}, so tags past the third chunk count less reliably")
        return warnings

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

    # 2b. Reference images (image remix) ----------------------------------------------

    def _hash(self, path: str) -> str:
        from .references import content_hash

        try:
            stat = Path(path).expanduser().stat()
            known = self._hashes.get(path)
            if known and known[:2] == (stat.st_mtime_ns, stat.st_size):
                return known[2]
            digest = content_hash(Path(path).expanduser())
        except OSError:
            raise InputError(f"reference image {Path(path).name[:80]!r} can't be read") from None
        self._hashes[path] = (stat.st_mtime_ns, stat.st_size, digest)
        return digest

    def _active_references(self, request: GenerationRequest) -> list[tuple[Reference, str]]:
        """The references that act (strength above 0), each with its content hash."""
        return [(ref, self._hash(ref.path)) for ref in request.references if ref.strength > 0]

    def _encoder(self):
        if self._image_encoder is None:
            from .references import load_image_encoder

            self._stage = "image encoder"
            encoder = load_image_encoder(self.folders.prior, _dtype(self.plan.compute_dtype))
            wanted = self._prior_pipe.prior.config.clip_image_in_channels
            if encoder.dim != wanted:
                raise ModelError(f"the image encoder {encoder.source} gives {encoder.dim}-wide embeddings; this prior "
                                 f"takes {wanted}")
            if self.plan.mode.placement == Placement.DEVICE:
                encoder.model.to(self.device.torch_device)  # offload modes move it only while it encodes
            self._image_encoder = encoder
        return self._image_encoder

    def _prepare_references(self, jobs: list[GenerationRequest]) -> None:
        """Encode every reference image the jobs use (once per content), before any denoising."""
        from ..core.outputs import open_image

        for job in jobs:
            for ref, digest in self._active_references(job):
                if digest in self._image_embeds:
                    self._image_embeds.move_to_end(digest)
                    continue
                try:
                    image = open_image(ref.path)
                except InputError as exc:
                    raise InputError(f"reference image {Path(ref.path).name[:80]!r}: {exc}") from None
                embedding = self._encoder().embed(image, self.device.torch_device)
                self.counters.image_encodes += 1
                self._image_embeds[digest] = embedding
                while len(self._image_embeds) > 4 * self._prior_cache_size:
                    self._image_embeds.popitem(last=False)

    def _reference_embeds(self, request: GenerationRequest) -> torch.Tensor | None:
        """The scaled, concatenated embeddings of the request's active references, or None."""
        active = self._active_references(request)
        if not active:
            return None
        pipe = self._prior_pipe
        embeds = torch.cat([self._image_embeds[digest] * ref.strength for ref, digest in active], dim=1)
        return embeds.to(device=pipe._execution_device, dtype=pipe.prior.dtype)

    def _reference_note(self, request: GenerationRequest) -> str:
        """How the PNG metadata names the references: file name, content hash, strength."""
        return "; ".join(f"{Path(ref.path).name} sha256:{self._hash(ref.path)[:16]} x{ref.strength:g}"
                         for ref in request.references)

    # 2c. Live previews -----------------------------------------------------------------

    def previews(self):
        """The preview decoder for ``preview_kind`` (None when previews are off); made on first use."""
        if self._preview_kind_loaded != self.preview_kind:
            from .previews import PreviewDecoder

            self._preview_decoder = PreviewDecoder.create(self.preview_kind, self.folders.prior if self.folders
                                                          else None)
            self._preview_kind_loaded = self.preview_kind
        return self._preview_decoder

    def _preview(self, latents: torch.Tensor, step: int, steps: int, index: int) -> Preview | None:
        decoder = self.previews()
        if decoder is None:
            return None
        self.counters.previews += 1
        return Preview(decoder.decode(latents), step, steps, index, decoder.kind)

    # 3. The two denoising stages --------------------------------------------------

    def _prior(self, request: GenerationRequest, embeds: PromptEmbeds, step) -> tuple[PriorOutput, bool]:
        key = self._prior_key(request)
        if key in self._prior_cache:
            self._prior_cache.move_to_end(key)
            self.counters.prior_cache_hits += 1
            return self._prior_cache[key], True
        self._stage = "prior"
        self._switch_to("prior")
        generator = torch.Generator("cpu").manual_seed(request.seed)
        output = self._prior_pipe(
            **embeds.conditioning(guided=request.prior_cfg > 1),
            image_embeds=self._reference_embeds(request),
            width=request.width,
            height=request.height,
            num_inference_steps=request.prior_steps,
            guidance_scale=request.prior_cfg,
            generator=generator,
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
        prior = PriorOutput(latents, generator.get_state())
        self._prior_cache[key] = prior
        while len(self._prior_cache) > self._prior_cache_size:
            self._prior_cache.popitem(last=False)
        return prior, False

    def _decoder(self, request: GenerationRequest, embeds: PromptEmbeds, prior: PriorOutput, step) -> Image.Image:
        self._stage = "decoder"
        self._switch_to("decoder")
        generator = torch.Generator("cpu")
        generator.set_state(prior.generator_state)  # the image's one generator, where the prior left it
        output = self._decoder_pipe(
            image_embeddings=prior.latents,
            **embeds.conditioning(guided=request.decoder_cfg > 1),
            num_inference_steps=request.decoder_steps,
            guidance_scale=request.decoder_cfg,
            generator=generator,
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

    def _switch_to(self, stage: str) -> None:
        if self._last_run and self._last_run != stage:
            self.counters.stage_switches += 1
        self._last_run = stage

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
                      should_stop: Callable[[], bool] | None = None,
                      on_preview: Callable[[Preview], None] | None = None,
                      prior_only: bool = False) -> GenerationResult:
        """Generate several requests in order, each expanded by its ``count``.

        Runs sharing a prior (same prompt, size, seed and prior settings)
        compute it once; order them so they are adjacent to reuse it.
        ``on_preview`` gets a look at the prior's latent every
        ``preview_every`` steps. With ``prior_only`` only the priors run (and
        are cached): the result's ``drafts`` hold each one's preview, and a
        later run of the same request finishes it with the decoder alone.
        """
        with self._lock:
            start = time.perf_counter()
            before = self.counters.snapshot()
            self.load()
            jobs: list[GenerationRequest] = []
            for request in requests:
                request = request.with_seed()
                # Each image's wildcards are picked from its own seed: its prompt is what its metadata records.
                jobs += [resolve_request(replace(request, seed=request.seed + i, count=1))
                         for i in range(request.count)]
            warnings = self._check_prompts(jobs)
            self._prepare_references(jobs)
            # A prior shared by several jobs runs once: count its steps once.
            total, planned = 0, set()
            for job in jobs:
                key = self._prior_key(job)
                total += (0 if prior_only else job.decoder_steps) + (
                    0 if key in self._prior_cache or key in planned else job.prior_steps)
                planned.add(key)
            done = [0]
            images: list[GeneratedImage] = []
            drafts: list[Draft] = []
            self.stage_order = []
            self._last_run = ""
            run = (len(jobs), total, done, on_progress, should_stop, on_preview)
            oom_stage = None
            try:
                if self.plan.mode.placement == Placement.OFFLOAD and len(jobs) > 1 and not prior_only:
                    self._priors_then_decoders(jobs, run, images)
                else:
                    for index, job in enumerate(jobs):
                        item = self._one(job, index, *run, prior_only)
                        (drafts if prior_only else images).append(item)
            except Cancelled as exc:
                self._release_models()
                exc.images = images  # the finished images are kept
                raise
            except Exception as exc:
                self._release_models()
                if not _is_oom(exc):
                    raise
                oom_stage = self._stage or "generation"
                _forget_frames(exc)  # the failed step's activations live in these frames
            finally:
                self._stage = ""
            if oom_stage is not None:
                # Out of the handler: the exception and its frames are gone, so this frees the activations
                # too, before the message goes out.
                self._prior_cache.clear()
                devices.free_memory(self.device)
                release_memory()
                raise GenerationError(
                    f"out of GPU memory in the {oom_stage} ({self.plan.mode.value}); memory was freed: "
                    f"switch to {self._smaller_mode(self.plan)} or a smaller size")
            return GenerationResult(images, self.counters.since(before), time.perf_counter() - start, warnings,
                                    drafts)

    def _priors_then_decoders(self, jobs: list[GenerationRequest], run: tuple, images: list) -> None:
        """Model offload, several images: every prompt, then every prior, then every decoder.

        Each model crosses to the device once for the whole run instead of
        once per image (the prior alone is ~7 GB in bf16). Each image keeps its
        own generator, so it is the same as when generated alone.
        """
        embeds = [self._embeds(job.composed_prompt(), job.negative_prompt) for job in jobs]
        with _held_on_device(self._prior_pipe):
            priors = [self._run_prior(job, index, embeds[index], run) for index, job in enumerate(jobs)]
        with _held_on_device(self._decoder_pipe):
            for index, job in enumerate(jobs):
                images.append(self._finish(job, index, embeds[index], *priors[index], run))

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

    def _prior_key(self, request: GenerationRequest) -> tuple:
        """What decides the prior's output. Without guidance (CFG <= 1) neither the negative
        prompt nor the CFG value is read, so they are left out and an unguided prior is reused.
        Reference images count by content and strength, not by file name."""
        guided = request.prior_cfg > 1
        references = tuple((digest, ref.strength) for ref, digest in self._active_references(request))
        return (request.composed_prompt(), request.negative_prompt if guided else None, request.width,
                request.height, request.seed, request.prior_steps, float(request.prior_cfg) if guided else None,
                references)

    def _one(self, job, index, count, total, done, on_progress, should_stop, on_preview=None,
             prior_only=False) -> GeneratedImage | Draft:
        run = (count, total, done, on_progress, should_stop, on_preview)
        embeds = self._embeds(job.composed_prompt(), job.negative_prompt)
        prior, reused, started = self._run_prior(job, index, embeds, run)
        if prior_only:
            decoder = self.previews()
            from .previews import PreviewDecoder

            sketch = (decoder or PreviewDecoder("fast")).decode(prior.latents)
            return Draft(job, sketch, reused)
        return self._finish(job, index, embeds, prior, reused, started, run)

    def _run_prior(self, job, index, embeds, run) -> tuple[PriorOutput, bool, float]:
        """The image's prior (or its cached one): ``(output, reused, start time)``."""
        if run[4] and run[4]():
            raise Cancelled()
        started = time.perf_counter()
        self.stage_order.append(f"prior {index}")
        prior, reused = self._prior(job, embeds, self._stepper("prior", job.prior_steps, index, run))
        return prior, reused, started

    def _finish(self, job, index, embeds, prior, reused, started, run) -> GeneratedImage:
        """The image's decoder and VQGAN, and its PNG parameters."""
        if run[4] and run[4]():
            raise Cancelled()
        self.stage_order.append(f"decoder {index}")
        image = self._decoder(job, embeds, prior, self._stepper("decoder", job.decoder_steps, index, run))
        extra = {"Reference images": self._reference_note(job)} if job.references else {}
        extra["Version"] = f"sote-studio {__version__}"
        parameters = format_parameters(job, job.seed, self.model_info(), extra=extra)
        return GeneratedImage(image, job, parameters, reused, time.perf_counter() - started)

    def _stepper(self, stage: str, steps: int, index: int, run: tuple):
        """The step callback of one stage of one image: counters, progress, previews and stop."""
        count, total, done, on_progress, should_stop, on_preview = run

        def callback(pipe, i, t, kwargs):
            if stage == "prior":
                self.counters.prior_steps += 1
                if on_preview and ((i + 1) % self.preview_every == 0 or i + 1 == steps):
                    preview = self._preview(kwargs["latents"], i + 1, steps, index)
                    if preview is not None:
                        on_preview(preview)
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

