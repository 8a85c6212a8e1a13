#!/usr/bin/env python
"""Do the prior's and the decoder's activations fit fp16? The largest activation of every layer, against 65504.

Each UNet runs a few denoising steps at a small size twice: in bf16 (fp32's
range, so the largest values are seen as they are) and in fp16 (where a value
past 65504 becomes inf, then NaN). Hooks record each module's largest
absolute output; the script prints the largest ones, the headroom left under
fp16's maximum, and whether the fp16 run produced any inf or NaN. The
conditioning comes from the pair's own text encoder (bf16), as in generation.

Random weights are not the trained model: base Stable Cascade's trained
weights overflow fp16 (black images) where random ones may not, so a pass here
shows only that the architecture itself at this init does not overflow.

Example (from the repository root)::

    python bench/bench_fp16_range.py --pair /data/fullsize --size 256 --steps 2
    python bench/bench_fp16_range.py --tiny
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

FP16_MAX = 65504.0


def watch(model):
    """Hooks recording each module's largest absolute output and its first non-finite one."""
    import torch

    peaks: dict[str, float] = {}
    bad: list[str] = []

    def hook(name):
        def record(module, inputs, output):
            tensors = output if isinstance(output, (tuple, list)) else (output,)
            for t in tensors:
                if isinstance(t, torch.Tensor) and t.is_floating_point():
                    finite = torch.isfinite(t)
                    if not bool(finite.all()):
                        bad.append(name)
                    value = float(t.detach().abs().where(finite, 0).amax()) if t.numel() else 0.0
                    peaks[name] = max(peaks.get(name, 0.0), value)
        return record

    handles = [m.register_forward_hook(hook(n)) for n, m in model.named_modules() if n]
    return peaks, bad, handles


def conditioning(pair: Path, batch: int):
    """Prompt embeddings from the pair's text encoder: a prompt and an empty one (CFG), bf16."""
    import torch
    from transformers import CLIPTextModelWithProjection, CLIPTokenizer

    tokenizer = CLIPTokenizer.from_pretrained(pair / "prior" / "tokenizer")
    encoder = CLIPTextModelWithProjection.from_pretrained(pair / "prior" / "text_encoder", dtype=torch.bfloat16)
    prompts = ["1girl, solo, long hair, looking at viewer, smile, outdoors, sky"] * (batch // 2) + [""] * (batch // 2)
    tokens = tokenizer(prompts, padding="max_length", max_length=77, truncation=True, return_tensors="pt")
    with torch.no_grad():
        out = encoder(**tokens, output_hidden_states=True)
    text, pooled = out.hidden_states[-1], out.text_embeds.unsqueeze(1)
    del encoder
    gc.collect()
    return text, pooled


def run_unet(pair: Path, component: str, dtype, size: int, steps: int, text, pooled, seed: int):
    """``steps`` denoising-like passes of one UNet in ``dtype``; returns (peaks, non-finite modules, seconds)."""
    import torch
    from diffusers import StableCascadeUNet

    unet = StableCascadeUNet.from_pretrained(pair / component / component, torch_dtype=torch.bfloat16)
    unet = unet.to(dtype).eval().requires_grad_(False)
    batch = text.shape[0]
    generator = torch.Generator().manual_seed(seed)
    if component == "prior":
        side = math.ceil(size / 42.67)
        x = torch.randn(batch, unet.config.in_channels, side, side, generator=generator)
        extra = {"clip_text": text.to(dtype), "clip_text_pooled": pooled.to(dtype),
                 "clip_img": torch.zeros(batch, 1, unet.config.clip_image_in_channels, dtype=dtype)}
    else:
        side = math.ceil(size / 42.67)
        latent = int(side * 10.67)
        x = torch.randn(batch, unet.config.in_channels, latent, latent, generator=generator)
        effnet = torch.randn(batch, unet.config.effnet_in_channels, side, side, generator=generator)
        extra = {"clip_text_pooled": pooled.to(dtype), "effnet": effnet.to(dtype)}
    peaks, bad, handles = watch(unet)
    started = time.perf_counter()
    with torch.no_grad():
        for step in range(steps):
            r = torch.full((batch,), 1.0 - step / max(steps, 1))
            predicted = unet(x.to(dtype), r.to(dtype), **extra, return_dict=False)[0]
            x = (x + 0.5 * predicted.float()).float()  # move the latent so the next pass sees other values
    seconds = time.perf_counter() - started
    for handle in handles:
        handle.remove()
    del unet
    gc.collect()
    return peaks, bad, seconds


def report(component: str, peaks_bf16: dict, peaks_fp16: dict, bad: list[str], seconds: tuple[float, float]) -> dict:
    top = sorted(peaks_bf16.items(), key=lambda kv: kv[1], reverse=True)[:8]
    biggest = top[0][1] if top else 0.0
    ratio = biggest / FP16_MAX
    print(f"\n{component}: largest activation {biggest:.1f} in bf16 ({ratio:.2f}x fp16's 65504); "
          f"fp16 run: {'NO inf/NaN' if not bad else f'inf/NaN first in {bad[0]}'}; "
          f"{seconds[0]:.0f} s bf16, {seconds[1]:.0f} s fp16")
    for name, value in top:
        print(f"  {value:12.1f}  (fp16 run {peaks_fp16.get(name, float('nan')):12.1f})  {name}")
    return {"max_abs_bf16": biggest, "of_fp16_max": ratio, "fp16_nonfinite": bad[:5],
            "top": top, "seconds": seconds}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pair", type=Path, help="a pair folder with prior/ and decoder/ (make-tiny [--full])")
    parser.add_argument("--tiny", action="store_true", help="build the tiny pair in a temp folder and use it")
    parser.add_argument("--size", type=int, default=256, help="image side in pixels")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--components", nargs="+", default=["prior", "decoder"], choices=["prior", "decoder"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    import torch

    with tempfile.TemporaryDirectory() as scratch:
        pair = args.pair
        if args.tiny or pair is None:
            from sote_ui.engine.builders import build_tiny_pair

            pair = Path(scratch)
            build_tiny_pair(pair)
        text, pooled = conditioning(pair, batch=2)
        results = {"pair": str(pair), "size": args.size, "steps": args.steps, "torch": torch.__version__}
        for component in args.components:
            peaks_bf16, _, s_bf16 = run_unet(pair, component, torch.bfloat16, args.size, args.steps, text, pooled,
                                             args.seed)
            peaks_fp16, bad, s_fp16 = run_unet(pair, component, torch.float16, args.size, args.steps, text, pooled,
                                               args.seed)
            results[component] = report(component, peaks_bf16, peaks_fp16, bad, (s_bf16, s_fp16))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
