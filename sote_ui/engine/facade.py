"""The generation engine: one object owns the pipelines, the memory mode and the caches.

UI handlers and the CLI build a :class:`~sote_ui.core.request.GenerationRequest`
and call :meth:`Engine.generate`; nothing else touches a pipeline. What the
engine is made of lives beside it: loading (:mod:`.loading`, :mod:`.hub`),
where weights go (:mod:`.placement`), prompt encoding (:mod:`.encoding`),
reference images (:mod:`.references`), previews (:mod:`.previews`), the run
of one call (:mod:`.runner`) and what it returns (:mod:`.results`).

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
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from PIL import Image

from .. import __version__
from ..core import loras as lora_files
from ..core import memory
from ..core.errors import Cancelled, GenerationError, InputError, ModelError
from ..core.files import file_sha256
from ..core.masks import InpaintPlan, paste_back
from ..core.memory import Mode, Placement, Plan, choose_mode, estimate, parse_mode, smaller_mode, unsupported_reason
from ..core.metadata import ModelInfo, format_parameters, init_image_note
from ..core.outputs import LatentRecord
from ..core.request import GenerationRequest, control_kind, final_size
from . import devices
from .caches import LruCache
from .encoding import TRAINED_CHUNKS, PromptEmbeds, check_chunks, chunk_token_counts, count_tokens, encode_pair
from .latents import prior_output
from .loading import Components, Folders, component_sizes, fetch, load_components
from .lora import Adapters, LoraFile, read_lora
from .models import ModelSource, default_source, recorded_name
from .placement.offload import held_on_device, send_back
from .placement.oom import forget_frames, is_oom
from .placement.pipelines import apply_mode, torch_dtype
from .previews import PREVIEW_EVERY
from .references import ReferenceEmbeddings, reference_strengths
from .results import Draft, GeneratedImage, GenerationResult, Preview, PriorOutput, Progress, StepCounters
from .runner import PriorRun, PriorStopped, RunContext, expand, planned_steps, run_in_turn, run_priors_first
from .sampling import decoder_scheduler, run_prior, steps_for


class Engine:
    """Owns the model: loading, memory mode, caches, and generation.

    Thread-safe: one generation or mode switch at a time. Loading happens on
    the first :meth:`generate` (or an explicit :meth:`load`), never at import.
    """

    def __init__(self, source: ModelSource | None = None, mode: str | Mode = "auto", device: str | None = None,
                 *, prior_cache_size: int = 16, text_cache_size: int = 16, effnet: str | None = None,
                 controlnet: str | None = None):
        self.source = source or default_source()
        # Image to image's encoder file (Stability's key layout); None: the pair's own, else the Hub's.
        self.effnet_path = effnet
        # A ControlNet file in Stability's layout; None: the pair's own controlnet/ folder, else the Hub's.
        self.controlnet_path = controlnet
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
        self.stage_order: list[str] = []  # "prior 0", "decoder 0", ... in the order the last call ran them
        self.preview_kind = "auto"  # see previews.KINDS
        self.preview_every = PREVIEW_EVERY
        self._lock = threading.RLock()
        self._prior_pipe = None
        self._decoder_pipe = None
        self._image_encoder = None
        self._effnet = None
        self._controlnets: dict = {}  # kind -> ControlNet; one kind is kept at a time
        self._inpaint_plans = LruCache(8)  # what decides a plan -> (InpaintPlan, note)
        self.last_control = None  # the last prior's control deliverer (how many controls it added)
        self._texts = LruCache(text_cache_size)  # (prompt, negative, prompt padding) -> PromptEmbeds
        self._priors = LruCache(prior_cache_size)  # prior key -> PriorOutput
        self._references = ReferenceEmbeddings(4 * prior_cache_size)
        self._starts = LruCache(4)  # (start image digest, width, height, resize mode) -> its stage-C latent
        self._stage = ""  # what runs now, for the out-of-memory message
        self._last_run = ""  # the stage that ran last in this call, to count switches
        self._preview_decoder = None
        self._preview_kind_loaded = None
        self._adapters = Adapters()  # the LoRAs hooked into the prior and text encoder now
        self._lora_files = LruCache(16)  # (file hash, name) -> LoraFile
        self._lora_paths: dict | None = None  # the loras folder, listed once per generate call

    # 1. Loading and memory modes -------------------------------------------------

    @property
    def loaded(self) -> bool:
        return self._prior_pipe is not None

    @property
    def prior_pipe(self):
        """The prior's ``StableCascadePriorPipeline`` (None before loading)."""
        return self._prior_pipe

    @property
    def decoder_pipe(self):
        """The decoder's ``StableCascadeDecoderPipeline`` (None before loading)."""
        return self._decoder_pipe

    @property
    def tokenizer(self):
        """The prior's CLIP tokenizer (None before loading)."""
        return self._prior_pipe.tokenizer if self._prior_pipe is not None else None

    @property
    def image_encoder(self):
        """The CLIP image encoder of image remix (None until the first reference image is encoded)."""
        return self._image_encoder

    def model_info(self) -> ModelInfo:
        return ModelInfo(recorded_name(self.source.prior), recorded_name(self.source.decoder),
                         self.plan.mode.value if self.plan else "")

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
            parts = load_components(self.folders, torch_dtype(plan.compute_dtype), fp8=plan.fp8_backend,
                                    on_status=say)
            say(f"applying {plan.mode.value}")
            oom = False
            try:
                self._prior_pipe, self._decoder_pipe = apply_mode(parts, plan, self.device.torch_device)
            except Exception as exc:
                if not is_oom(exc):
                    raise
                forget_frames(exc)
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
            devices.free_memory()  # hand what loading freed back to the OS
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

    def install(self, parts: Components, plan: Plan) -> None:
        """Build the pipelines from already loaded ``parts`` in ``plan``'s mode, on this engine's device.

        The engine's own :meth:`load` decides the plan; this takes one as given
        (model offload on the CPU, say, which ``auto`` never picks), for tests
        and benchmarks of a placement strategy. The caches start empty.
        """
        with self._lock:
            self.device = self.device or devices.detect_device(self.requested_device)
            self._prior_pipe, self._decoder_pipe = apply_mode(parts, plan, self.device.torch_device)
            self._image_encoder = None
            self._effnet = None  # made again in the new plan's dtype and place
            self._controlnets.clear()
            self.clear_caches()
            self.plan = plan
            self.state = "ready"

    def clear_caches(self) -> None:
        """Forget every cached prompt encoding, prior and reference-image embedding."""
        self._texts.clear()
        self._priors.clear()
        self._references.clear()
        self._inpaint_plans.clear()
        self._starts.clear()
        self._lora_files.clear()

    def cache_counts(self) -> dict[str, int]:
        """How many prompt encodings (``texts``), priors and reference embeddings (``images``) are cached."""
        return {"priors": len(self._priors), "texts": len(self._texts), "images": len(self._references)}

    def cached_priors(self) -> list[PriorOutput]:
        """The cached priors, oldest first."""
        return self._priors.values()

    def _drop(self) -> None:
        self._adapters.clear()
        self._lora_files.clear()
        self._prior_pipe = None
        self._decoder_pipe = None
        self._image_encoder = None
        self._effnet = None
        self._controlnets.clear()
        self.clear_caches()
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

    @staticmethod
    def _memory_job(job: GenerationRequest) -> dict[str, Any]:
        """What besides its size decides a job's memory, as :func:`~sote_ui.core.memory.estimate` takes it."""
        return {"init_image": job.init_image is not None, "hires_size": final_size(job) if job.hires else None,
                "control": control_kind(job)}

    def _fit_mode_to(self, jobs: list[GenerationRequest], on_status: Callable[[str], None] | None = None,
                     ) -> str | None:
        """With ``auto``, a run that needs more than the loaded mode was chosen for (a hi-res pass, a start
        image, a ControlNet, a larger size) switches to the mode ``auto`` picks for its largest job before
        any step runs, rather than running out of memory halfway. Returns the note saying so, or None.

        The budget is the free memory measured when the mode was chosen (before its weights loaded). A
        smaller run afterwards keeps the smaller mode: switching back and forth would reload every time.
        """
        if self.requested_mode != Mode.AUTO or self.plan is None or self.sizes is None or self.device is None:
            return None
        worst = None
        for job in jobs:
            need = estimate(self.plan.mode, self.sizes, job.width, job.height, self.device, **self._memory_job(job))
            if need > self.device.free_bytes and (worst is None or need > worst[0]):
                worst = (need, job)
        if worst is None:
            return None
        job = worst[1]
        plan = choose_mode(Mode.AUTO, self.device, self.sizes, job.width, job.height, **self._memory_job(job))
        if plan.mode == self.plan.mode:
            return None
        old = self.plan.mode.value
        self._drop()
        self.plan = None
        try:
            self._load(plan.mode, on_status)
        finally:
            self.requested_mode = Mode.AUTO  # still auto: the next larger run may switch again
        return f"auto switched from {old} to {plan.mode.value} for this run: {plan.reason}"

    def mode_table(self, width: int = 1024, height: int = 1536) -> list[tuple[str, str, str]]:
        """(mode, estimated need, note) for every mode on this device."""
        return memory.mode_table(self.device or devices.detect_device(self.requested_device), self.sizes, width,
                                 height)

    def _smaller_mode(self, plan: Plan) -> str:
        smaller = smaller_mode(plan.mode, self.device, self.sizes) if self.sizes else None
        return smaller.value if smaller else "a smaller image size"

    # 2. Prompt encoding ----------------------------------------------------------

    def count_tokens(self, text: str) -> int | None:
        """Tokens of ``text`` with the loaded tokenizer (None before loading)."""
        return count_tokens(self.tokenizer, text) if self.loaded else None

    def chunk_counts(self, text: str) -> list[int] | None:
        """Tokens in each 75-token chunk of ``text``, as the encoder splits it (None before loading)."""
        return chunk_token_counts(self.tokenizer, text) if self.loaded else None

    def _check_prompts(self, jobs: list[GenerationRequest]) -> list[str]:
        """Refuse prompts past the chunk cap before any GPU work; warn past the trained 3 chunks."""
        warnings: list[str] = []
        for prompt, negative in dict.fromkeys((job.composed_prompt(), job.negative_prompt) for job in jobs):
            chunks = len(check_chunks(self.tokenizer, prompt, "the prompt"))
            check_chunks(self.tokenizer, negative, "the negative prompt")
            if chunks > TRAINED_CHUNKS:
                warnings.append(f"the prompt uses {chunks} chunks of 75 tokens; the model was trained with "
                                f"{TRAINED_CHUNKS}, so tags past the third chunk count less reliably")
        return warnings

    def encode(self, job: GenerationRequest) -> PromptEmbeds:
        """The job's prompt and negative prompt, encoded (or from the cache)."""
        key = (job.composed_prompt(), job.negative_prompt, job.prompt_padding, self._lora_key(job, text=True))
        embeds = self._texts.get(key)
        if embeds is not None:
            self.counters.text_cache_hits += 1
            return embeds
        self._stage = "text encoder"
        pipe = self._prior_pipe
        self.use_loras(job)
        embeds = encode_pair(pipe.tokenizer, pipe.text_encoder, job.composed_prompt(), job.negative_prompt,
                             pipe._execution_device, mask_padding=job.prompt_padding == "masked")
        if self.plan.mode.placement == Placement.OFFLOAD:
            pipe.maybe_free_model_hooks()  # don't keep the text encoder on the GPU while the decoder runs
        self.counters.text_encodes += 1
        self._texts.put(key, embeds)
        return embeds

    # 2b. Reference images (image remix) ----------------------------------------------

    def load_image_encoder(self):
        """The CLIP image encoder of image remix, loaded on first use (the prior folder's own, else the fallback)."""
        if self._image_encoder is None:
            from .references import load_image_encoder

            self._stage = "image encoder"
            encoder = load_image_encoder(self.folders.prior, torch_dtype(self.plan.compute_dtype))
            wanted = self._prior_pipe.prior.config.clip_image_in_channels
            if encoder.dim != wanted:
                raise ModelError(f"the image encoder {encoder.source} gives {encoder.dim}-wide embeddings; this prior "
                                 f"takes {wanted}")
            # It stays in CPU memory in every mode and visits the device only to encode a new reference
            # (embeddings are cached): kept there it would hold 0.6 GB (bf16) that the denoising needs.
            self._image_encoder = encoder
        return self._image_encoder

    # 2c. Start images (image to image) ---------------------------------------------------

    @property
    def effnet(self):
        """Image to image's EfficientNet encoder (None until the first start image is encoded)."""
        return self._effnet

    def load_effnet(self):
        """The EfficientNet encoder, loaded on first use in the mode's compute dtype.

        Where it lives follows the memory mode: on the device beside the
        models when they all are there; in CPU memory in the offload modes,
        visiting the device only while it encodes. The file is ``effnet``
        given to the engine, else the pair's own (``effnet_encoder.safetensors``
        beside its prior folder, as the demo model has), else the Hub's.
        """
        if self._effnet is None:
            from .effnet import HUB_FILE, load_effnet

            self._stage = "EfficientNet encoder"
            path = self.effnet_path
            if path is None and self.folders is not None and (self.folders.prior.parent / HUB_FILE).is_file():
                path = self.folders.prior.parent / HUB_FILE
            home = self.device.torch_device if self.plan.mode.placement == Placement.DEVICE else "cpu"
            encoder = load_effnet(path, home, torch_dtype(self.plan.compute_dtype))
            wanted = self._prior_pipe.prior.config.in_channels
            if encoder.config.latent_channels != wanted:
                raise ModelError(f"the EfficientNet encoder gives {encoder.config.latent_channels}-channel latents; "
                                 f"this prior samples {wanted}")
            self._effnet = encoder
        return self._effnet

    def encode_image(self, image: Image.Image, width: int, height: int) -> torch.Tensor:
        """The stage-C latent of ``image`` for a ``width`` x ``height`` generation, fp32 on the CPU.

        Its shape is the one the prior samples at that size, ``(1, 16,
        ceil(height / 42.67), ceil(width / 42.67))``: the image (already
        ``width`` x ``height``, see ``core.images.fit_to``) is resized to 32
        times that before encoding. Loads the model and the encoder on first use.

        Example::

            latent = engine.encode_image(fit_to(open_image("start.png"), 1024, 1536, "crop"), 1024, 1536)
        """
        from ..core.images import flatten
        from .effnet import resize_for_encoder

        if width < 1 or height < 1:
            raise InputError(f"the size {width}x{height} has no pixels")
        with self._lock:
            self.load()
            encoder = self.load_effnet()
            self._stage = "EfficientNet encoder"
            multiple = float(self._prior_pipe.config.resolution_multiple)
            pixels = resize_for_encoder(flatten(image), width, height, multiple)
            try:
                return encoder.encode(pixels, self.device.torch_device)
            finally:
                if encoder.device.type == "cpu" and self.device.is_gpu:
                    devices.free_memory(self.device)  # what the visit to the device held goes back now

    # 2d. Inpainting, outpainting and ControlNets ------------------------------------------

    def load_controlnet(self, kind: str):
        """The ControlNet of ``kind``, loaded on first use in the mode's compute dtype (one kind at a time).

        Where it lives follows the memory mode, like the EfficientNet encoder:
        on the device when the models all are, else in CPU memory, visiting
        the device only to compute a prior's controls. The file is
        ``controlnet`` given to the engine, else the pair's own
        (``controlnet/<name>.safetensors`` beside its prior folder, as the
        demo model has), else the Hub's.
        """
        if kind not in self._controlnets:
            from .controlnet import load_controlnet

            self._stage = "ControlNet"
            self._controlnets.clear()  # the previous kind's weights go before the next one's come
            home = self.device.torch_device if self.plan.mode.placement == Placement.DEVICE else "cpu"
            self._controlnets[kind] = load_controlnet(self._controlnet_path(kind), kind, home,
                                                      torch_dtype(self.plan.compute_dtype))
        return self._controlnets[kind]

    def _controlnet_path(self, kind: str):
        from .controlnet import HUB_FILES

        own = self.folders.prior.parent / HUB_FILES[kind] if self.folders is not None else None
        if self.controlnet_path is None and own is not None and own.is_file():
            return own
        return self.controlnet_path

    def generate_size(self, job: GenerationRequest) -> tuple[int, int]:
        """The size the prior and decoder work at: the request's, an outpainted canvas, or a masked crop's."""
        plan = self.inpaint_plan(job)
        return plan.generate_size if plan is not None else (job.width, job.height)

    def _inpaint_entry(self, job: GenerationRequest):
        if job.mask is None and not job.outpaint:
            return None
        key = (file_sha256(job.init_image), file_sha256(job.mask) if job.mask else None, job.width,
               job.height, job.resize_mode, job.mask_blur, job.inpaint_area, job.outpaint)
        entry = self._inpaint_plans.get(key)
        if entry is None:
            entry = _make_plan(job)
            self._inpaint_plans.put(key, entry)
        return entry

    def inpaint_plan(self, job: GenerationRequest) -> InpaintPlan | None:
        """What the job's mask or outpaint repaints and how it goes back (None without either)."""
        entry = self._inpaint_entry(job)
        return entry[0] if entry is not None else None

    def inpaint_note(self, job: GenerationRequest) -> str | None:
        """A note about the job's mask (resized to the picture), or None."""
        entry = self._inpaint_entry(job)
        return entry[1] if entry is not None else None

    def _control_key(self, job: GenerationRequest) -> tuple:
        """What of the job's mask, outpaint and control decides the prior (file contents, not names)."""
        kind = control_kind(job)
        if kind == "none":
            return ()
        image = job.control_image or job.init_image
        return (kind, file_sha256(image) if kind in ("canny", "sr") else None,
                file_sha256(job.mask) if job.mask else None, job.outpaint, job.inpaint_area,
                job.resize_mode, float(job.control_strength), float(job.control_start), float(job.control_end),
                (job.canny_low, job.canny_high) if kind == "canny" else None, self.controlnet_path)

    def control_hint(self, job: GenerationRequest) -> torch.Tensor | None:
        """The ControlNet's input for ``job`` at its generate size (None without control)."""
        from ..core.images import fit_to
        from ..core.outputs import open_image
        from .controlnet import canny, edges_hint, inpaint_hint

        kind = control_kind(job)
        if kind == "none":
            return None
        width, height = self.generate_size(job)
        if kind == "inpaint":
            plan = self.inpaint_plan(job)
            return inpaint_hint(plan.image, plan.crop_mask)
        picture = open_image(job.control_image or job.init_image)
        if kind == "canny":
            return edges_hint(canny(fit_to(picture, width, height, job.resize_mode), job.canny_low, job.canny_high))
        # Super-resolution: the EfficientNet latent of the half-size picture, each latent pixel doubled
        # (Stability's SREffnetFilter), so the control grid is the full size's 1/32.
        half = fit_to(picture, width // 2, height // 2, job.resize_mode)
        latent = self.load_effnet().encode(half, self.device.torch_device)
        return torch.nn.functional.interpolate(latent, scale_factor=2, mode="nearest")

    def _control(self, job: GenerationRequest):
        """The hooks that apply the job's ControlNet around its prior (a no-op context without one)."""
        import contextlib

        from .controlnet import controlled

        self.last_control = None
        kind = control_kind(job)
        if kind == "none" or job.control_strength == 0:
            return contextlib.nullcontext()
        hint = self.control_hint(job)
        net = self.load_controlnet(kind)
        self._stage = "ControlNet"
        try:
            controls = net.project(hint, self._prior_pipe._execution_device)
        finally:
            if net.device.type == "cpu" and self.device.is_gpu:
                devices.free_memory(self.device)
        self._stage = "prior"
        return _Remember(self, controlled(self._prior_pipe.prior, controls, job.control_strength,
                                          job.control_start, job.control_end))

    def _control_notes(self, job: GenerationRequest) -> dict[str, str]:
        """The PNG keys of the job's ControlNet and mask files: their hashes (the files are not in the image)."""
        notes: dict[str, str] = {}
        kind = control_kind(job)
        if kind != "none" and kind in self._controlnets:
            from .controlnet import controlnet_file

            notes["Control model hash"] = file_sha256(controlnet_file(self._controlnet_path(kind), kind)[0])[:10]
        if job.mask is not None:
            notes["Mask hash"] = file_sha256(job.mask)[:10]
        return notes

    # 2e. Live previews -----------------------------------------------------------------

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

    # 3. The stages of one image (the runner calls these) ------------------------------

    def prior(self, job: GenerationRequest, index: int, embeds: PromptEmbeds, run: RunContext, *,
              init_latents: torch.Tensor | None = None, run_steps: int | None = None, key: tuple | None = None
              ) -> PriorRun:
        """The image's prior, or its cached one; with Stop and finish, what it reached (never cached).

        With ``init_latents`` (a stage-C latent of width x height) only the last
        ``run_steps`` of the job's ``prior_steps`` run, from that latent noised to
        their level; ``key`` is then what decides the result (the cache key).
        """
        run.stop_if_asked("prior")
        started = time.perf_counter()
        self.stage_order.append(f"prior {index}")
        key = key if key is not None else self._prior_key(job)
        cached = self._priors.get(key)
        if cached is not None:
            self.counters.prior_cache_hits += 1
            return PriorRun(cached, True, started)
        if init_latents is None and self._starts_from_image(job):
            init_latents = self.start_latents(job)
            run_steps = steps_for(job.prior_steps, job.denoise)
        self._stage = "prior"
        self._switch_to("prior")
        self.use_loras(job)
        generator = torch.Generator("cpu").manual_seed(job.seed)
        guided = job.prior_cfg > 1
        stopped = None
        width, height = self.generate_size(job)
        try:
            with reference_strengths(self._prior_pipe.prior, self._references.strengths(job), guided), \
                    self._control(job):
                latents = run_prior(
                    self._prior_pipe,
                    embeds.conditioning(guided=guided),
                    self._references.conditioning(job, self._prior_pipe._execution_device,
                                                  self._prior_pipe.prior.dtype),
                    width,
                    height,
                    steps=job.prior_steps,
                    guidance_scale=job.prior_cfg,
                    generator=generator,
                    sampler=job.prior_sampler,
                    shift=job.prior_shift,
                    init_latents=init_latents,
                    run_steps=run_steps,
                    on_step=self._prior_stepper(index, run),
                )
        except PriorStopped as exc:
            stopped = exc
        if stopped is not None:
            # The loop ended in its step callback, before it could offload its models itself.
            self._release_models()
            latents = stopped.latents
        if not torch.isfinite(latents).all():
            raise GenerationError(
                "the prior produced NaN values; this happens in fp16, or when a GPU emulates bf16 badly: "
                "use an fp32 mode (--mode fp32 or offload-fp32)"
            )
        self.counters.prior_runs += 1
        prior = PriorOutput(latents, generator.get_state())
        if stopped is not None:  # a partial prior is not what this key's full run gives: never cached
            return PriorRun(prior, False, started, (stopped.step, stopped.steps))
        self._priors.put(key, prior)
        return PriorRun(prior, False, started)

    def decoder(self, job: GenerationRequest, index: int, embeds: PromptEmbeds, prior: PriorRun,
                run: RunContext) -> GeneratedImage:
        """The image's decoder and VQGAN, and its PNG parameters."""
        run.stop_if_asked("decoder")
        self.stage_order.append(f"decoder {index}")
        self._stage = "decoder"
        self._switch_to("decoder")
        generator = torch.Generator("cpu")
        generator.set_state(prior.output.generator_state)  # the image's one generator, where the prior left it
        pipe = self._decoder_pipe
        own = pipe.scheduler
        if (job.decoder_sampler, job.decoder_shift) != ("ddpm", 1.0):  # else diffusers' own scheduler, as today
            pipe.scheduler = decoder_scheduler(job.decoder_sampler, job.decoder_shift, own.config)
        try:
            output = pipe(
                image_embeddings=prior.output.latents,
                **embeds.conditioning(guided=job.decoder_cfg > 1),
                num_inference_steps=job.decoder_steps,
                guidance_scale=job.decoder_cfg,
                generator=generator,
                output_type="np",
                callback_on_step_end=self._decoder_stepper(job.decoder_steps, index, run),
            )
        finally:
            pipe.scheduler = own
        pixels = output.images[0]
        if not np.isfinite(pixels).all():
            raise GenerationError(
                "the decoder produced NaN values (the image would be black); this happens in fp16 or when a GPU "
                "emulates bf16 badly: use an fp32 mode (--mode fp32 or offload-fp32)"
            )
        self.counters.decoder_runs += 1
        image = Image.fromarray((np.clip(pixels, 0.0, 1.0) * 255).round().astype(np.uint8))
        plan = self.inpaint_plan(job)
        if plan is not None:
            image = paste_back(plan, image)  # outside the mask, the source's own pixels
        extra = {"Reference images": self._references.note(job)} if job.references else {}
        if job.init_image is not None:
            extra["Init image"] = init_image_note(Path(job.init_image).name, self._start_digest(job.init_image)[:16])
        if job.active_loras():
            extra["Lora hashes"] = lora_files.hashes_value([(lora.name, lora.digest[:lora_files.SHORT_HASH])
                                                            for lora, _, _ in self._loras(job, every=True)])
        extra.update(self._control_notes(job))
        if prior.stopped_at:
            extra["Prior stopped at"] = "{}/{}".format(*prior.stopped_at)
        extra["Version"] = f"sote-studio {__version__}"
        parameters = format_parameters(job, job.seed, self.model_info(), extra=extra)
        return GeneratedImage(image, job, parameters, prior.reused, time.perf_counter() - prior.started,
                              prior.stopped_at, prior.output)

    def draft(self, job: GenerationRequest, prior: PriorRun) -> Draft:
        """A prior-only image: a sketch of its stage-C latent (the prior stays cached for finishing)."""
        from .previews import PreviewDecoder

        sketch = (self.previews() or PreviewDecoder("fast")).decode(prior.output.latents)
        return Draft(job, sketch, prior.reused)

    def release(self) -> None:
        """After a skipped image, move offloaded models back to the CPU (the next image starts with its prior)."""
        self._release_models()

    def _switch_to(self, stage: str) -> None:
        if self._last_run and self._last_run != stage:
            self.counters.stage_switches += 1
        self._last_run = stage

    def _prior_stepper(self, index: int, run: RunContext):
        """The prior loop's step callback: counters, previews of the predicted clean latent, progress and stop."""

        def on_step(step: int, steps: int, latents: torch.Tensor, predicted: torch.Tensor) -> None:
            self.counters.prior_steps += 1
            if run.on_preview and (step % self.preview_every == 0 or step == steps):
                preview = self._preview(predicted, step, steps, index)
                if preview is not None:
                    run.on_preview(preview)
            try:
                run.step_done("prior", step, steps, index)
            except PriorStopped as exc:
                # The decoder gets the prior's best guess of its result so far, not the noisy latent.
                exc.latents = predicted.to(latents.dtype).clone()
                raise

        return on_step

    def _decoder_stepper(self, steps: int, index: int, run: RunContext):
        """The decoder's step callback: counters, progress and stop."""

        def callback(pipe, i, t, kwargs):
            self.counters.decoder_steps += 1
            if i + 1 == steps:
                self._stage = "VQGAN"
            run.step_done("decoder", i + 1, steps, index)
            return {}

        return callback

    def _prior_key(self, request: GenerationRequest) -> tuple:
        """What decides the prior's output. Without guidance (CFG <= 1) neither the negative
        prompt nor the CFG value is read, so they are left out and an unguided prior is reused.
        Reference images count by content and strength, not by file name."""
        guided = request.prior_cfg > 1
        references = tuple((digest, ref.strength) for ref, digest in self._references.active(request))
        # A start image counts by content, with what decides its latent and how much of it is kept; at
        # denoise 1 it is ignored, so that prior is the text-to-image one.
        start = ((self._start_digest(request.init_image), float(request.denoise), request.resize_mode)
                 if self._starts_from_image(request) else None)
        return (request.composed_prompt(), request.negative_prompt if guided else None, request.prompt_padding,
                request.width, request.height, request.seed, request.prior_steps,
                float(request.prior_cfg) if guided else None, references, request.prior_sampler,
                float(request.prior_shift), start, self._lora_key(request)) + self._control_key(request)

    def _hires_key(self, job: GenerationRequest) -> tuple:
        """What decides the hi-res fix's second prior: the first pass's prior, its decoder, and the fix."""
        guided = job.decoder_cfg > 1
        return ("hires", self._prior_key(replace(job, hires_scale=1.0)), job.decoder_steps,
                float(job.decoder_cfg) if guided else None, job.negative_prompt if guided else None,
                job.decoder_sampler, float(job.decoder_shift), final_size(job), float(job.hires_denoise),
                job.hires_steps or job.prior_steps)

    def prior_passes(self, job: GenerationRequest, prior_only: bool = False) -> list[tuple[tuple, int, int]]:
        """(prior key, prior steps, decoder steps) of each pass the job runs: one, or two with the hi-res fix
        (only the second when its prior is cached). ``prior_only``: the first prior alone."""
        first = (self._prior_key(replace(job, hires_scale=1.0)),
                 steps_for(job.prior_steps, job.denoise) if self._starts_from_image(job) else job.prior_steps,
                 0 if prior_only else job.decoder_steps)
        if not job.hires or prior_only:
            return [first]
        steps = job.hires_steps or job.prior_steps
        second = (self._hires_key(job), steps_for(steps, job.hires_denoise), job.decoder_steps)
        return [second] if second[0] in self._priors else [first, second]

    # 3b. Image to image and the hi-res fix ------------------------------------------------

    @staticmethod
    def _starts_from_image(job: GenerationRequest) -> bool:
        return job.init_image is not None and job.denoise < 1

    def _start_digest(self, path: str) -> str:
        """The start image's content hash (cached by file name, modification time and size)."""
        return self._references.digest(path)

    def start_latents(self, job: GenerationRequest) -> torch.Tensor:
        """The stage-C latent of the job's start image, fitted to its size by ``resize_mode`` (cached)."""
        from ..core.images import fit_to, open_start_image

        plan = self.inpaint_plan(job)
        key = (self._start_digest(job.init_image), job.width, job.height, job.resize_mode)
        if plan is not None:  # inpainting starts from what it generates: the (outpainted) canvas or the crop
            key += (file_sha256(job.mask) if job.mask else None, job.inpaint_area, job.outpaint)
        latents = self._starts.get(key)
        if latents is None:
            if plan is not None:
                image, (width, height) = plan.image, plan.generate_size
            else:
                image = fit_to(open_start_image(job.init_image), job.width, job.height, job.resize_mode)
                width, height = job.width, job.height
            latents = self.encode_image(image, width, height)
            self.counters.start_encodes += 1
            self._starts.put(key, latents)
        return latents

    def hires(self, job: GenerationRequest, index: int, embeds: PromptEmbeds, run: RunContext) -> GeneratedImage:
        """The hi-res fix: the image at width x height, upscaled (Lanczos) to :func:`final_size`, encoded, its
        prior run again at ``hires_denoise`` for the last steps of ``hires_steps``, then the decoder.

        Stopped during the second pass, the first pass's image is kept (handed on and in the
        :class:`Cancelled`'s images). Stop and finish there decodes what the second prior reached.
        """
        width, height = final_size(job)
        steps = job.hires_steps or job.prior_steps
        second_job = replace(job, width=width, height=height, prior_steps=steps)
        key = self._hires_key(job)
        if key in self._priors:  # the second prior is cached: no first pass needed
            second = self.prior(second_job, index, embeds, run, key=key)
            return self.decoder(job, index, embeds, second, run)
        first_job = replace(job, hires_scale=1.0)
        second_steps = steps_for(steps, job.hires_denoise)
        run.pending = second_steps + job.decoder_steps  # what Skip in the first pass takes off the budget too
        first = self.decoder(first_job, index, embeds, self.prior(first_job, index, embeds, run), run)
        run.pending = 0
        if first.prior_stopped_at:  # Stop and finish in the first prior: that image is the result
            return first
        try:
            run.stop_if_asked("prior")
            self._stage = "hi-res upscale"
            upscaled = first.image.resize((width, height), Image.Resampling.LANCZOS)
            start = self.encode_image(upscaled, width, height)
            self.counters.start_encodes += 1
            second = self.prior(second_job, index, embeds, run, init_latents=start, run_steps=second_steps, key=key)
            image = self.decoder(job, index, embeds, second, run)
        except Cancelled as exc:
            run.finished(first)
            exc.first_pass = first  # the runner keeps it with the finished images
            raise
        return replace(image, seconds=image.seconds + first.seconds)

    # 3c. LoRA ------------------------------------------------------------------------------------

    def _loras(self, job: GenerationRequest, every: bool = False) -> list[tuple[LoraFile, float, float]]:
        """The job's LoRAs, read (or from the cache) and mapped onto this prior: (file, weight, text weight) each.

        LoRAs at weight 0 on both models are left out (they change nothing)
        unless ``every``.
        """
        found = []
        for ref in job.active_loras():
            if not every and not ref.weight and not ref.text_weight:
                continue
            path = self._lora_paths.get(ref.name) if self._lora_paths is not None else None
            path = path or lora_files.find(ref.name)
            try:
                key = (lora_files.file_hash(path), ref.name)
            except OSError:
                raise InputError(f"LoRA {ref.name!r} can't be read (moved or removed?)") from None
            lora = self._lora_files.get(key)
            if lora is None:
                pipe = self._prior_pipe
                lora = read_lora(path, pipe.prior, pipe.text_encoder, name=ref.name)
                self._lora_files.put(key, lora)
            found.append((lora, float(ref.weight), float(ref.text_weight)))
        return found

    def _lora_key(self, job: GenerationRequest, text: bool = False) -> tuple:
        """What the job's LoRAs change: (name, file hash, weight, text weight) each; for the prompt encoding
        only those with text-encoder layers, by their text weight."""
        if not job.active_loras():
            return ()
        if text:
            return tuple((lora.name, lora.digest, te_weight) for lora, _, te_weight in self._loras(job)
                         if lora.has_text and te_weight)
        return tuple((lora.name, lora.digest, weight if lora.has_prior else 0.0, te_weight if lora.has_text else 0.0)
                     for lora, weight, te_weight in self._loras(job))

    def use_loras(self, job: GenerationRequest) -> None:
        """Hook the job's LoRAs into the prior and text encoder (none: the plain models)."""
        pipe = self._prior_pipe
        self._adapters.use(pipe.prior, pipe.text_encoder, self._loras(job))

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
                      prior_only: bool = False, *,
                      should_skip: Callable[[], bool] | None = None,
                      should_finish: Callable[[], bool] | None = None,
                      on_image: Callable[[GeneratedImage], None] | None = None) -> GenerationResult:
        """Generate several requests in order, each expanded by its ``count``.

        Runs sharing a prior (same prompt, size, seed and prior settings)
        compute it once; order them so they are adjacent to reuse it.
        ``on_preview`` gets a look at the prior's latent every
        ``preview_every`` steps. With ``prior_only`` only the priors run (and
        are cached): the result's ``drafts`` hold each one's preview, and a
        later run of the same request finishes it with the decoder alone.

        ``on_image`` gets each image as soon as it is done. ``should_skip``
        (True once per press) abandons the image in progress and goes on;
        ``should_finish`` ends the run after the image in progress, whose
        decoder then runs on what its prior reached (its parameters say
        ``Prior stopped at: k/N``). Both end with :class:`Cancelled` carrying
        the finished images, like ``should_stop``.
        """
        with self._lock:
            start = time.perf_counter()
            before = self.counters.snapshot()
            self.load()
            jobs = expand(requests)
            warnings = self._check_prompts(jobs)
            self._lora_paths = lora_files.available() if any(job.active_loras() for job in jobs) else {}
            for job in jobs:  # every LoRA read and mapped before any step runs; what a file lacks, said once
                for lora, _, _ in self._loras(job):
                    warnings += [note for note in lora.notes if note not in warnings]
            for job in jobs:  # a bad mask fails here, before any work; a resized one is noted
                note = self.inpaint_note(job)
                if note and note not in warnings:
                    warnings.append(note)
            switched = self._fit_mode_to(jobs)  # after every check, so bad input never costs a reload
            if switched:
                warnings.append(switched)
            encoded = self._references.prepare(jobs, self.load_image_encoder, self.device.torch_device)
            self.counters.image_encodes += encoded
            run = RunContext(len(jobs), planned_steps(jobs, self.prior_passes, self._priors.__contains__, prior_only),
                             on_progress, should_stop, on_preview, should_skip, should_finish, on_image)
            images: list[GeneratedImage] = []
            drafts: list[Draft] = []
            self.stage_order = []
            self._last_run = ""
            oom_stage = None
            try:
                # The hi-res fix needs each image's first decoder before its second prior: such runs go in turn.
                if (self.plan.mode.placement == Placement.OFFLOAD and len(jobs) > 1 and not prior_only
                        and not any(job.hires for job in jobs)):
                    run_priors_first(self, jobs, run, images, lambda: held_on_device(self._prior_pipe),
                                     lambda: held_on_device(self._decoder_pipe))
                else:
                    run_in_turn(self, jobs, run, prior_only, images, drafts)
            except Cancelled as exc:
                self._release_models()
                exc.images = images  # the finished images are kept
                raise
            except Exception as exc:
                self._release_models()
                if not is_oom(exc):
                    raise
                oom_stage = self._stage or "generation"
                forget_frames(exc)  # the failed step's activations live in these frames
            finally:
                self._stage = ""
                self._adapters.clear()  # the models stay as loaded between calls
                self._lora_paths = None
            if oom_stage is not None:
                # Out of the handler: the exception and its frames are gone, so this frees the activations
                # too, before the message goes out.
                self._priors.clear()
                devices.free_memory(self.device)
                raise GenerationError(
                    f"out of GPU memory in the {oom_stage} ({self.plan.mode.value}); memory was freed: "
                    f"switch to {self._smaller_mode(self.plan)} or a smaller size")
            return GenerationResult(images, self.counters.since(before), time.perf_counter() - start, warnings,
                                    drafts)

    def redecode(self, request: GenerationRequest, latent: LatentRecord, decoder_seed: int | None = None,
                 on_progress: Callable[[Progress], None] | None = None,
                 should_stop: Callable[[], bool] | None = None, extra: dict[str, str] | None = None,
                 ) -> GenerationResult:
        """Run only the decoder on a stored stage-C latent: the same composition, new details.

        ``request`` is the image's own request with the decoder settings
        wanted (steps, CFG); ``latent`` what :func:`.latents.latent_record`
        kept of its prior. Without ``decoder_seed`` the decoder draws the
        image's own noise again (same settings: the same pixels); with one,
        new noise from that seed, which the parameters record as
        ``Decoder seed``. ``extra`` adds parameters (``Re-decoded from``).
        The prior never runs. Raises InputError for a latent that is not one,
        GenerationError (out of memory) or Cancelled.
        """
        try:
            stored = prior_output(latent)
        except ValueError:
            raise InputError("the stored composition is not a stage-C latent this app can read") from None
        with self._lock:
            start = time.perf_counter()
            before = self.counters.snapshot()
            self.load()
            job = replace(request, count=1, references=())
            run = RunContext(1, job.decoder_steps, on_progress, should_stop)
            latents = stored.latents.to(self._decoder_pipe._execution_device, torch_dtype(self.plan.compute_dtype))
            state = stored.generator_state if decoder_seed is None else \
                torch.Generator("cpu").manual_seed(int(decoder_seed)).get_state()
            self.stage_order = []
            self._last_run = ""
            oom = False
            try:
                embeds = self.encode(job)
                image = self.decoder(job, 0, embeds, PriorRun(PriorOutput(latents, state), True, start), run)
            except Exception as exc:
                self._release_models()
                if not is_oom(exc):
                    raise
                forget_frames(exc)
                oom = True
            finally:
                self._stage = ""
            if oom:
                devices.free_memory(self.device)
                raise GenerationError(f"out of GPU memory in the decoder ({self.plan.mode.value}); memory was freed: "
                                      f"switch to {self._smaller_mode(self.plan)} or a smaller size")
            notes = dict(extra or {})
            if decoder_seed is not None:
                notes["Decoder seed"] = str(int(decoder_seed))
            notes["Version"] = f"sote-studio {__version__}"
            image.parameters = format_parameters(job, job.seed, self.model_info(), extra=notes)
            image.prior = stored
            return GenerationResult([image], self.counters.since(before), time.perf_counter() - start)

    def _release_models(self) -> None:
        """After a stop or a failure mid-pipeline, move offloaded models back to the CPU."""
        if self.plan is not None and self.plan.mode.placement == Placement.OFFLOAD:
            send_back(self._prior_pipe, self._decoder_pipe)


class _Remember:
    """Enters a control context and keeps its deliverer on the engine (``last_control``) for checks."""

    def __init__(self, engine: Engine, manager):
        self.engine, self.manager = engine, manager

    def __enter__(self):
        self.engine.last_control = self.manager.__enter__()
        return self.engine.last_control

    def __exit__(self, *exc):
        return self.manager.__exit__(*exc)


def _make_plan(job: GenerationRequest) -> tuple[InpaintPlan, str | None]:
    """The inpaint plan of ``job``: its start image fitted to width x height, its mask fitted the same way,
    the outpaint canvas, the crop around the mask; and a note when the mask had to be resized."""
    from ..core.images import fit_to, open_start_image
    from ..core.masks import binary, load_mask, outpaint_canvas, parse_outpaint, plan_inpaint

    start = open_start_image(job.init_image)
    source = fit_to(start, job.width, job.height, job.resize_mode)
    note = None
    mask = None
    if job.mask is not None:
        mask, note = load_mask(job.mask, start.size)
        # The mask was drawn over the start image: it meets width x height the way the start image does.
        mask = binary(fit_to(mask.convert("RGB"), job.width, job.height, job.resize_mode))
    sides = parse_outpaint(job.outpaint)
    if sides:
        source, new_area = outpaint_canvas(source, sides)
        if mask is not None:
            new_area.paste(mask, (sides.get("left", 0), sides.get("up", 0)), mask)
        mask = new_area
    return plan_inpaint(source, mask, job.mask_blur, job.inpaint_area, job.width, job.height), note
