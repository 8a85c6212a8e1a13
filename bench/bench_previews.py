#!/usr/bin/env python
"""What live previews of stage C cost, measured in one run.

1. Each preview decoder on a stage-C latent of the real size at 1024x1536
   (16 x 36 x 24): milliseconds per preview (median of many).
2. One prior step of the prior you give (``--prior DIR``: the full-size pair
   from ``python -m sote_ui make-tiny --full DIR`` gives the real cost; without
   it, the tiny model's, which makes previews look far dearer than they are)
   at ``--width`` x ``--height``, CFG 8 as by default, timed with and without
   previews in the same process.
3. The overhead at default settings: a preview every ``PREVIEW_EVERY`` prior
   steps, so preview cost / (PREVIEW_EVERY x prior step), printed as a ratio.

Examples (from the repository root)::

    python bench/bench_previews.py                                   # tiny model, 256x256
    python bench/bench_previews.py --prior /data/full/prior --decoder /data/full/decoder --width 512 --height 512
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def decoder_costs(repeats: int) -> dict[str, float]:
    import torch

    from sote_ui.engine.previews import PreviewDecoder, Previewer

    latent = torch.randn(1, 16, math.ceil(1536 / 42.67), math.ceil(1024 / 42.67))
    decoders = {"fast": PreviewDecoder("fast"), "previewer": PreviewDecoder("previewer", Previewer().eval())}
    costs = {}
    for name, decoder in decoders.items():
        decoder.decode(latent)  # warm-up
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            decoder.decode(latent + 0.01 * torch.randn_like(latent))
            times.append(time.perf_counter() - start)
        costs[name] = statistics.median(times)
    return costs


def prior_step(args) -> tuple[float, float, int]:
    """Seconds per prior step without and with previews (every step previewed, fast decoder), same engine."""
    from sote_ui.core.request import build_request
    from sote_ui.engine import Engine
    from sote_ui.engine.models import ModelSource

    if args.prior:
        source = ModelSource(args.prior, args.decoder)
    else:
        from sote_ui.engine.builders import build_tiny_pair

        prior, decoder = build_tiny_pair(tempfile.mkdtemp(prefix="bench-previews-"))
        source = ModelSource(str(prior), str(decoder))
    engine = Engine(source, mode=args.mode, device=args.device)
    engine.load()
    engine.preview_kind = "fast"
    engine.preview_every = 1
    steps = args.steps

    def timed(seed: int, on_preview) -> float:
        request = build_request({"prompt": "1girl, solo, smile", "width": args.width, "height": args.height,
                                 "prior_steps": steps, "decoder_steps": 1, "seed": seed})
        marks: list[float] = []
        engine.clear_caches()

        def progress(p):
            if p.stage == "prior":
                marks.append(time.perf_counter())

        engine.generate_many([request], on_progress=progress, on_preview=on_preview)
        return (marks[-1] - marks[0]) / (len(marks) - 1)

    timed(1, None)  # warm-up
    plain, watched = [], []
    for run in range(args.runs):  # interleaved, so drift hits both sides alike
        plain.append(timed(10 + run, None))
        watched.append(timed(10 + run, lambda p: None))
    return statistics.median(plain), statistics.median(watched), engine.preview_every


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prior")
    parser.add_argument("--decoder")
    parser.add_argument("--mode", default="bf16")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--height", type=int, default=256)
    parser.add_argument("--steps", type=int, default=5, help="prior steps per timed run")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=50)
    args = parser.parse_args()
    if bool(args.prior) != bool(args.decoder):
        parser.error("give both --prior and --decoder, or neither")

    from sote_ui.engine.previews import PREVIEW_EVERY

    costs = decoder_costs(args.repeats)
    print("preview of a 1024x1536 stage-C latent (16 x 36 x 24), median:")
    for name, seconds in costs.items():
        print(f"  {name:10} {seconds * 1000:8.2f} ms")
    plain, watched, _ = prior_step(args)
    model = "the given prior" if args.prior else "the tiny model"
    print(f"prior step on {model} at {args.width}x{args.height}: {plain:.4f} s without previews, "
          f"{watched:.4f} s with a fast preview every step (ratio {watched / plain:.3f})")
    for name, seconds in costs.items():
        overhead = seconds / (PREVIEW_EVERY * plain)
        print(f"overhead at default settings ({name}, one preview per {PREVIEW_EVERY} steps): "
              f"{overhead * 100:.2f}% of prior time")


if __name__ == "__main__":
    main()
