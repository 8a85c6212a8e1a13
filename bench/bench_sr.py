#!/usr/bin/env python
"""Super-resolution 2x of a generated image against generating the doubled size directly: wall seconds.

Three runs, each a fresh ``python -m sote_ui generate`` process, same prompt, seed and steps:

* ``source``: WIDTH x HEIGHT, the image to double;
* ``sr``: 2*WIDTH x 2*HEIGHT with ``--control sr --control-image`` the source (the ControlNet, the
  EfficientNet encode of the source, then the prior and decoder at the doubled size);
* ``direct``: 2*WIDTH x 2*HEIGHT from the prompt alone.

``sr`` and ``direct`` run ``--repeat`` times in turn and their medians are shown.

Wall time includes loading, as a user running the command sees it; the ``generate`` seconds the command
reports (the work after loading) are shown too, and are the fairer comparison.

Example (from the repository root)::

    python bench/bench_sr.py                                   # the tiny pair, built in a temp folder
    python bench/bench_sr.py --full /data/fullsize --mode bf16 --json sr.json

``--full`` expects a pair folder with ``prior/`` and ``decoder/`` (``python -m sote_ui make-tiny --full``);
its super-resolution ControlNet and EfficientNet encoder are ``--controlnet`` / ``--effnet`` or, if not
given, random full-size ones written to a temp folder (the shapes and work of Stability's files). Full size
defaults to 512x768 -> 1024x1536 and needs ~13 GB of RAM: run nothing else heavy meanwhile.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

from _runs import ROOT, generate_command, machine, print_runs, run

if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", metavar="PAIR", help="the full-size pair's folder (prior/, decoder/)")
    parser.add_argument("--controlnet", metavar="PATH", help="the super-resolution ControlNet file (default: the "
                                                             "pair's own, or a random full-size one for --full)")
    parser.add_argument("--effnet", metavar="PATH", help="the EfficientNet encoder file (default: as --controlnet)")
    parser.add_argument("--mode", default=None, help="memory mode (default: fp32 on the tiny pair, auto for --full)")
    parser.add_argument("--device", default=None)
    parser.add_argument("--width", type=int, default=None, help="the source's width (the result is twice it)")
    parser.add_argument("--height", type=int, default=None)
    parser.add_argument("--prior-steps", type=int, default=None)
    parser.add_argument("--decoder-steps", type=int, default=None)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=3, help="runs of sr and direct, taken in turn; the median "
                                                             "is shown (a shared machine's load varies)")
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args(argv)

    temp = tempfile.TemporaryDirectory(prefix="bench-sr-")
    work = Path(temp.name)
    controlnet, effnet = args.controlnet, args.effnet
    if args.full:
        prior, decoder = Path(args.full) / "prior", Path(args.full) / "decoder"
        width, height = args.width or 512, args.height or 768
        prior_steps, decoder_steps = args.prior_steps or 20, args.decoder_steps or 10
        mode = args.mode or "auto"
        from sote_ui.engine.builders import build_full_controlnet, build_full_effnet

        controlnet = controlnet or str(build_full_controlnet(work, "sr"))
        effnet = effnet or str(build_full_effnet(work))
    else:
        from sote_ui.engine.builders import build_tiny_pair

        prior, decoder = build_tiny_pair(work / "tiny")  # its own tiny encoder and ControlNets beside it
        width, height = args.width or 256, args.height or 384
        prior_steps, decoder_steps = args.prior_steps or 8, args.decoder_steps or 4
        mode = args.mode or "fp32"
    common = generate_command(prior, decoder, mode=mode, seed=args.seed, prior_steps=prior_steps,
                              decoder_steps=decoder_steps, device=args.device, effnet=effnet)
    double = ["--width", str(2 * width), "--height", str(2 * height)]
    source = work / "source.png"
    runs = {
        "source": common + ["--width", str(width), "--height", str(height), "--out", str(source)],
        "sr": common + double + ["--control", "sr", "--control-image", str(source), "--out", str(work / "sr.png")]
        + (["--controlnet", str(controlnet)] if controlnet else []),
        "direct": common + double + ["--out", str(work / "direct.png")],
    }
    samples: dict[str, list[dict]] = {name: [] for name in runs}
    for name in ["source"] + ["sr", "direct"] * max(1, args.repeat):
        samples[name].append(run(runs[name]))
    results = {name: {key: statistics.median(r[key] for r in rs) if all(r[key] is not None for r in rs) else None
                      for key in ("wall_s", "generate_s")} for name, rs in samples.items()}
    figures = {
        "machine": machine(),
        "pair": "full-size" if args.full else "tiny",
        "mode": mode,
        "source": f"{width}x{height}",
        "result": f"{2 * width}x{2 * height}",
        "prior_steps": prior_steps,
        "decoder_steps": decoder_steps,
        "runs": results,
        "repeat": max(1, args.repeat),
        "ratio_generate": (round(results["sr"]["generate_s"] / results["direct"]["generate_s"], 3)
                           if results["sr"]["generate_s"] and results["direct"]["generate_s"] else None),
        "ratio_wall": round(results["sr"]["wall_s"] / results["direct"]["wall_s"], 3),
    }
    print_runs(results)
    print(f"sr/direct: generate x{figures['ratio_generate']}, wall x{figures['ratio_wall']} "
          f"({width}x{height} -> {2 * width}x{2 * height}, {figures['pair']} pair, {mode})")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2) + "\n")
    temp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
