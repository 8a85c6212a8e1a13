#!/usr/bin/env python
"""LoRA on the prior: what switching costs and what it adds per step, as adapters (forward hooks, the
engine's way) and merged into the weights (with a copy kept to restore them).

Two synthetic kohya-format LoRAs (``--rank``, every Linear layer of the prior and the text encoder's
attention and MLP layers, fp16 like kohya's files) are written for the pair, then:

1. **read**: reading and mapping one file (the first use of a LoRA);
2. **switch**: from LoRA A to LoRA B: adapters swap hooks (``adapter_hook_s``) and place B's matrices on
   the device (``adapter_switch_s``: the first forward with B, less one step);
   merging restores the saved weights and adds B (not possible on 8-bit weights: shown n/a);
3. **seconds per prior step**: the prior UNet's forward at the image's latent size with CFG (batch 2),
   plain, with adapters and merged (the fastest of ``--steps`` runs after one warm-up);
4. **memory**: extra host RSS from reading both files and running with one hooked in (measured after a
   plain forward has paged in the base weights), and on CUDA the extra device
   memory the adapters hold; merging keeps a host copy of every touched weight (its size is shown).

Example (from the repository root)::

    python bench/bench_lora.py                         # the tiny pair, CPU, fp32 (a smoke test)
    python bench/bench_lora.py --full /data/fullsize --mode bf16 --json lora-bf16.json
    python bench/bench_lora.py --full /data/fullsize --mode fp8 --json lora-fp8.json

``--full DIR`` is a pair made by ``python -m sote_ui make-tiny --full DIR`` (~13 GB). On the tiny pair
the figures measure overhead, not real speed.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def rss_mb() -> float:
    """The process's resident memory now (Linux), in MB."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def write_lora(path: Path, prior, text_encoder, rank: int, seed: int) -> int:
    """A kohya-format LoRA on every Linear of the prior and the text encoder's attention/MLP; returns its bytes."""
    import torch
    from safetensors.torch import save_file

    from sote_ui.engine.lora import stability_name

    generator = torch.Generator().manual_seed(seed)
    tensors = {}
    targets = [("lora_unet_" + stability_name(n).replace(".", "_"), m) for n, m in prior.named_modules()
               if isinstance(m, torch.nn.Linear)]
    targets += [("lora_te_" + n.replace(".", "_"), m) for n, m in text_encoder.named_modules()
                if isinstance(m, torch.nn.Linear) and (".self_attn." in n or ".mlp." in n)]
    for key, module in targets:
        out_features, in_features = module.weight.shape
        tensors[key + ".lora_down.weight"] = (torch.randn(rank, in_features, generator=generator)
                                              / math.sqrt(in_features)).half()
        tensors[key + ".lora_up.weight"] = (torch.randn(out_features, rank, generator=generator) * 0.01).half()
        tensors[key + ".alpha"] = torch.tensor(float(rank)).half()
    save_file(tensors, str(path))
    return path.stat().st_size


def prior_inputs(prior, width: int, height: int, device, dtype):
    """What the prior pipeline feeds the UNet for one CFG step at width x height (batch 2)."""
    import torch

    config = prior.config
    latent = (2, config.in_channels, math.ceil(height / 42.67), math.ceil(width / 42.67))
    generator = torch.Generator().manual_seed(0)
    return dict(
        sample=torch.randn(latent, generator=generator).to(device, dtype),
        timestep_ratio=torch.full((2,), 0.5).to(device, dtype),
        clip_text_pooled=torch.randn(2, 1, config.clip_text_pooled_in_channels, generator=generator).to(device, dtype),
        clip_text=torch.randn(2, 77, config.clip_text_in_channels, generator=generator).to(device, dtype),
        clip_img=torch.zeros(2, 1, config.clip_image_in_channels).to(device, dtype),
        return_dict=False,
    )


def time_steps(prior, inputs, steps: int, sync) -> float:
    """The fastest of ``steps`` forwards, after a warm-up (the least disturbed by other work on the machine)."""
    import torch

    with torch.no_grad():
        prior(**inputs)
        sync()
        times = []
        for _ in range(steps):
            start = time.perf_counter()
            prior(**inputs)
            sync()
            times.append(time.perf_counter() - start)
    return min(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--full", metavar="DIR", help="a full-size pair (prior/ and decoder/); default: the tiny one")
    parser.add_argument("--mode", default=None, help="memory mode (default: bf16 on a GPU, fp32 on the CPU)")
    parser.add_argument("--device", default=None)
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--steps", type=int, default=10, help="timed forwards per variant (the fastest counts)")
    parser.add_argument("--width", type=int, default=None, help="default 1024 (full) or 256 (tiny)")
    parser.add_argument("--height", type=int, default=None, help="default 1536 (full) or 256 (tiny)")
    parser.add_argument("--no-merge", action="store_true",
                        help="leave out the merged variant (its copy of every touched weight: ~7 GB at full size)")
    parser.add_argument("--json", metavar="PATH")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    import torch

    from sote_ui.engine import Engine
    from sote_ui.engine.builders import build_tiny_pair
    from sote_ui.engine.lora import Adapters, merge_into, read_lora, restore
    from sote_ui.engine.models import ModelSource

    work = Path(tempfile.mkdtemp(prefix="sote-bench-lora-"))
    if args.full:
        prior_dir, decoder_dir = Path(args.full) / "prior", Path(args.full) / "decoder"
    else:
        prior_dir, decoder_dir = build_tiny_pair(work / "tiny")
    width = args.width or (1024 if args.full else 256)
    height = args.height or (1536 if args.full else 256)
    cuda = torch.cuda.is_available() and (args.device or "cuda").startswith("cuda")
    mode = args.mode or ("bf16" if cuda else "fp32")
    engine = Engine(ModelSource(str(prior_dir), str(decoder_dir), name="bench"), mode=mode, device=args.device)
    started = time.perf_counter()
    engine.load()
    load_s = time.perf_counter() - started
    # Only the prior and its text encoder are measured: the decoder pipeline goes, which leaves room on a
    # 24 GB machine for the merged variant's copy of the prior's weights (~7 GB in bf16).
    engine._decoder_pipe = None
    gc.collect()
    pipe = engine.prior_pipe
    prior, text_encoder = pipe.prior, pipe.text_encoder
    device = pipe._execution_device
    dtype = prior.dtype

    def sync():
        if cuda:
            torch.cuda.synchronize()

    files = {}
    for label, seed in (("a", 1), ("b", 2)):
        path = work / f"{label}.safetensors"
        files[label] = (path, write_lora(path, prior, text_encoder, args.rank, seed))
    results: dict = {"mode": engine.plan.mode.value, "device": engine.device.describe(), "width": width,
                     "height": height, "rank": args.rank, "load_s": round(load_s, 2),
                     "lora_file_mb": round(files["a"][1] / 1e6, 1)}

    # The plain prior first: its forward also pages in every weight (they may be mapped from the files),
    # so the memory measured next is the LoRA's, not the base weights arriving.
    inputs = prior_inputs(prior, width, height, device, dtype)
    results["plain_step_s"] = time_steps(prior, inputs, args.steps, sync)
    results["rss_with_prior_mb"] = round(rss_mb(), 1)

    # 1. read and map
    rss_before = rss_mb()
    started = time.perf_counter()
    lora_a = read_lora(files["a"][0], prior, text_encoder)
    results["read_s"] = round(time.perf_counter() - started, 3)
    lora_b = read_lora(files["b"][0], prior, text_encoder)
    results["layers"] = len(lora_a.layers)

    # 2 and 3. adapters
    hooks = Adapters()
    mem_before = torch.cuda.memory_allocated() if cuda else 0
    hooks.use(prior, text_encoder, [(lora_a, 1.0, 1.0)])
    results["adapter_step_s"] = time_steps(prior, inputs, args.steps, sync)
    results["adapter_device_mb"] = round((torch.cuda.memory_allocated() - mem_before) / 1e6, 1) if cuda else None
    results["extra_rss_mb"] = round(rss_mb() - rss_before, 1)  # both files read, A hooked in and used
    started = time.perf_counter()
    hooks.use(prior, text_encoder, [(lora_b, 1.0, 1.0)])
    results["adapter_hook_s"] = round(time.perf_counter() - started, 4)  # the hooks swapped, nothing run yet
    started = time.perf_counter()
    with torch.no_grad():
        prior(**inputs)  # the first forward with B places its matrices on the device
    sync()
    results["adapter_switch_s"] = round(max(0.0, time.perf_counter() - started - results["adapter_step_s"]), 4)
    hooks.clear()

    print("so far:", json.dumps(results), file=sys.stderr, flush=True)  # kept if the merge runs out of RAM

    # 2 and 3. merged (plain weights only)
    if engine.plan.fp8_backend or args.no_merge:
        results.update(merge_switch_s=None, merged_step_s=None, merge_copy_mb=None,
                       merge_note="n/a: 8-bit weights can't take a LoRA's small change without quantizing again"
                       if engine.plan.fp8_backend else "left out (--no-merge); merged weights run the plain "
                                                       "prior's kernels, so plain_step_s stands for it")
    else:
        saved = merge_into(prior, text_encoder, [(lora_a, 1.0, 1.0)])
        sync()
        results["merge_copy_mb"] = round(sum(t.numel() * t.element_size() for t in saved.values()) / 1e6, 1)
        results["merged_step_s"] = time_steps(prior, inputs, args.steps, sync)
        started = time.perf_counter()
        restore(prior, text_encoder, saved)
        saved = merge_into(prior, text_encoder, [(lora_b, 1.0, 1.0)])
        sync()
        results["merge_switch_s"] = round(time.perf_counter() - started, 3)
        restore(prior, text_encoder, saved)
    for key in ("plain_step_s", "adapter_step_s", "merged_step_s"):
        if results.get(key) is not None:
            results[key] = round(results[key], 4)
    if results.get("merged_step_s"):
        results["adapter_extra_s_per_step"] = round(results["adapter_step_s"] - results["merged_step_s"], 4)
    else:
        results["adapter_extra_s_per_step"] = round(results["adapter_step_s"] - results["plain_step_s"], 4)

    width_key = max(len(key) for key in results)
    for key, value in results.items():
        print(f"{key:{width_key}}  {value}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
