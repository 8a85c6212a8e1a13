"""The adapter between the UI and the engine: typed requests in, files and reports out.

Holds the one shared engine (loaded in the background so the page is served
at once), the presets and where outputs go. Gradio-free, so it can be driven
directly by tests; the engine (torch, diffusers) is imported lazily.

Example::

    studio = Studio(StudioConfig(prior="./tiny/prior", decoder="./tiny/decoder", device="cpu"))
    studio.start_loading()
    paths, report = studio.generate({"prompt": "1girl, solo", "seed": 1, "width": 256, "height": 256})
"""

from __future__ import annotations

import atexit
import functools
import json
import os
import random
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

from ..core import outputs_index
from ..core.errors import Cancelled, InputError
from ..core.metadata import parse_parameters, read_parameters
from ..core.outputs import load_latent, open_image, save_latent, save_png
from ..core.presets import SHIPPED_DIR, PresetStore, default_user_dir
from ..core.request import DEFAULT_LIMITS, MAX_SEED, REQUEST_KEYS, GenerationRequest, Limits, build_request
from .jobs import WAITING_CANCELLED, JobRunner, gpu_seconds
from .pool import ALL, EnginePool, threads_per_engine

DEMO_PREFIX = "DEMO MODE: tiny random-weight model, images are noise. "


@dataclass
class StudioConfig:
    model: str | None = None
    prior: str | None = None
    decoder: str | None = None
    mode: str = "auto"
    device: str | None = None
    effnet: str | None = None  # image to image's EfficientNet encoder file (None: the model's own, else the Hub's)
    controlnet: str | None = None  # a stage-C ControlNet file (None: the model's own, else the Hub's)
    devices: list[str] = field(default_factory=list)  # several: one engine each, one queue (see pool.py)
    ray: Any = None  # a ray_backend.RayOptions: jobs run on Ray Serve replicas instead of engines here
    outputs: str | None = "outputs"  # None: keep images in a temporary folder only
    presets_dir: str | None = field(default_factory=lambda: str(default_user_dir()))
    shipped_presets: str | None = str(SHIPPED_DIR)
    limits: Limits = DEFAULT_LIMITS
    demo: bool = False
    mode_switch: bool = True


@dataclass
class Shot:
    """One image of this session: the file served, and its settings."""

    path: str
    parameters: str
    request: GenerationRequest
    seconds: float = 0.0
    prior_reused: bool = False
    job: int = 0  # which run of the session made it (the gallery groups a batch in seed order)


class Studio:
    """Everything the UI needs, behind plain-Python methods."""

    def __init__(self, config: StudioConfig, engine=None):
        self.config = config
        self.presets = PresetStore(
            Path(config.shipped_presets) if config.shipped_presets else None,
            Path(config.presets_dir).expanduser() if config.presets_dir else None,
            config.limits,
        )
        self._engine = engine
        self._source = engine.source if engine is not None else None
        self._engine_error: str | None = None
        self._status = "the model is not loaded yet; it loads on start or on the first Generate"
        self._status_lock = threading.Lock()
        self._loader: threading.Thread | None = None
        self._pool: EnginePool | None = None
        self._pool_lock = threading.Lock()
        self.ray = None  # the Ray Serve backend, made by start_loading when config.ray is set
        if config.ray is not None:
            config.mode_switch = False  # each replica keeps the mode it loaded in
        self.jobs = JobRunner()
        self.presets.clean_orphans()  # temporary files of a save that was interrupted
        remove_stale_temp_folders()
        self._tmp = Path(tempfile.mkdtemp(prefix=f"{TEMP_PREFIX}{os.getpid()}-"))
        atexit.register(self.close)

    @property
    def temp_folder(self) -> Path:
        """This server's temporary folder (drafts, and images when no outputs folder is kept)."""
        return self._tmp

    @property
    def on_zero_gpu(self) -> bool:
        """True on a ZeroGPU Space: jobs run inside ``spaces.GPU``, with no progress, previews or Stop."""
        return self.jobs.on_zero_gpu

    def close(self) -> None:
        """Remove this server's temporary folder (the images kept only there go with it), and the Ray
        Serve deployment it made."""
        shutil.rmtree(self._tmp, ignore_errors=True)
        if self.ray is not None:
            self.ray.close()

    # 1. The engine, loaded in the background ---------------------------------------

    @property
    def source(self):
        """Which prior/decoder pair to load (torch-free: a bad --model is reported before serving)."""
        if self._source is None:
            from ..engine.models import resolve_source

            self._source = resolve_source(self.config.model, self.config.prior, self.config.decoder)
        return self._source

    @property
    def engine(self):
        """The engine (with several devices: the first one's, which answers token counts and the memory panel)."""
        if self._engine is None:
            from ..engine import Engine  # torch and diffusers load here, not at start

            names = self.device_names()
            self._engine = Engine(self.source, mode=self.config.mode,
                                  device=names[0] if names else self.config.device, **self.engine_options())
        return self._engine

    def engine_options(self) -> dict[str, Any]:
        """What every engine of this studio is built with besides model, mode and device (the file options)."""
        return {"effnet": self.config.effnet, "controlnet": self.config.controlnet}

    def device_names(self) -> list[str]:
        """The devices of ``config.devices`` (``all`` counted once torch is loaded); [] for the one-device default."""
        names = list(self.config.devices or [])
        if names == [ALL]:
            from ..engine.devices import all_devices

            names = self.config.devices = all_devices()
        return names

    @property
    def device_count(self) -> int:
        """How many jobs run at once: one per device (before torch loads, ``all`` counts as it will be)."""
        if self.config.ray is not None:
            return self.config.ray.replicas[1]
        names = list(self.config.devices or [])
        if self.on_zero_gpu or len(names) < 2 and names != [ALL]:
            return 1
        return len(self.device_names())

    @property
    def pool(self) -> EnginePool | None:
        """The engines of several devices, one job each at a time; None with one device (jobs use :attr:`engine`)."""
        if self._pool is None and self.config.ray is None and self.device_count > 1:
            with self._pool_lock:
                if self._pool is None:
                    from ..engine import Engine

                    names = self.device_names()
                    engines = [self.engine] + [Engine(self.source, mode=self.config.mode, device=name,
                                                      **self.engine_options()) for name in names[1:]]
                    self._pool = EnginePool(engines, names, threads_per_engine(names))
        return self._pool

    @property
    def engines(self) -> list:
        """Every engine: one per device."""
        pool = self.pool
        return pool.engines if pool is not None else [self.engine]

    def _load_all(self) -> None:
        """Load each device's engine in turn: the first builds the fp8 cache, the others read it back, and
        the host holds one model's weights in transit at a time."""
        if self.config.ray is not None:
            if self.ray is None:
                from .ray_backend import RayBackend

                self.ray = RayBackend(self.source, self.config.mode, self.config.ray, self.config.device,
                                      self.engine_options())
            if not self.ray.ready:
                self.ray.start(self._say)
            return
        pool = self.pool
        if pool is None:
            self.engine.load(self._say)
            return
        for engine, label in zip(pool.engines, pool.labels):
            engine.load(lambda message, label=label: self._say(f"{label}: {message}"))

    def _say(self, message: str) -> None:
        with self._status_lock:
            self._status = message

    def start_loading(self) -> None:
        """Load the model in a background thread; the page keeps serving meanwhile."""
        if self._loader is not None and self._loader.is_alive():
            return

        def run():
            try:
                self._load_all()
            except InputError as exc:  # ModelError too: bad folder, no network
                self._engine_error = str(exc)
                self._say(f"model load failed: {exc}")
            except Exception as exc:  # keep serving whatever went wrong
                self._engine_error = f"{type(exc).__name__}: {exc}"
                self._say(f"model load failed: {self._engine_error}")

        self._loader = threading.Thread(target=run, name="sote-loader", daemon=True)
        self._loader.start()

    def wait_loaded(self, timeout: float | None = None) -> bool:
        if self._loader is not None:
            self._loader.join(timeout)
        if self.config.ray is not None:
            return self.ray is not None and self.ray.ready
        return self._engine is not None and all(engine.loaded for engine in self._made_engines())

    def _made_engines(self) -> list:
        """The engines made so far (none before the first is asked for)."""
        if self._pool is not None:
            return self._pool.engines
        return [self._engine] if self._engine is not None else []

    def settled(self) -> bool:
        """True once loading has finished, well or not (the page stops polling then)."""
        if self.config.ray is not None:
            return self._engine_error is not None or (self.ray is not None and self.ray.ready)
        made = self._made_engines()
        if self._engine_error is not None or any(engine.state == "error" for engine in made):
            return True
        return bool(made) and all(engine.state == "ready" for engine in made) and \
            (self._pool is not None or self.device_count == 1)

    def load_failed(self) -> bool:
        return self._engine_error is not None or any(engine.state == "error" for engine in self._made_engines())

    def status(self) -> str:
        with self._status_lock:
            status = self._status
        engine = self._engine
        if self.ray is not None and self.ray.ready:
            status = self.ray.status()
        elif self._pool is not None:
            if all(each.loaded and each.plan is not None for each in self._pool.engines):
                status = "ready on {} devices: {}".format(len(self._pool), "; ".join(
                    f"{label} {each.device.describe()} in {each.plan.mode.value}"
                    for label, each in zip(self._pool.labels, self._pool.engines)))
        elif engine is not None and engine.loaded and engine.plan is not None:
            status = f"ready on {engine.device.describe()} in {engine.plan.mode.value}: {engine.plan.reason}"
        if self.config.demo:
            status = DEMO_PREFIX + status
        return status

    def device_report(self) -> dict[str, Any]:
        """Detected device, current mode and what each mode needs (for the memory panel)."""
        engine = self._engine
        if engine is None or engine.device is None:
            return {"device": "not detected yet", "mode": self.config.mode, "modes": []}
        return {
            "device": engine.device.describe(),
            "mode": engine.plan.mode.value if engine.plan else "not loaded",
            "reason": engine.plan.reason if engine.plan else (engine.error or ""),
            "modes": [list(row) for row in engine.mode_table()],
        }

    def _ensure_engine(self):
        if self._loader is not None and self._loader.is_alive():
            self._loader.join()
        if self.config.ray is not None:
            if self.ray is None or not self.ray.ready:
                self._load_all()
            return None
        if not all(engine.loaded for engine in self.engines):
            self._load_all()
        return self.engine

    # 2. Generation ---------------------------------------------------------------

    def request_from(self, values: dict[str, Any]) -> GenerationRequest:
        values = {k: v for k, v in values.items() if k in REQUEST_KEYS}
        return build_request(values, limits=self.config.limits)

    def stop(self, session: str, waiting: int = 0) -> bool:
        """Stop the session's running job after the current step, and drop its ``waiting`` queued jobs."""
        return self.jobs.stop(session, waiting)

    def skip(self, session: str) -> bool:
        """Drop the image the session's Generate job is making; the batch goes on with the next one."""
        return self.jobs.skip(session)

    def stop_and_finish(self, session: str) -> bool:
        """End the session's Generate job once the image in progress is finished (from what its prior reached)."""
        return self.jobs.stop_and_finish(session)

    def forget(self, session: str) -> None:
        """Drop what the studio keeps for a closed browser session."""
        self.jobs.forget(session)

    def device_word(self) -> str:
        """'GPU' or 'CPU', for messages about what was freed."""
        if self.config.ray is not None:
            return "replica"
        engine = self._engine
        device = engine.device if engine is not None else None
        return "CPU" if device is None or device.kind == "cpu" else "GPU"

    def _output_path(self, seed: int, side: str = "") -> Path:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        folder = Path(self.config.outputs).expanduser() if self.config.outputs else self._tmp
        return folder / f"sote-{stamp}-{seed}{'-' + side if side else ''}.png"

    def generate(self, values: dict[str, Any], session: str = "", on_progress: Callable | None = None,
                 on_preview: Callable | None = None, preview: str = "auto",
                 seeds: list[int] | None = None, on_shot: Callable[[Shot], None] | None = None,
                 ) -> tuple[list[Shot], dict[str, Any]]:
        """Generate from UI/API values; return the session's new shots and a report.

        ``on_preview`` gets live previews of stage C drawn the ``preview`` way
        (auto, previewer, fast; off or on ZeroGPU: none). ``seeds`` runs one
        image per seed instead of seed, seed+1, ... (finishing picked drafts).
        Each image is saved as soon as it is done and handed to ``on_shot``
        (on ZeroGPU, where nothing streams out of the job, all at the end).
        An image finished by Stop and finish is in the report's
        ``prior_stopped_at`` (``{"seed": ..., "prior_stopped_at": "k/N"}``).
        Raises InputError / ModelError / GenerationError / Cancelled with a
        one-line message.
        """
        request = self.request_from(values).with_seed()
        requests = [replace(request, seed=seed, count=1) for seed in self._finishing(seeds)] if seeds else [request]
        started = time.perf_counter()
        waited = False
        kind = self._preview_kind(preview) if on_preview is not None else None
        options = {"on_preview": on_preview} if kind else {}
        used: dict[str, Any] = {}  # the engine the job ran on
        kept: dict[int, Shot] = {}  # id of the engine's image -> its saved shot

        def keep(item) -> Shot:
            if id(item) not in kept:
                kept[id(item)] = self._keep(item)
                if on_shot is not None:
                    on_shot(kept[id(item)])
            return kept[id(item)]

        if not self.on_zero_gpu:  # callbacks can't leave ZeroGPU's worker
            options["on_image"] = keep
        try:
            result = self._run("generate", (requests,), options, gpu_seconds(requests), session,
                               on_progress, kind, used)
            images, counters, stopped, warnings = result.images, result.counters, False, result.warnings
        except Cancelled as exc:  # images finished before Stop are kept
            images, counters, stopped, warnings = getattr(exc, "images", []), None, True, []
            waited = str(exc) == WAITING_CANCELLED
        shots = [keep(item) for item in images]
        self._remember_shots(session, shots)  # a reloaded page finds them, also after the page that asked left
        report = {
            "seeds": [s.request.seed for s in shots],
            "seconds": round(time.perf_counter() - started, 3),
            "mode": used.get("mode") or (self.engine.plan.mode.value if self.engine.plan else ""),
            "prior_reused": [s.prior_reused for s in shots],
            "prompt": request.composed_prompt(),
            **self._where(used),
        }
        if counters is not None:
            report.update(prior_steps_run=counters.prior_steps, decoder_steps_run=counters.decoder_steps)
        finished_early = [{"seed": item.request.seed, "prior_stopped_at": "{}/{}".format(*item.prior_stopped_at)}
                          for item in images if getattr(item, "prior_stopped_at", None)]
        if finished_early:
            report["prior_stopped_at"] = finished_early
        expected = [job.seed + i for job in requests for i in range(job.count)]
        if not stopped and len(shots) < len(expected):
            report["skipped"] = sorted(set(expected) - {s.request.seed for s in shots})
        if stopped:
            report["stopped"] = True
            if waited:
                report["cancelled_in_queue"] = True
        if warnings:
            report["warnings"] = warnings
        return shots, report

    def _finishing(self, seeds: list) -> list[int]:
        """Seeds of picked drafts: each once, and no more than one run may make."""
        try:
            unique = list(dict.fromkeys(int(seed) for seed in seeds))
        except (TypeError, ValueError):
            raise InputError("the seeds to finish must be whole numbers") from None
        limit = self.config.limits.max_count
        if len(unique) > limit:
            raise InputError(f"{len(unique)} seeds to finish; at most {limit} at once")
        for seed in unique:
            if not 0 <= seed <= MAX_SEED:
                raise InputError(f"seed must be 0..{MAX_SEED}, got {seed}")
        return unique

    def _preview_kind(self, preview: str) -> str | None:
        """How the job's engine is to draw stage C; None where no preview is drawn (off, or on ZeroGPU,
        where nothing streams out of the worker)."""
        if preview == "off" or self.on_zero_gpu:
            return None
        from ..engine.previews import KINDS

        if preview not in KINDS:
            raise InputError(f"unknown preview kind {preview!r}; choose one of: {', '.join(KINDS)}")
        return preview

    def draft(self, values: dict[str, Any], session: str = "", on_progress: Callable | None = None,
              preview: str = "auto") -> tuple[list[tuple[str, int]], dict[str, Any]]:
        """Prior-only drafts of ``count`` seeds: (preview file, seed) each, and a report.

        The priors stay in the engine's cache, so generating one of these seeds
        with the same settings runs only the decoder.
        """
        request = self.request_from(values).with_seed()
        kind = self._preview_kind(preview)
        started = time.perf_counter()
        used: dict[str, Any] = {}
        result = self._run("generate", ([request],), {"prior_only": True}, gpu_seconds([request]), session,
                           on_progress, kind, used)
        drafts = []
        for draft in result.drafts:
            path = self._tmp / f"draft-{draft.request.seed}-{time.strftime('%H%M%S')}.png"
            draft.preview.save(path)
            drafts.append((str(path), draft.request.seed))
        report = {"seeds": [seed for _, seed in drafts], "seconds": round(time.perf_counter() - started, 3),
                  "prior_steps_run": result.counters.prior_steps, "decoder_steps_run": result.counters.decoder_steps,
                  **self._where(used)}
        return drafts, report

    def _keep(self, item, side: str = "") -> Shot:
        """Save a generated image (never over another file) and describe it for the session.

        ``side`` ("A" or "B") ends a comparison's file names, so the two sides are told apart.
        The image's stage-C latent is kept beside it, so it can be re-decoded (:meth:`redecode`).
        """
        path = save_png(item.image, item.parameters, self._output_path(item.request.seed, side))
        self._keep_latent(path, item)
        return Shot(str(path), item.parameters, item.request, item.seconds, item.prior_reused)

    def _keep_latent(self, path: Path, item) -> None:
        prior = getattr(item, "prior", None)
        if prior is None:
            return
        from ..engine.latents import latent_record

        request = {k: v for k, v in item.request.to_dict().items() if k not in ("images", "image_strengths")}
        meta = {"request": json.dumps(request), "parameters": item.parameters}
        if getattr(item, "prior_stopped_at", None):
            meta["prior_stopped_at"] = "{}/{}".format(*item.prior_stopped_at)
        try:
            save_latent(path, latent_record(prior, meta))
        except OSError:  # re-decoding is a bonus: a full disk must not cost the image its place
            pass

    # 2b. Re-decoding a saved image ------------------------------------------------

    def redecode(self, path, decoder_seed: int | None = None, decoder_steps: int | None = None,
                 decoder_cfg: float | None = None, session: str = "", on_progress: Callable | None = None,
                 ) -> tuple[Shot, dict[str, Any]]:
        """A new version of a saved image: the decoder alone on its stored stage-C latent.

        ``path`` is the PNG (this server's file, or a copy of it: the latent
        is found by the PNG's name in the outputs folder). The image keeps its
        composition; ``decoder_seed`` (None: the image's own noise; -1: a random seed),
        ``decoder_steps`` and ``decoder_cfg`` (None: the image's own) change
        the details. The new PNG says ``Re-decoded from`` and ``Decoder seed``
        and gets its own copy of the latent. Raises InputError (no stored
        composition, a bad value), GenerationError or Cancelled.
        """
        png = Path(str(path or ""))
        if not str(path or "").strip():
            raise InputError("pick an image to re-decode first")
        record = self._latent_of(png)
        try:
            seed = None if decoder_seed is None or decoder_seed == "" else int(decoder_seed)
        except (TypeError, ValueError, OverflowError):
            raise InputError(f"decoder seed must be a whole number, got {str(decoder_seed)[:20]!r}") from None
        if seed is not None and seed != -1 and not 0 <= seed <= MAX_SEED:
            raise InputError(f"decoder seed must be -1 (a random one), 0..{MAX_SEED}, or left empty (the image's "
                             f"own), got {seed}")
        if seed == -1:
            seed = random.SystemRandom().randint(0, MAX_SEED)
        stored = json.loads(record.meta.get("request", "{}"))
        changes = {k: v for k, v in (("decoder_steps", decoder_steps), ("decoder_cfg", decoder_cfg)) if v is not None}
        request = self.request_from({**stored, **changes, "count": 1})
        extra = {"Re-decoded from": png.name}
        if record.meta.get("prior_stopped_at"):
            extra["Prior stopped at"] = record.meta["prior_stopped_at"]
        started = time.perf_counter()
        result = self._run("redecode", (request, record, seed), {"extra": extra},
                           gpu_seconds([replace(request, prior_steps=0)]), session, on_progress)
        shot = self._keep(result.images[0], "redecoded")
        self._remember_shots(session, [shot])
        report = {"from": png.name, "seed": request.seed, "decoder_seed": seed, "decoder_steps": request.decoder_steps,
                  "decoder_cfg": request.decoder_cfg, "prior_runs": result.counters.prior_runs,
                  "decoder_steps_run": result.counters.decoder_steps,
                  "seconds": round(time.perf_counter() - started, 3)}
        return shot, report

    def _latent_of(self, png: Path):
        """The stored latent of ``png``, looked up by name in this server's folders, checked against its text."""
        folders = [self._outputs_or_none(), self._tmp]
        record = next((found for folder in folders if folder is not None
                       for found in [load_latent(png, folder)] if found is not None), None)
        if record is None:
            raise InputError(f"{png.name[:80]} has no stored composition: only images this app saved can be "
                             "re-decoded (the latest thousand keep theirs)")
        try:
            with open_image(png) as image:
                text = read_parameters(image)
        except InputError:
            text = None
        if text and record.meta.get("parameters") and text != record.meta["parameters"]:
            raise InputError(f"{png.name[:80]} is not the image saved under that name: its stored composition "
                             "belongs to another one")
        return record

    def _outputs_or_none(self) -> Path | None:
        return Path(self.config.outputs).expanduser() if self.config.outputs else None

    def _run(self, task: str, args: tuple, kwargs: dict, seconds: int, session: str,
             on_progress: Callable | None, preview_kind: str | None = None, used: dict | None = None):
        """Run a GPU job for ``session`` once the engines are loaded (see :class:`JobRunner`).

        With several devices the job runs on a free one; ``used`` gets its ``device`` and ``mode``.
        """
        def on_engine(engine, label):
            if isinstance(engine, dict):  # a Ray Serve replica: what it said when the job started there
                mode, started = engine["mode"], engine["started"]
            else:
                if preview_kind:  # set on the engine this job holds, so another device's job can't change it
                    engine.preview_kind = preview_kind
                mode, started = (engine.plan.mode.value if engine.plan else ""), time.time()
            if used is not None and label:
                used.update(device=label, mode=mode, started=started)

        if self.config.ray is not None:
            remote = functools.partial(self._ray_run, preview_kind=preview_kind)
            return self.jobs.run(task, args, kwargs, seconds, session, self._ensure_engine, on_progress,
                                 on_engine=on_engine, remote=remote)
        return self.jobs.run(task, args, kwargs, seconds, session, self._ensure_engine, on_progress,
                             pool=self.pool, on_engine=on_engine)

    def _ray_run(self, *args, **kwargs):
        return self.ray.run(*args, **kwargs)

    @staticmethod
    def _where(used: dict) -> dict[str, Any]:
        """The report's ``device`` that ran a job of several devices' queue, and when it ``started`` and
        ``ended`` there (Unix seconds); nothing with one device."""
        if not used.get("device"):
            return {}
        return {"device": used["device"], "started": round(used["started"], 3), "ended": round(time.time(), 3)}

    def set_mode(self, mode: str) -> str:
        """Switch memory mode without restarting: the old mode's memory is freed first."""
        if not self.config.mode_switch:
            raise InputError("the memory mode is fixed on this server")
        if self._loader is not None and self._loader.is_alive():
            self._loader.join()
        pool = self.pool
        if pool is None:
            return self.engine.set_mode(mode, self._say).reason
        with pool.take_all() as engines:  # once every device's job has finished
            plans = [engine.set_mode(mode, lambda message, label=label: self._say(f"{label}: {message}"))
                     for engine, label in zip(engines, pool.labels)]
        return "; ".join(f"{label}: {plan.reason}" for label, plan in zip(pool.labels, plans))

    def count_tokens(self, text: str) -> int | None:
        engine = self._engine
        return engine.count_tokens(text) if engine is not None else None

    def chunk_counts(self, text: str) -> list[int] | None:
        """Tokens in each 75-token chunk of ``text`` as the encoder splits it (None before loading)."""
        engine = self._engine
        return engine.chunk_counts(text) if engine is not None else None

    # 3. A/B comparison and grids ------------------------------------------------------

    def side_request(self, name: str, current: dict[str, Any], overrides: dict[str, Any]) -> GenerationRequest:
        """A preset (or the current settings) with the compare tab's prompt, tags and seed on top."""
        from ..core.presets import CURRENT

        overrides = {k: v for k, v in overrides.items() if v is not None and k in REQUEST_KEYS}
        if not name:
            raise InputError("pick a preset for both sides (or current settings)")
        if name == CURRENT:
            return build_request({**{k: v for k, v in current.items() if k in REQUEST_KEYS}, **overrides},
                                 limits=self.config.limits)
        return self.presets.request(name, overrides)

    def compare(self, a: GenerationRequest, b: GenerationRequest, seeds: list[int], session: str = "",
                on_progress: Callable | None = None) -> tuple[list[tuple[Shot, Shot]], dict[str, Any], str]:
        """Generate both sides for every seed; return saved pairs, the report, and a side-by-side sheet."""
        from .compare import compose_grid

        used: dict[str, Any] = {}
        report = self._run("compare", (a, b, seeds), {}, gpu_seconds([a, b] * len(seeds)), session,
                           on_progress, used=used)
        pairs = [(self._keep(item_a, "A"), self._keep(item_b, "B")) for item_a, item_b in report.pairs]
        sheet = compose_grid([[x.image, y.image] for x, y in report.pairs], ["A", "B"],
                             [f"seed {x.request.seed}" for x, _ in report.pairs])
        sheet_path = save_png(sheet, pairs[0][0].parameters, self._output_path(seeds[0]).with_suffix(".ab.png"))
        return pairs, {**report.as_dict(), **self._where(used)}, \
            str(sheet_path)

    def grid(self, base: GenerationRequest, x_key: str, x_text: str, y_key: str | None, y_text: str,
             session: str = "", on_progress: Callable | None = None) -> tuple[str, dict[str, Any]]:
        """Run a parameter grid; return the saved grid PNG and a report with the step counts."""
        from .compare import AXIS_LABELS, axis_terms, check_grid_size, parse_values

        limits = self.config.limits
        check_grid_size(x_key, x_text, y_key, y_text, limits)  # counts first: nothing is built for a refused grid
        x_values = parse_values(x_key, x_text, limits, base)
        y_values = parse_values(y_key, y_text, limits, base) if y_key else []
        terms: dict[str, list[str]] = {}
        if x_key == "prompt_sr":  # labels show the terms typed, not whole prompts
            terms["x_terms"] = axis_terms(x_key, x_text, limits)
        if y_key == "prompt_sr":
            terms["y_terms"] = axis_terms(y_key, y_text, limits)
        cells = len(x_values) * max(1, len(y_values))
        used: dict[str, Any] = {}
        grid = self._run("grid", (base, x_key, x_values, y_key, y_values), {"limits": limits, **terms},
                         gpu_seconds([base] * cells), session, on_progress, used=used)
        path = save_png(grid.image, grid.parameters, self._output_path(base.seed).with_suffix(".grid.png"))
        report = {
            "cells": cells,
            # Each cell is saved on its own too, with its settings, row by row as the sheet shows them.
            "cell_files": [[self._keep(cell).path for cell in row] for row in grid.cells],
            "axes": {"x": [AXIS_LABELS[x_key], axis_terms(x_key, x_text, limits)],
                     **({"y": [AXIS_LABELS[y_key], axis_terms(y_key, y_text, limits)]} if y_key else {})},
            "prior_runs": grid.counters.prior_runs,
            "prior_steps_run": grid.counters.prior_steps,
            "decoder_steps_run": grid.counters.decoder_steps,
            "size": list(grid.image.size),
            **self._where(used),
        }
        return str(path), report

    def check_uploads(self, paths: list) -> None:
        """Open each uploaded reference image now, before the job queues; a refused one is deleted.

        Only for files the page uploaded (the server's copies): a script's own files are never touched.
        """
        for path in paths:
            try:
                open_image(path).close()
            except InputError as exc:
                if isinstance(path, (str, Path)):
                    Path(path).unlink(missing_ok=True)
                raise InputError(f"reference image {Path(str(path)).name[:80]!r}: {exc}") from None

    def remix_check(self, path) -> str:
        """Check a reference image as it is added (a refused upload is deleted) and that the image encoder
        can be had; return a line saying where the encoder comes from."""
        self.check_uploads([path])
        engine = self._engine
        if engine is None or getattr(engine, "folders", None) is None:
            return "the image encoder is checked once the model has loaded"
        from ..engine.references import encoder_source

        return f"image encoder: {encoder_source(engine.folders.prior)}"

    def edge_map(self, path, low: float, high: float, size: tuple[int, int] | None = None,
                 resize_mode: str = "crop", remove_if_refused: bool = False):
        """The Canny edge map (a PIL image, white edges on black) that a canny run draws from the image at
        ``path``: fitted to ``size`` by ``resize_mode`` first, as a run of that size does, else at the
        image's own size. E.g. ``studio.edge_map("photo.png", 100, 200, size=(1024, 1536))``.

        Plain CPU work: it needs no model and takes no GPU job, so the page can preview while a run goes on.
        With ``remove_if_refused``, an uploaded file (the server's own copy) that can't be read is deleted.
        """
        try:
            image = open_image(path)
        except InputError as exc:
            if remove_if_refused and isinstance(path, (str, Path)):
                Path(path).unlink(missing_ok=True)
            raise InputError(f"control image {Path(str(path)).name[:80]!r}: {exc}") from None
        from ..core.images import fit_to, upright
        from ..engine.controlnet import canny  # lazily: the module brings torch, as the first job would

        # Canny's edges depend on the scale, so the run's own fitting comes first.
        return canny(fit_to(image, *size, resize_mode) if size else upright(image), low, high)

    # 4. PNG info -------------------------------------------------------------------

    def read_png(self, source, remove_if_refused: bool = False) -> tuple[str, dict[str, Any]]:
        """(raw parameters text, parsed values) of an uploaded image.

        With ``remove_if_refused``, an uploaded file (the server's own copy) that can't be
        read is deleted at once rather than left in the upload cache.
        """
        try:
            image = open_image(source)
            text = read_parameters(image)
            if not text:
                raise InputError("this image carries no generation settings (A1111 'parameters' text)")
            return text, parse_parameters(text)
        except InputError:
            if remove_if_refused and isinstance(source, (str, Path)):
                Path(source).unlink(missing_ok=True)
            raise

    # 5. Reattaching a reloaded page, and the outputs folder ---------------------------------

    def _browsers(self) -> tuple[outputs_index.RecentByKey, outputs_index.RecentByKey]:
        """(each browser's latest shots, each session's browser); made on first use."""
        kept = self.__dict__.get("_browser_registry")
        if kept is None:
            # At most the last 48 shots per browser and one browser per page load, each dropped a day
            # after it last changed.
            kept = self.__dict__.setdefault("_browser_registry", (outputs_index.RecentByKey(48, 86400, 1000),
                                                                  outputs_index.RecentByKey(1, 86400, 4000)))
        return kept

    def attach_browser(self, session: str, browser: str) -> None:
        """Say that the page of ``session`` runs in ``browser`` (an id the browser keeps across reloads)."""
        if session and browser:
            self._browsers()[1].add(session, [browser])

    def _browser_of(self, session: str) -> str | None:
        found = self._browsers()[1].get(session) if session else []
        return found[-1] if found else None

    def _remember_shots(self, session: str, shots: list[Shot]) -> None:
        browser = self._browser_of(session)
        if browser and shots:
            self._browsers()[0].add(browser, list(shots))

    def browser_shots(self, browser: str) -> list[Shot]:
        """The latest shots (up to 48, of the last day) that pages of ``browser`` generated, oldest first."""
        return [shot for shot in self._browsers()[0].get(browser) if Path(shot.path).is_file()] if browser else []

    def browser_running(self, browser: str, session: str = "") -> bool:
        """True while a job runs for an earlier page of ``browser`` (any of its sessions but ``session``)."""
        if not browser:
            return False
        sessions = self._browsers()[1]
        return any(other != session and sessions.get(other) == [browser] for other in self.jobs.running_sessions())

    @property
    def outputs_folder(self) -> Path | None:
        """The folder images are saved to; None when the server keeps none (they live in its temp folder)."""
        return Path(self.config.outputs).expanduser() if self.config.outputs else None

    def _outputs(self) -> Path:
        folder = self.outputs_folder
        if folder is None:
            raise InputError("this server keeps no outputs folder: download the images you want to keep")
        return folder

    def list_outputs(self, page: int = 1) -> outputs_index.OutputsPage:
        """One page (24 images) of the outputs folder, newest first."""
        return outputs_index.list_outputs(self._outputs(), page)

    def output_settings(self, name: str) -> tuple[str, str, dict[str, Any]]:
        """(path, parameters text, parsed values) of image ``name`` of the outputs folder."""
        path = outputs_index.output_path(self._outputs(), name)
        text, values = self.read_png(path)
        return str(path), text, values

    @property
    def outputs_deletable(self) -> bool:
        """False on a Space: its visitors share the folder, so none may delete another's images."""
        from . import hosting

        return not hosting.on_spaces()

    def trash_output(self, name: str) -> str:
        """Move image ``name`` of the outputs folder into its trash; the token undoes it."""
        if not self.outputs_deletable:
            raise InputError("images can't be deleted on this shared server")
        return outputs_index.move_to_trash(self._outputs(), name)

    def restore_output(self, token: str) -> str:
        """Bring a trashed image back into the outputs folder; its name there."""
        return outputs_index.restore_from_trash(self._outputs(), token)

    def empty_old_trash(self) -> int:
        """Delete what went to the outputs folder's trash more than 7 days ago; how many files."""
        folder = self.outputs_folder
        return outputs_index.empty_trash(folder) if folder is not None else 0


TEMP_PREFIX = "sote-studio-"


def stop_on_sigterm() -> None:
    """Treat SIGTERM (how services, containers and Spaces stop a server) like Ctrl+C.

    Python's default SIGTERM ends the process without running ``atexit``, which
    left the server's temporary folder behind. Call from the main thread.
    """
    import signal

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)


def remove_stale_temp_folders() -> list[str]:
    """Remove ``sote-studio-PID-*`` temporary folders whose server process is gone."""
    import psutil

    removed = []
    for folder in Path(tempfile.gettempdir()).glob(TEMP_PREFIX + "*"):
        pid = folder.name[len(TEMP_PREFIX):].split("-", 1)[0]
        if folder.is_dir() and (not pid.isdigit() or not psutil.pid_exists(int(pid))):
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder.name)
    return removed
