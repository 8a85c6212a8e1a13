#!/usr/bin/env python
"""GPU check at real scale, in one go: every memory mode on the full-size pair, and ``auto`` on smaller cards.

1. Builds the full-size random-weight pair on this machine's own disk (no Hub
   needed): ``python -m sote_ui make-tiny --full`` into ``--pair`` (kept and
   reused if it is already there).
2. For each mode at 1024x1536 with 40+10 steps: load time, seconds per image
   (after a 2+2-step warm-up image) and peak VRAM (``torch.cuda.max_memory_allocated``
   and ``max_memory_reserved``). Sequential offload runs fewer steps (it moves
   every layer for every step) and its seconds per image are scaled to 40+10.
3. Emulates 8, 12 and 16 GB cards: the device is described with that much
   memory to ``auto``, and the caching allocator is capped there with
   ``torch.cuda.set_per_process_memory_fraction``; ``auto``'s mode must then
   really generate a 1024x1536 image (2+2 steps: the peak per step is the
   same) without running out of memory.

Prints a table and writes JSON (``--json``, default ``$OUT/gpu_check.json``
when ``$OUT`` is set). A time guard skips what would not finish before
``--minutes`` (default 7.5) and says so. Meant to finish in under 8 minutes on
an H100.

Examples::

    python bench/gpu_check.py                       # the full check, on the GPU machine
    python bench/gpu_check.py --tiny --device cpu   # the same flow on the tiny pair, anywhere (a smoke test)
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

GPU_MODES = ["bf16", "fp8", "offload-bf16", "offload-fp8", "fp32", "sequential-bf16"]
CPU_MODES = ["bf16", "fp8", "fp32"]
BUDGETS_GB = [8, 12, 16]
GiB = 1024**3


def build_pair(pair: Path, tiny: bool) -> tuple[Path, Path]:
    prior, decoder = pair / "prior", pair / "decoder"
    if (prior / "prior" / "config.json").is_file() and (decoder / "vqgan" / "config.json").is_file():
        return prior, decoder
    if tiny:
        from sote_ui.engine.builders import build_tiny_pair

        return build_tiny_pair(pair)
    # In a child process, so the builder's memory is gone before the checks start.
    subprocess.run([sys.executable, "-m", "sote_ui", "make-tiny", "--full", str(pair)], cwd=ROOT, check=True,
                   env=dict(os.environ, PYTHONPATH=str(ROOT)))
    return prior, decoder


class Device:
    """Peak-memory and capacity helpers for the device under test (CUDA or, for smoke tests, the CPU)."""

    def __init__(self, name: str):
        import torch

        self.torch = torch
        self.cuda = name.startswith("cuda")
        self.name = torch.cuda.get_device_name(0) if self.cuda else "CPU"

    def reset(self) -> None:
        gc.collect()
        if self.cuda:
            self.torch.cuda.synchronize()
            self.torch.cuda.empty_cache()
            self.torch.cuda.reset_peak_memory_stats()

    def sync(self) -> None:
        if self.cuda:
            self.torch.cuda.synchronize()

    def peaks(self) -> dict:
        if not self.cuda:
            return {"allocated": None, "reserved": None}
        return {"allocated": int(self.torch.cuda.max_memory_allocated()),
                "reserved": int(self.torch.cuda.max_memory_reserved())}

    def cap(self, budget: int | None) -> None:
        """Cap the caching allocator at ``budget`` bytes (None: no cap)."""
        if not self.cuda:
            return
        total = self.torch.cuda.get_device_properties(0).total_memory
        self.torch.cuda.set_per_process_memory_fraction(1.0 if budget is None else min(1.0, budget / total), 0)


_REAL_DETECT = None


def emulated_device(budget: int | None) -> None:
    """Make ``detect_device`` describe a card of ``budget`` bytes (None: the real one again)."""
    global _REAL_DETECT
    from sote_ui.engine import devices

    if _REAL_DETECT is None:
        _REAL_DETECT = devices.detect_device
    real = _REAL_DETECT
    if budget is None:
        devices.detect_device = real
        return

    def detect(requested=None):
        info = real(requested)
        used = max(0, info.total_bytes - info.free_bytes)  # other processes and this one's context
        return replace(info, name=f"{info.name} as a {budget / GiB:.0f} GB card", total_bytes=budget,
                       free_bytes=max(0, budget - used))

    devices.detect_device = detect


def run_mode(source, mode: str, device: Device, device_name: str, size: tuple[int, int], steps: tuple[int, int],
             warmup: bool) -> dict:
    from sote_ui.core.errors import GenerationError
    from sote_ui.core.request import build_request
    from sote_ui.engine import Engine

    row: dict = {"mode": mode}
    engine = Engine(source, mode=mode, device=device_name)
    try:
        device.reset()
        started = time.perf_counter()
        engine.load()
        device.sync()
        row["load_s"] = round(time.perf_counter() - started, 2)
        row["picked"] = engine.plan.mode.value
        row["reason"] = engine.plan.reason
        row["fp8_backend"] = engine.plan.fp8_backend
        row["notes"] = engine.load_notes
        base = {"prompt": "1girl, solo, looking at viewer, smile", "width": size[0], "height": size[1], "seed": 7}
        if warmup:
            engine.generate(build_request({**base, "prior_steps": 2, "decoder_steps": 2}))
        device.sync()
        started = time.perf_counter()
        result = engine.generate(build_request({**base, "prior_steps": steps[0], "decoder_steps": steps[1]}))
        device.sync()
        row["image_s"] = round(time.perf_counter() - started, 2)
        row["steps"] = list(steps)
        row.update(device.peaks())
        pixels = result.images[0].image
        row["ok"] = pixels.size == size
    except GenerationError as exc:  # out of memory, NaN: a failed row, the check goes on
        row.update({"ok": False, "error": str(exc)[:300], **device.peaks()})
    except Exception as exc:
        row.update({"ok": False, "error": f"{type(exc).__name__}: {str(exc)[:300]}", **device.peaks()})
    finally:
        engine.unload()
        del engine
        device.reset()
    return row


def gb(value) -> str:
    return "-" if value is None else f"{value / GiB:.1f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pair", help="where the full-size pair is (built there if missing; default: a temp folder)")
    parser.add_argument("--tiny", action="store_true", help="use the tiny pair instead (a smoke test of this script)")
    parser.add_argument("--device", default="cuda", help="cuda (default) or cpu (smoke tests only)")
    parser.add_argument("--width", type=int, default=1024)
    parser.add_argument("--height", type=int, default=1536)
    parser.add_argument("--prior-steps", type=int, default=40)
    parser.add_argument("--decoder-steps", type=int, default=10)
    parser.add_argument("--modes", default=None, help="comma-separated modes (default: all this device supports)")
    parser.add_argument("--budgets", default=",".join(map(str, BUDGETS_GB)), help="emulated cards in GB ('' for none)")
    parser.add_argument("--minutes", type=float, default=7.5, help="time guard: skip what would start after this")
    parser.add_argument("--json", default=None, help="write the results here (default $OUT/gpu_check.json)")
    args = parser.parse_args(argv)

    began = time.perf_counter()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("SOTE_CACHE", tempfile.mkdtemp(prefix="sote-gpu-check-cache-"))
    pair = Path(args.pair or tempfile.mkdtemp(prefix="sote-gpu-check-pair-"))
    print(f"building the {'tiny' if args.tiny else 'full-size'} pair in {pair} ...", flush=True)
    prior, decoder = build_pair(pair, args.tiny)
    built_s = round(time.perf_counter() - began, 1)

    import torch

    from sote_ui.engine.models import ModelSource

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("error: no CUDA GPU here; use --device cpu for a smoke test", file=sys.stderr)
        return 2
    device = Device(args.device)
    source = ModelSource(str(prior), str(decoder), name="full-size random" if not args.tiny else "tiny")
    size = (args.width, args.height)
    modes = args.modes.split(",") if args.modes else (GPU_MODES if device.cuda else CPU_MODES)
    results: dict = {"device": device.name, "torch": torch.__version__, "size": list(size),
                     "steps": [args.prior_steps, args.decoder_steps], "build_s": built_s, "modes": [],
                     "budgets": [], "skipped": []}
    deadline = began + args.minutes * 60

    def time_left() -> float:
        return deadline - time.perf_counter()

    emulated_device(None)
    for mode in modes:
        if time_left() < 45:
            results["skipped"].append(f"{mode} (time guard)")
            continue
        steps = (args.prior_steps, args.decoder_steps)
        scale = 1.0
        if mode.startswith("sequential"):  # every layer crosses the bus at every step: few steps, scaled
            steps = (max(1, args.prior_steps // 10), max(1, args.decoder_steps // 5))
            scale = (args.prior_steps + args.decoder_steps) / sum(steps)
        print(f"mode {mode} ...", flush=True)
        row = run_mode(source, mode, device, args.device, size, steps, warmup=not mode.startswith("sequential"))
        if row.get("ok") and scale != 1.0:
            row["image_s_scaled"] = round(row["image_s"] * scale, 1)
        results["modes"].append(row)
        print(f"  {json.dumps({k: v for k, v in row.items() if k not in ('reason', 'notes')})}", flush=True)

    for budget_gb in [int(b) for b in args.budgets.split(",") if b.strip()]:
        if time_left() < 40:
            results["skipped"].append(f"auto at {budget_gb} GB (time guard)")
            continue
        budget = budget_gb * GiB
        print(f"auto on an emulated {budget_gb} GB card ...", flush=True)
        emulated_device(budget)
        device.cap(budget)
        try:
            row = run_mode(source, "auto", device, args.device, size, (2, 2), warmup=False)
        finally:
            device.cap(None)
            emulated_device(None)
        row["budget_gb"] = budget_gb
        row["within_budget"] = bool(row.get("ok")) and (row.get("reserved") is None or row["reserved"] <= budget)
        results["budgets"].append(row)
        print(f"  picked {row.get('picked')}: {'ran' if row.get('ok') else 'FAILED ' + row.get('error', '')}",
              flush=True)

    results["total_s"] = round(time.perf_counter() - began, 1)
    print(f"\n{results['device']}, torch {results['torch']}, {size[0]}x{size[1]}, "
          f"{args.prior_steps}+{args.decoder_steps} steps; pair built in {built_s} s")
    print(f"{'mode':16} {'backend':9} {'load s':>7} {'s/image':>8} {'peak alloc GiB':>15} {'peak reserved GiB':>18}  ok")
    for row in results["modes"]:
        per_image = row.get("image_s_scaled", row.get("image_s"))
        mark = "*" if "image_s_scaled" in row else ""
        print(f"{row['mode']:16} {str(row.get('fp8_backend') or '-'):9} {row.get('load_s', '-')!s:>7} "
              f"{(str(per_image) + mark) if per_image is not None else '-':>8} {gb(row.get('allocated')):>15} "
              f"{gb(row.get('reserved')):>18}  {'yes' if row.get('ok') else 'NO: ' + row.get('error', '')[:80]}")
    if any("image_s_scaled" in row for row in results["modes"]):
        print("* run with fewer steps, scaled to the full step count")
    for row in results["budgets"]:
        print(f"auto at {row['budget_gb']:>2} GB -> {row.get('picked', '?'):16} "
              f"{'ran within budget' if row['within_budget'] else 'FAILED: ' + row.get('error', 'over budget')}"
              f" (peak reserved {gb(row.get('reserved'))} GiB)")
    for skipped in results["skipped"]:
        print(f"skipped: {skipped}")
    print(f"total {results['total_s']} s")

    target = args.json or (str(Path(os.environ["OUT"]) / "gpu_check.json") if os.environ.get("OUT") else None)
    if target:
        Path(target).write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
        print(f"JSON: {target}")
    failed = [r for r in results["modes"] if not r.get("ok")] + [r for r in results["budgets"]
                                                                  if not r["within_budget"]]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
