#!/usr/bin/env python
"""Benchmark Sote Studio's engine against plain diffusers on the same model and settings.

Both sides run in one process, one after the other, on the same weights,
device, dtype, size, steps, CFG and seeds:

* ours:     ``Engine(source, mode, device).load()`` then ``engine.generate(request)``
* baseline: what a user writes with diffusers directly: every component loaded
  with its own class (the model card's one-line ``from_pretrained`` fails on
  current diffusers), a ``StableCascadeCombinedPipeline`` built from them,
  moved to the device, and called once per image.

Measured per side: the whole job (nothing loaded -> N images done), warm
seconds per image (median, after a warm-up image), the cost of a request that
only changes the decoder CFG, and peak memory. Ratios are ours/baseline:
below 1 means the engine is faster (or smaller).

Examples (from the repository root)::

    python bench/bench_engine.py --tiny
    python bench/bench_engine.py --tiny --width 256 --height 256
    python bench/bench_engine.py --model sotediffusion-wuerstchen3 --width 1024 --height 1536
    python bench/bench_engine.py --prior ./models/prior --decoder ./models/decoder --json bench.json
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import re
import resource
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

DEFAULT_PROMPT = "1girl, solo, looking at viewer, smile, long hair, blue eyes, school uniform, outdoors, sky"


# --------------------------------------------------------------------------- the machine


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _loadavg():
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def machine_info(device) -> dict:
    import diffusers
    import torch
    import transformers

    info = {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "transformers": transformers.__version__,
        "device": device.torch_device,
        "device_name": device.name,
        "device_memory_gib": round(device.total_bytes / 1024**3, 1),
        "load_average_at_start": _loadavg(),
    }
    if device.kind in ("cuda", "rocm"):
        info["cuda"] = torch.version.cuda or torch.version.hip
    return info


# --------------------------------------------------------------------------- timing and memory


def sync(device) -> None:
    import torch

    if device.kind in ("cuda", "rocm"):
        torch.cuda.synchronize()
    elif device.kind == "xpu":
        torch.xpu.synchronize()
    elif device.kind == "mps":
        torch.mps.synchronize()


def _vm_kib(field: str) -> int | None:
    try:
        match = re.search(rf"^{field}:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.M)
    except OSError:
        return None
    return int(match.group(1)) if match else None


class MemoryMeter:
    """Peak memory of one side.

    CUDA/ROCm: torch.cuda.max_memory_allocated (and reserved) after a reset.
    CPU: the process's peak RSS. On Linux the high-water mark is reset per side
    (``echo 5 > /proc/self/clear_refs``), so each side gets its own peak; where
    that can't be done, resource.getrusage's peak is printed, which is the
    peak of the whole process so far (it includes the earlier side).
    """

    def __init__(self, device):
        self.device = device
        self.note = ""

    def start(self) -> None:
        import torch

        gc.collect()
        if self.device.kind in ("cuda", "rocm"):
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
            self.start_bytes = torch.cuda.memory_allocated()
            return
        self.start_bytes = (_vm_kib("VmRSS") or 0) * 1024
        try:
            Path("/proc/self/clear_refs").write_text("5")
            self.note = "peak RSS of this side (VmHWM reset before it)"
        except OSError:
            self.note = "peak RSS of the whole process so far (getrusage; includes any earlier side)"

    def stop(self) -> dict:
        import torch

        if self.device.kind in ("cuda", "rocm"):
            return {
                "kind": "cuda max_memory_allocated",
                "peak_bytes": int(torch.cuda.max_memory_allocated()),
                "peak_reserved_bytes": int(torch.cuda.max_memory_reserved()),
                "start_bytes": int(self.start_bytes),
            }
        if self.device.kind == "cpu":
            hwm = _vm_kib("VmHWM")
            peak = hwm * 1024 if hwm is not None and "VmHWM" in self.note else None
            if peak is None:
                peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
            return {"kind": "process peak RSS", "peak_bytes": int(peak), "start_bytes": int(self.start_bytes),
                    "note": self.note}
        return {"kind": "n/a", "peak_bytes": None, "start_bytes": None}


class WorkCounter:
    """Counts forward passes (and their batch sizes) of the text encoder and both UNets.

    Forward hooks sit on the modules themselves, independent of either side's
    code, so the same counter checks that both sides did the same work: same
    steps, same CFG (batch 2 when guided), same latent sizes. The hook costs a
    Python call per forward on both sides alike.
    """

    def __init__(self):
        self.counts: dict[str, dict] = {}
        self.handles = []

    def attach(self, name: str, module) -> None:
        def hook(mod, args, kwargs, output):
            entry = self.counts.setdefault(name, {"calls": 0, "rows": 0, "shapes": set()})
            tensor = kwargs.get("sample", kwargs.get("input_ids"))
            if tensor is None and args:
                tensor = args[0]
            entry["calls"] += 1
            if tensor is not None and hasattr(tensor, "shape"):
                entry["rows"] += int(tensor.shape[0])
                entry["shapes"].add(tuple(tensor.shape[1:]))

        self.handles.append(module.register_forward_hook(hook, with_kwargs=True))

    def take(self) -> dict:
        out = {k: {"calls": v["calls"], "rows": v["rows"], "shapes": sorted(str(list(s)) for s in v["shapes"])}
               for k, v in self.counts.items()}
        self.counts = {}
        return out

    def detach(self) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles = []


# --------------------------------------------------------------------------- the two sides


class Ours:
    name = "ours"

    def __init__(self, source, mode: str, device, base_request, grad):
        self.source, self.mode, self.device, self.base, self.grad = source, mode, device, base_request, grad
        self.engine = None
        self.last_counters = None

    def load(self, work: WorkCounter) -> None:
        from sote_ui.engine import Engine

        self.engine = Engine(self.source, mode=self.mode, device=self.device.torch_device)
        self.engine.load()
        work.attach("text_encoder", self.engine.prior_pipe.text_encoder)
        work.attach("prior", self.engine.prior_pipe.prior)
        work.attach("decoder", self.engine.decoder_pipe.decoder)

    def generate(self, seed: int, count: int, decoder_cfg: float):
        request = replace(self.base, seed=seed, count=count, decoder_cfg=decoder_cfg)
        with self.grad():
            result = self.engine.generate(request)
        self.last_counters = result.counters
        self.last_seconds = [item.seconds for item in result.images]
        return [item.image for item in result.images]

    def close(self) -> None:
        if self.engine is not None:
            self.engine.unload()
        self.engine = None


class Baseline:
    """Plain diffusers, as a user would write it from the model card and the diffusers docs."""

    name = "baseline"

    def __init__(self, folders, dtype, placement: str, device, base_request, grad):
        self.folders, self.dtype, self.placement, self.device = folders, dtype, placement, device
        self.base, self.grad = base_request, grad
        self.pipe = None

    def _variant(self, folder: Path):
        variant = self.folders.variant
        return variant if variant and any(folder.glob(f"*.{variant}.safetensors")) else None

    def load(self, work: WorkCounter) -> None:
        from diffusers import DDPMWuerstchenScheduler, StableCascadeCombinedPipeline, StableCascadeUNet
        from diffusers.pipelines.deprecated.wuerstchen.modeling_paella_vq_model import PaellaVQModel
        from transformers import CLIPTextModelWithProjection, CLIPTokenizer

        prior_dir, decoder_dir, dtype = self.folders.prior, self.folders.decoder, self.dtype
        tokenizer = CLIPTokenizer.from_pretrained(prior_dir, subfolder="tokenizer")
        text_encoder = CLIPTextModelWithProjection.from_pretrained(
            prior_dir, subfolder="text_encoder", dtype=dtype, variant=self._variant(prior_dir / "text_encoder"))
        prior = StableCascadeUNet.from_pretrained(
            prior_dir, subfolder="prior", torch_dtype=dtype, variant=self._variant(prior_dir / "prior"))
        prior_scheduler = DDPMWuerstchenScheduler.from_pretrained(prior_dir, subfolder="scheduler")
        decoder = StableCascadeUNet.from_pretrained(
            decoder_dir, subfolder="decoder", torch_dtype=dtype, variant=self._variant(decoder_dir / "decoder"))
        scheduler = DDPMWuerstchenScheduler.from_pretrained(decoder_dir, subfolder="scheduler")
        vqgan = PaellaVQModel.from_pretrained(
            decoder_dir, subfolder="vqgan", torch_dtype=dtype, variant=self._variant(decoder_dir / "vqgan"))
        # The decoder's own text encoder is NOT loaded: the combined pipeline hands the
        # prior's prompt embeddings to the decoder, so the decoder-side text encoder never
        # runs at generation time. We pass the prior's text encoder/tokenizer where the
        # decoder's are asked for (the same objects, so no extra memory), which is exactly
        # what the combined pipeline uses at runtime anyway. With CPU offload the decoder
        # half gets text_encoder=None instead: offloading the prior half and the decoder
        # half would otherwise hook the one shared module twice (sequential offload would
        # even re-offload weights it already moved to the meta device).
        decoder_text_encoder = text_encoder if self.placement == "device" else None
        self.pipe = StableCascadeCombinedPipeline(
            tokenizer=tokenizer, text_encoder=decoder_text_encoder, decoder=decoder, scheduler=scheduler, vqgan=vqgan,
            prior_prior=prior, prior_text_encoder=text_encoder, prior_tokenizer=tokenizer,
            prior_scheduler=prior_scheduler,
        )
        if self.placement == "offload":
            self.pipe.enable_model_cpu_offload(device=self.device.torch_device)
        elif self.placement == "sequential":
            self.pipe.enable_sequential_cpu_offload(device=self.device.torch_device)
        else:
            self.pipe.to(self.device.torch_device)
        self.pipe.set_progress_bar_config(disable=True)
        work.attach("text_encoder", text_encoder)
        work.attach("prior", prior)
        work.attach("decoder", decoder)

    def _call(self, seed: int, decoder_cfg: float, per_prompt: int = 1):
        import torch

        b = self.base
        return self.pipe(
            prompt=b.composed_prompt(),
            negative_prompt=b.negative_prompt,
            width=b.width,
            height=b.height,
            prior_num_inference_steps=b.prior_steps,
            prior_guidance_scale=b.prior_cfg,
            num_inference_steps=b.decoder_steps,
            decoder_guidance_scale=decoder_cfg,
            num_images_per_prompt=per_prompt,
            # A CPU generator, as the engine uses: the same noise work on every device.
            generator=torch.Generator("cpu").manual_seed(seed),
        ).images

    def generate(self, seed: int, count: int, decoder_cfg: float):
        images = []
        self.last_seconds = []
        with self.grad():
            for i in range(count):
                t = time.perf_counter()
                images += self._call(seed + i, decoder_cfg)
                sync(self.device)
                self.last_seconds.append(time.perf_counter() - t)
        return images

    def generate_batched(self, seed: int, count: int, decoder_cfg: float):
        with self.grad():
            return self._call(seed, decoder_cfg, per_prompt=count)

    def close(self) -> None:
        self.pipe = None


# --------------------------------------------------------------------------- measuring


def _is_oom(exc: BaseException) -> bool:
    import torch

    return isinstance(exc, torch.OutOfMemoryError) or "out of memory" in str(exc).lower()


class Clock:
    """Wall seconds and this process's CPU seconds (all threads) of a block, device synced at both ends.

    CPU seconds hardly move when other processes compete for the cores, so on a
    shared CPU machine they are the steadier number; wall seconds are what a
    user waits for, and the only meaningful ones on a GPU.
    """

    def __init__(self, device):
        self.device = device

    def __enter__(self):
        sync(self.device)
        self.wall0, self.cpu0 = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        sync(self.device)
        self.wall = time.perf_counter() - self.wall0
        self.cpu = time.process_time() - self.cpu0
        return False


def _median(values):
    return statistics.median(values) if values else None


def _say(side, message: str) -> None:
    print(f"  [{side.name}] {message}", flush=True)


def measure_job(side, args, device, seeds: dict, keep_loaded: bool) -> dict:
    """Load + N images from nothing loaded, then a warm-up image; peak memory over all of it.

    With ``keep_loaded`` the side stays loaded for the interleaved warm runs;
    otherwise its warm runs follow here and it is dropped.
    """
    side.work = WorkCounter()
    meter = MemoryMeter(device)
    out: dict = {"side": side.name}

    meter.start()
    with Clock(device) as job:
        with Clock(device) as load:
            side.load(side.work)
        _say(side, f"loaded in {load.wall:.2f} s")
        images = side.generate(seeds["job"], args.images, args.decoder_cfg)
    out["load_s"], out["load_cpu_s"] = load.wall, load.cpu
    out["job_s"], out["job_cpu_s"] = job.wall, job.cpu
    out["job_images_s"], out["job_images_cpu_s"] = job.wall - load.wall, job.cpu - load.cpu
    out["job_size"] = list(images[0].size)
    out["job_per_image_s"] = list(side.last_seconds)
    out["work_job"] = side.work.take()
    if isinstance(side, Ours):
        out["counters_job"] = vars(side.last_counters)
    _say(side, f"whole job ({args.images} images) in {job.wall:.2f} s; per image "
         + ", ".join(f"{t:.3f}" for t in out["job_per_image_s"]))

    # Warm-up image, not timed; then its decoder-only change, so the memory peak covers that too.
    side.generate(seeds["warmup"], 1, args.decoder_cfg)
    side.generate(seeds["warmup"], 1, args.changed_decoder_cfg)
    side.work.take()
    if keep_loaded:
        out["memory"] = meter.stop()
        return out
    for k in range(args.warm_runs):
        warm_round(side, out, seeds["warm"] + k, args, device)
    out["memory"] = meter.stop()  # before the batched run, which holds N images at once
    finish_warm(side, out, args, device, seeds)
    close(side, out, device)
    return out


def warm_round(side, out: dict, seed: int, args, device) -> None:
    """One warm image at a fresh seed, then the same request with only the decoder CFG changed."""
    with Clock(device) as clock:
        side.generate(seed, 1, args.decoder_cfg)
    out.setdefault("warm_s", []).append(clock.wall)
    out.setdefault("warm_cpu_s", []).append(clock.cpu)
    out["work_warm_image"] = side.work.take()
    with Clock(device) as clock:
        side.generate(seed, 1, args.changed_decoder_cfg)
    out.setdefault("change_s", []).append(clock.wall)
    out.setdefault("change_cpu_s", []).append(clock.cpu)
    out["work_change"] = side.work.take()
    if isinstance(side, Ours):
        out.setdefault("counters_change_all", []).append(vars(side.last_counters))


def finish_warm(side, out: dict, args, device, seeds: dict) -> None:
    for what in ("warm", "change"):
        for unit in ("s", "cpu_s"):
            values = out.setdefault(f"{what}_{unit}", [])
            out[f"{what}_median_{unit}"] = _median(values)
            out[f"{what}_min_{unit}"] = min(values) if values else None
    counters = out.pop("counters_change_all", [])
    if counters:
        out["counters_change"] = counters[-1]
        out["prior_reused_every_time"] = all(c["prior_runs"] == 0 and c["prior_cache_hits"] == 1 for c in counters)
    if args.warm_runs:
        _say(side, f"warm median {out['warm_median_s']:.3f} s/image, "
                   f"decoder-only change {out['change_median_s']:.3f} s")
    if isinstance(side, Baseline) and args.batched and args.images > 1:
        try:
            with Clock(device) as clock:
                side.generate_batched(seeds["batched"], args.images, args.decoder_cfg)
            out["batched_s"], out["batched_cpu_s"] = clock.wall, clock.cpu
            out["batched_per_image_s"] = clock.wall / args.images
            out["batched_per_image_cpu_s"] = clock.cpu / args.images
            _say(side, f"batched {args.images} images (num_images_per_prompt) in {clock.wall:.2f} s")
        except Exception as exc:  # noqa: BLE001 - report OOM, re-raise anything else
            if not _is_oom(exc):
                raise
            out["batched_s"] = None
            out["batched_error"] = "out of memory"
            _say(side, "batched run: out of memory")
        side.work.take()


def close(side, out: dict, device) -> None:
    import torch

    side.work.detach()
    side.close()
    gc.collect()
    if device.kind in ("cuda", "rocm"):
        torch.cuda.empty_cache()
        out["memory"]["left_allocated_bytes"] = int(torch.cuda.memory_allocated())


def process_warmup(folders, dtype, placement, device, request, grad, decoder_cfgs) -> float:
    """One throwaway 2+2-step image at the benchmark's size, both decoder CFGs, with
    components loaded for it alone and dropped after.

    The first image of a process pays one-time costs (kernel setup for each new
    shape, allocator growth, lazy imports; on a GPU also CUDA's lazy module
    loading and cuBLAS/cuDNN handles): on the tiny model at 1024x1536 on a
    2-core CPU the first image took ~1.0 s against ~0.75 s for later ones.
    Without this warm-up it lands on whichever side runs first.
    """
    import torch

    t = time.perf_counter()
    side = Baseline(folders, dtype, placement, device, replace(request, prior_steps=2, decoder_steps=2), grad)
    side.load(WorkCounter())
    for cfg in decoder_cfgs:
        side.generate(0, 1, cfg)
    side.close()
    gc.collect()
    if device.kind in ("cuda", "rocm"):
        torch.cuda.empty_cache()
    return time.perf_counter() - t


# --------------------------------------------------------------------------- output


def _fmt_s(value) -> str:
    return "n/a" if value is None else f"{value:.3f} s"


def _fmt_bytes(value) -> str:
    if value is None:
        return "n/a"
    return f"{value / 1024**3:.2f} GiB" if value >= 1024**3 else f"{value / 1024**2:.0f} MiB"


def _ratio(a, b) -> str:
    return "n/a" if a is None or b is None or b == 0 else f"{a / b:.2f}x"


def print_table(rows: list[tuple[str, str, str, str]]) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for n, row in enumerate(rows):
        print("  " + row[0].ljust(widths[0]) + "  " + "  ".join(c.rjust(w) for c, w in zip(row[1:], widths[1:])))
        if n == 0:
            print("  " + "-" * (sum(widths) + 6))


def report(ours: dict, base: dict, args, device) -> dict:
    n = args.images
    rows = [("measurement", "ours", "baseline", "ours/baseline")]
    rows.append(("load (nothing loaded -> ready)", _fmt_s(ours["load_s"]), _fmt_s(base["load_s"]),
                 _ratio(ours["load_s"], base["load_s"])))
    rows.append((f"1. whole job: load + {n} images", _fmt_s(ours["job_s"]), _fmt_s(base["job_s"]),
                 _ratio(ours["job_s"], base["job_s"])))
    rows.append((f"   of which the {n} images", _fmt_s(ours["job_images_s"]), _fmt_s(base["job_images_s"]),
                 _ratio(ours["job_images_s"], base["job_images_s"])))
    if args.warm_runs:
        how = "interleaved, " if args.interleave else ""
        rows.append((f"2. warm s/image ({how}median of {args.warm_runs})", _fmt_s(ours["warm_median_s"]),
                     _fmt_s(base["warm_median_s"]), _ratio(ours["warm_median_s"], base["warm_median_s"])))
        rows.append(("   warm s/image, fastest run", _fmt_s(ours["warm_min_s"]), _fmt_s(base["warm_min_s"]),
                     _ratio(ours["warm_min_s"], base["warm_min_s"])))
        rows.append((f"3. decoder-only change, cfg {args.decoder_cfg:g} -> {args.changed_decoder_cfg:g} (median)",
                     _fmt_s(ours["change_median_s"]), _fmt_s(base["change_median_s"]),
                     _ratio(ours["change_median_s"], base["change_median_s"])))
        rows.append(("   decoder-only change, fastest run", _fmt_s(ours["change_min_s"]),
                     _fmt_s(base["change_min_s"]), _ratio(ours["change_min_s"], base["change_min_s"])))
    if base.get("batched_s") is not None:
        rows.append((f"   baseline batched, s/image (num_images_per_prompt={n})", _fmt_s(ours["warm_median_s"]),
                     _fmt_s(base["batched_per_image_s"]), _ratio(ours["warm_median_s"], base["batched_per_image_s"])))
    mem_o, mem_b = ours["memory"], base["memory"]
    rows.append((f"4. peak memory ({mem_o['kind']})", _fmt_bytes(mem_o["peak_bytes"]), _fmt_bytes(mem_b["peak_bytes"]),
                 _ratio(mem_o["peak_bytes"], mem_b["peak_bytes"])))
    if mem_o.get("peak_reserved_bytes") is not None:
        rows.append(("   peak reserved (cuda max_memory_reserved)", _fmt_bytes(mem_o["peak_reserved_bytes"]),
                     _fmt_bytes(mem_b["peak_reserved_bytes"]),
                     _ratio(mem_o["peak_reserved_bytes"], mem_b["peak_reserved_bytes"])))
    if mem_o.get("peak_bytes") is not None and mem_o.get("start_bytes") is not None:
        above_o = mem_o["peak_bytes"] - mem_o["start_bytes"]
        above_b = mem_b["peak_bytes"] - mem_b["start_bytes"]
        rows.append(("   peak above what was in use when the side started", _fmt_bytes(above_o),
                     _fmt_bytes(above_b), _ratio(above_o, above_b)))
        rows.append(("   (in use when the side started)", _fmt_bytes(mem_o["start_bytes"]),
                     _fmt_bytes(mem_b["start_bytes"]), ""))
    print()
    print("Results (ratio < 1: ours is faster / smaller)")
    print_table(rows)
    if device.kind == "cpu":
        cpu_rows = [("same, in CPU seconds of this process", "ours", "baseline", "ours/baseline")]
        for label, key in (("load", "load_cpu_s"), (f"1. whole job: load + {n} images", "job_cpu_s"),
                           (f"   of which the {n} images", "job_images_cpu_s"),
                           ("2. warm s/image (median)", "warm_median_cpu_s"),
                           ("3. decoder-only change (median)", "change_median_cpu_s")):
            if ours.get(key) is not None:
                cpu_rows.append((label, _fmt_s(ours[key]), _fmt_s(base[key]), _ratio(ours[key], base[key])))
        if base.get("batched_per_image_cpu_s") is not None:
            cpu_rows.append(("   baseline batched, s/image", _fmt_s(ours["warm_median_cpu_s"]),
                             _fmt_s(base["batched_per_image_cpu_s"]),
                             _ratio(ours["warm_median_cpu_s"], base["batched_per_image_cpu_s"])))
        print()
        print_table(cpu_rows)
        print("  (CPU seconds: all threads of this process; steadier than wall time when other processes share "
              "the cores)")
    if args.warm_runs:
        print()
        print("  warm runs, s/image:  ours " + ", ".join(f"{t:.3f}" for t in ours["warm_s"])
              + "  | baseline " + ", ".join(f"{t:.3f}" for t in base["warm_s"]))
        print("  decoder-only change: ours " + ", ".join(f"{t:.3f}" for t in ours["change_s"])
              + "  | baseline " + ", ".join(f"{t:.3f}" for t in base["change_s"]))
        reused = ours.get("prior_reused_every_time")
        counters = ours.get("counters_change", {})
        print(f"  ours on the decoder-only change: prior reused from cache = {reused} "
              f"(prior runs {counters.get('prior_runs')}, cache hits {counters.get('prior_cache_hits')}, "
              f"decoder steps {counters.get('decoder_steps')}); the baseline re-runs text encoder + prior + decoder")
    if mem_o.get("note"):
        print(f"  memory: {mem_o['note']}; covers load, the job, the warm-up image and its decoder change"
              + ("" if args.interleave else " and the warm runs") + ", not the batched run")
    elif mem_o.get("peak_bytes") is not None:
        print("  memory: covers load, the job, the warm-up image and its decoder change"
              + ("" if args.interleave else " and the warm runs") + ", not the batched run")
    if args.interleave:
        print("  interleaved: the second side was measured with the first still loaded; compare memory by "
              "'peak above start'")

    print()
    print("Work check (forward passes seen by hooks on the modules: calls / batch rows):")
    phases = [("job", "work_job", f"job ({n} images)")]
    if args.warm_runs:
        phases += [("warm", "work_warm_image", "one warm image"), ("change", "work_change", "decoder-only change")]
    mismatches = []
    for _, key, label in phases:
        wo, wb = ours.get(key, {}), base.get(key, {})
        cells = []
        for module in ("text_encoder", "prior", "decoder"):
            a, b = wo.get(module, {"calls": 0, "rows": 0, "shapes": []}), wb.get(module, {"calls": 0, "rows": 0,
                                                                                        "shapes": []})
            cells.append(f"{module} {a['calls']}/{a['rows']} vs {b['calls']}/{b['rows']}")
            if module == "decoder" and (a != b):
                mismatches.append(f"{label}: decoder work differs")
            if module == "prior" and key != "work_change" and a != b:
                mismatches.append(f"{label}: prior work differs")
        print(f"  {label:22} ours vs baseline: " + "; ".join(cells))
    for key, module in (("work_job", "prior"), ("work_job", "decoder")):
        shapes = ours.get(key, {}).get(module, {}).get("shapes")
        if shapes:
            print(f"  {module} input (C,H,W): {', '.join(shapes)}")
    print("  sizes out: ours %s, baseline %s" % (ours["job_size"], base["job_size"]))
    if ours["job_size"] != base["job_size"]:
        mismatches.append("output sizes differ")
    if mismatches:
        print("  WARNING: not the same work: " + "; ".join(mismatches))
    else:
        print("  same prior and decoder work on both sides (the engine's text encoder runs less: prompt cache; "
              "on the decoder-only change it skips the prior by design)")

    result = {
        "ours": ours,
        "baseline": base,
        "ratios": {
            "load": _safe_div(ours["load_s"], base["load_s"]),
            "job": _safe_div(ours["job_s"], base["job_s"]),
            "job_images": _safe_div(ours["job_images_s"], base["job_images_s"]),
            "warm_per_image": _safe_div(ours.get("warm_median_s"), base.get("warm_median_s")),
            "decoder_only_change": _safe_div(ours.get("change_median_s"), base.get("change_median_s")),
            "peak_memory": _safe_div(mem_o["peak_bytes"], mem_b["peak_bytes"]),
            "peak_memory_above_start": _safe_div(
                None if mem_o["peak_bytes"] is None else mem_o["peak_bytes"] - mem_o["start_bytes"],
                None if mem_b["peak_bytes"] is None else mem_b["peak_bytes"] - mem_b["start_bytes"]),
            "ours_warm_vs_baseline_batched": _safe_div(ours.get("warm_median_s"), base.get("batched_per_image_s")),
        },
        "ratios_cpu_seconds": {
            key: _safe_div(ours.get(field), base.get(field))
            for key, field in (("load", "load_cpu_s"), ("job", "job_cpu_s"), ("job_images", "job_images_cpu_s"),
                               ("warm_per_image", "warm_median_cpu_s"),
                               ("decoder_only_change", "change_median_cpu_s"))
        },
        "same_work": not mismatches,
        "work_mismatches": mismatches,
    }
    return result


def _safe_div(a, b):
    return None if a is None or b in (None, 0) else a / b


def _jsonable(value):
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


# --------------------------------------------------------------------------- main


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    m = p.add_argument_group("model (default: --tiny)")
    m.add_argument("--tiny", action="store_true",
                   help="build the tiny random-weight pair in a temp folder (the default when no model is given)")
    m.add_argument("--model",
                   help="a name from sote_ui/models.json, a Hub id, or a folder whose card names its partner")
    m.add_argument("--prior", help="prior folder or Hub id")
    m.add_argument("--decoder", help="decoder folder or Hub id")
    p.add_argument("--device", default=None, help="cuda, cuda:N, xpu, mps or cpu (default: the best one present)")
    p.add_argument("--mode", default=None, help="our engine's memory mode (default: bf16 on a GPU, fp32 on the CPU); "
                                                "the baseline runs in the same dtype and placement")
    p.add_argument("--width", type=int, default=1024)
    p.add_argument("--height", type=int, default=1536)
    p.add_argument("--prior-steps", type=int, default=20)
    p.add_argument("--decoder-steps", type=int, default=10)
    p.add_argument("--prior-cfg", type=float, default=8.0)
    p.add_argument("--decoder-cfg", type=float, default=1.0)
    p.add_argument("--changed-decoder-cfg", type=float, default=1.5, help="decoder CFG of the decoder-only change")
    p.add_argument("--images", type=int, default=4, help="images in the whole-job measurement")
    p.add_argument("--warm-runs", type=int, default=3, help="timed warm images (each followed by its decoder change)")
    p.add_argument("--prompt", default=DEFAULT_PROMPT)
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's default)")
    p.add_argument("--order", choices=("ours-first", "baseline-first"), default="ours-first",
                   help="which side runs first; one-time process costs land on the first (default: ours)")
    p.add_argument("--no-batched", dest="batched", action="store_false",
                   help="skip the extra baseline run with num_images_per_prompt=N")
    p.add_argument("--no-prewarm", dest="prewarm", action="store_false",
                   help="don't read the weight files once before timing (then the first side loads from a cold disk)")
    p.add_argument("--interleave", action="store_true",
                   help="keep both sides loaded and alternate their warm runs (measurements 2 and 3), so noise from "
                        "other processes hits both alike; needs memory for both models at once")
    p.add_argument("--no-process-warmup", dest="process_warmup", action="store_false",
                   help="skip the throwaway first image that takes one-time process costs off the first side")
    p.add_argument("--inference-mode", action="store_true",
                   help="wrap generation on both sides in torch.inference_mode() instead of torch.no_grad()")
    p.add_argument("--json", help="write all results to this JSON file")
    return p.parse_args(argv)


def prewarm(folders, parts) -> tuple[int, float]:
    """Read every file both sides load once, so neither side pays for a cold disk cache."""
    t = time.perf_counter()
    total = 0
    for folder, names in parts:
        for name in names:
            for path in sorted((folder / name).glob("*")):
                if path.is_file():
                    with open(path, "rb") as handle:
                        while chunk := handle.read(64 << 20):
                            total += len(chunk)
    return total, time.perf_counter() - t


def main(argv=None) -> int:
    args = parse_args(argv)
    from sote_ui.core.errors import InputError

    try:
        return run(args)
    except InputError as exc:  # includes ModelError: a bad model, device, mode or setting
        print(f"error: {exc}", file=sys.stderr)
        return 2


def run(args) -> int:
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)

    from sote_ui.core.memory import choose_mode
    from sote_ui.core.request import build_request
    from sote_ui.engine import devices
    from sote_ui.engine.loading import DECODER_PARTS, PRIOR_PARTS, component_sizes, fetch
    from sote_ui.engine.models import ModelSource, resolve_source

    device = devices.detect_device(args.device)
    mode = args.mode or ("bf16" if device.is_gpu and device.bf16 else "fp32")
    tiny = args.tiny or not (args.model or args.prior or args.decoder)

    tmp = None
    if tiny:
        from sote_ui.engine.builders import build_tiny_pair

        tmp = tempfile.TemporaryDirectory(prefix="sote-bench-tiny-")
        prior_dir, decoder_dir = build_tiny_pair(tmp.name)
        source = ModelSource(str(prior_dir), str(decoder_dir), name="tiny (random weights)")
    else:
        source = resolve_source(args.model, args.prior, args.decoder)
    folders = fetch(source)  # downloads (if any) happen here, outside every timing
    local = ModelSource(str(folders.prior), str(folders.decoder), folders.variant, source.label)
    sizes = component_sizes(folders)
    plan = choose_mode(mode, device, sizes, args.width, args.height)
    dtype = {"bfloat16": torch.bfloat16, "float32": torch.float32}[plan.compute_dtype]

    request = build_request({
        "prompt": args.prompt, "width": args.width, "height": args.height, "seed": args.seed,
        "prior_steps": args.prior_steps, "prior_cfg": args.prior_cfg,
        "decoder_steps": args.decoder_steps, "decoder_cfg": args.decoder_cfg,
    })

    machine = machine_info(device)
    print(f"machine: {machine['cpu']}, {machine['cores']} cores (torch threads {machine['torch_threads']}), "
          f"torch {machine['torch']}, diffusers {machine['diffusers']}, transformers {machine['transformers']}, "
          f"python {machine['python']}, device {device.torch_device} ({device.name}"
          + (f", {machine['device_memory_gib']} GiB" if device.is_gpu else "") + ")")
    millions = {k: f"{getattr(sizes, k) / 1e6:,.1f}M" for k in ("total", "text_encoder", "prior", "decoder", "vqgan")}
    print(f"model:   {source.label} ({millions['total']} parameters: text encoder {millions['text_encoder']}, "
          f"prior {millions['prior']}, decoder {millions['decoder']}, VQGAN {millions['vqgan']})")
    print(f"         prior {folders.prior}\n         decoder {folders.decoder}")
    print(f"mode:    ours {plan.mode.value} (compute {plan.compute_dtype}, placement {plan.mode.placement.value}); "
          f"baseline {plan.compute_dtype}, placement {plan.mode.placement.value}")
    if plan.mode.weights.value == "fp8":
        print("         NOTE: the baseline has no fp8 weights; it runs in the compute dtype, so memory and speed "
              "are not like for like in fp8 modes")
    print(f"job:     {args.width}x{args.height}, prior {args.prior_steps} steps CFG {args.prior_cfg:g}, "
          f"decoder {args.decoder_steps} steps CFG {args.decoder_cfg:g}, {args.images} images, "
          f"{args.warm_runs} warm runs, seed {args.seed}, order {args.order}")
    grad = torch.inference_mode if args.inference_mode else torch.no_grad
    order_first = "ours" if args.order == "ours-first" else "baseline"
    print(f"         generation under torch.{grad.__name__}() on both sides; "
          "both sides get the same composed prompt and negative prompt")
    load = machine["load_average_at_start"]
    if load and load[0] > max(0.5, 0.25 * (os.cpu_count() or 1)):
        print(f"WARNING: 1-minute load average {load[0]:.2f} before the benchmark: other processes may share this "
              "machine, timings can be noisy (see --interleave, --threads 1)")
    if tiny or sizes.total < 50_000_000:
        what = "tiny random-weight model" if tiny else f"small model ({sizes.total / 1e6:.1f}M parameters)"
        print(f"NOTE:    {what}: the numbers measure pipeline overhead (Python, scheduling, "
              "VQGAN decode, copies), not real model speed")

    # Same text on both sides; over 75 tokens the engine encodes extra chunks and the baseline truncates.
    from transformers import CLIPTokenizer

    tok = CLIPTokenizer.from_pretrained(folders.prior, subfolder="tokenizer")
    lengths = [len(tok(t, add_special_tokens=False).input_ids) for t in (request.composed_prompt(),
                                                                          request.negative_prompt)]
    print(f"prompt:  {request.composed_prompt()!r} ({lengths[0]} tokens; negative {lengths[1]} tokens)")
    if max(lengths) > 75:
        print("WARNING: over 75 tokens: the engine encodes several chunks, the baseline truncates; not like for like")

    # One-time process costs out of the way before timing: imports, device context, disk cache.
    import diffusers  # noqa: F401
    from diffusers import StableCascadeCombinedPipeline, StableCascadeUNet  # noqa: F401
    from diffusers.pipelines.deprecated.wuerstchen.modeling_paella_vq_model import PaellaVQModel  # noqa: F401

    import sote_ui.engine.facade  # noqa: F401

    if device.kind != "cpu":
        torch.zeros(1, device=device.torch_device) + 1
        sync(device)
    if args.prewarm:
        read, secs = prewarm(folders, ((folders.prior, PRIOR_PARTS), (folders.decoder, DECODER_PARTS)))
        print(f"prewarm: read {_fmt_bytes(read)} of weights in {secs:.1f} s (disk cache warm for both sides)")

    if args.process_warmup:
        secs = process_warmup(folders, dtype, plan.mode.placement.value, device, request, grad,
                              (args.decoder_cfg, args.changed_decoder_cfg))
        print(f"warm-up: one throwaway 2+2-step image per decoder CFG at {args.width}x{args.height} in {secs:.1f} s "
              "(one-time process costs kept off both sides)")
    else:
        print(f"warm-up: none (--no-process-warmup): one-time process costs land on the first side ({order_first})")

    seeds = {"job": args.seed, "warmup": args.seed + 1000, "warm": args.seed + 1001,
             "batched": args.seed + 2000}
    sides = {
        "ours": Ours(local, plan.mode.value, device, request, grad),
        "baseline": Baseline(folders, dtype, plan.mode.placement.value, device, request, grad),
    }
    order = ["ours", "baseline"] if args.order == "ours-first" else ["baseline", "ours"]
    results = {}
    t_all = time.perf_counter()
    print()
    for name in order:
        print(f"running {name} ...", flush=True)
        results[name] = measure_job(sides[name], args, device, seeds, keep_loaded=args.interleave)
    if args.interleave:
        print(f"interleaved warm runs ({args.warm_runs} rounds, both sides loaded, order alternating) ...", flush=True)
        for k in range(args.warm_runs):
            for name in (order if k % 2 == 0 else order[::-1]):
                warm_round(sides[name], results[name], seeds["warm"] + k, args, device)
        for name in order:
            finish_warm(sides[name], results[name], args, device, seeds)
            close(sides[name], results[name], device)
    total = time.perf_counter() - t_all

    summary = report(results["ours"], results["baseline"], args, device)
    print(f"\nbenchmark wall time: {total:.1f} s; load average at start {machine['load_average_at_start']}, "
          f"at end {_loadavg()}")
    if tmp is not None:
        tmp.cleanup()

    if args.json:
        payload = {
            "machine": machine,
            "model": {"label": source.label, "prior": str(folders.prior), "decoder": str(folders.decoder),
                      "tiny": tiny},
            "settings": {k: v for k, v in vars(args).items() if k != "json"} | {
                "tiny": tiny, "device": device.torch_device, "mode": plan.mode.value,
                "compute_dtype": plan.compute_dtype, "placement": plan.mode.placement.value,
                "prompt_tokens": lengths[0], "negative_tokens": lengths[1]},
            "wall_s": total,
            **summary,
        }
        Path(args.json).write_text(json.dumps(_jsonable(payload), indent=2) + "\n", encoding="utf-8")
        print(f"wrote {args.json}")
    return 0 if summary["same_work"] else 1


if __name__ == "__main__":
    sys.exit(main())
