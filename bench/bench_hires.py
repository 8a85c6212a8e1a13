#!/usr/bin/env python
"""The hi-res fix against generating the same final size directly: wall time and peak host RAM.

Two runs, each a fresh ``python -m sote_ui generate`` process (so its peak RSS is
its own, read from the kernel with ``wait4``), one after the other, same seed and
steps:

* ``hires``: WIDTH x HEIGHT, then the hi-res fix at ``--scale`` (Lanczos upscale,
  EfficientNet encode, the second prior at ``--hires-denoise``, the decoder);
* ``direct``: the hi-res fix's final size (``core.request.final_size``) in one pass.

Wall time includes loading, as a user running the command sees it; the
``generate`` seconds the command reports (the work after loading) are shown too.

Example (from the repository root)::

    python bench/bench_hires.py                                   # the tiny pair, built in a temp folder
    python bench/bench_hires.py --full /data/fullsize --mode bf16 --json hires.json

``--full`` expects a pair folder with ``prior/`` and ``decoder/`` (``python -m sote_ui
make-tiny --full``); its EfficientNet encoder is ``--effnet`` or, if that is not
given, a random full-size one written to a temp folder (the same shapes and work
as Stability's file). Full size defaults to 1024x1536 -> 1536x2304 and needs
~13 GB of RAM: run nothing else heavy meanwhile.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from _runs import ROOT, generate_command, machine, print_runs, run

if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", metavar="PAIR", help="the full-size pair's folder (prior/, decoder/)")
    parser.add_argument("--effnet", metavar="PATH", help="the EfficientNet encoder file (default: the pair's own, "
                                                         "or a random full-size one for --full)")
    parser.add_argument("--mode", default=None, help="memory mode (default: fp32 on the tiny pair, auto for --full)")
    parser.add_argument("--device", default=None)
    parser.add_argument("--width", type=int, default=None)
    parser.add_argument("--height", type=int, default=None)
    parser.add_argument("--scale", type=float, default=1.5)
    parser.add_argument("--hires-denoise", type=float, default=0.5)
    parser.add_argument("--prior-steps", type=int, default=None)
    parser.add_argument("--decoder-steps", type=int, default=None)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args(argv)

    from sote_ui.core.request import build_request, final_size

    temp = tempfile.TemporaryDirectory(prefix="bench-hires-")
    work = Path(temp.name)
    if args.full:
        prior, decoder = Path(args.full) / "prior", Path(args.full) / "decoder"
        width, height = args.width or 1024, args.height or 1536
        prior_steps, decoder_steps = args.prior_steps or 20, args.decoder_steps or 10
        mode = args.mode or "auto"
        effnet = args.effnet
        if effnet is None:
            from sote_ui.engine.builders import build_full_effnet

            effnet = str(build_full_effnet(work))
    else:
        from sote_ui.engine.builders import build_tiny_pair

        prior, decoder = build_tiny_pair(work / "tiny")
        width, height = args.width or 256, args.height or 384
        prior_steps, decoder_steps = args.prior_steps or 8, args.decoder_steps or 4
        mode = args.mode or "fp32"
        effnet = args.effnet
    request = build_request({"prompt": "1girl, solo", "width": width, "height": height, "hires_scale": args.scale})
    final = final_size(request)
    common = generate_command(prior, decoder, mode=mode, seed=args.seed, prior_steps=prior_steps,
                              decoder_steps=decoder_steps, device=args.device, effnet=effnet)
    runs = {
        "hires": common + ["--width", str(width), "--height", str(height), "--hires-scale", str(args.scale),
                           "--hires-denoise", str(args.hires_denoise), "--out", str(work / "hires.png")],
        "direct": common + ["--width", str(final[0]), "--height", str(final[1]), "--out", str(work / "direct.png")],
    }
    results = {}
    for name, command in runs.items():
        results[name] = run(command)
    figures = {
        "machine": machine(),
        "pair": "full-size" if args.full else "tiny",
        "mode": mode,
        "first_pass": f"{width}x{height}",
        "final": f"{final[0]}x{final[1]}",
        "prior_steps": prior_steps,
        "decoder_steps": decoder_steps,
        "hires_denoise": args.hires_denoise,
        "runs": {name: {k: v for k, v in r.items() if k != "file"} for name, r in results.items()},
        "ratio_wall": round(results["hires"]["wall_s"] / results["direct"]["wall_s"], 3),
        "ratio_peak_rss": round(results["hires"]["peak_rss"] / results["direct"]["peak_rss"], 3),
    }
    print_runs(results, rss=True)
    print(f"hires/direct: wall x{figures['ratio_wall']}, peak RSS x{figures['ratio_peak_rss']} "
          f"({width}x{height} -> {final[0]}x{final[1]}, {figures['pair']} pair, {mode})")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2) + "\n")
    temp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
