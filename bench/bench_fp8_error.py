#!/usr/bin/env python
"""How much each 8-bit weight format loses, layer by layer, on the prior and the decoder.

For every Linear and Conv2d weight of a UNet it compares the bf16 weight
with what each format gives back when the layer runs:

* ``plain``: a plain cast to ``float8_e4m3fn`` and back, no scale (diffusers'
  layerwise casting);
* ``row-fp8``: fp8 with one fp32 scale per output channel (absmax / 448);
* ``qfloat8`` and ``qint8``: optimum-quanto's weights as the engine makes
  them (``quantize`` + ``freeze`` on the layer, bf16 per-channel scales),
  read back with ``dequantize()``.

Per layer: the relative error ``||W8 - W|| / ||W||`` and the share of nonzero
weights the format turns into zero. The table groups the layers by kind, with
the error over the whole kind (root of summed squares), the median layer's
and the worst layer's.

Weights: ``--init disk`` reads the pair's files (the built pairs carry
torch's default init); ``--init training`` draws each layer as Stability's
training code initialises it (``builders.training_init_weight``: the
ResBlock output projections start ~6x smaller), the closest to the published
weights' scale that can be had offline. Neither is the trained model.

Example (from the repository root)::

    python -m sote_ui make-tiny --full /data/fullsize      # once, ~13 GB
    python bench/bench_fp8_error.py --pair /data/fullsize --init training --json fp8_error.json
    python bench/bench_fp8_error.py --tiny                 # the tiny pair, a smoke test

Every format scales row by row (the plain cast not at all), so a sample of each
layer's rows (``--rows``, 256 by default, drawn with a fixed seed) gives its
error and zeroed share without bias; ``--rows 0`` takes every row (hours on a
small CPU for the full-size prior). One layer is in memory at a time.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

FORMATS = ("plain", "row-fp8", "qfloat8", "qint8")

# Layer kinds, first match wins; the kept-out layers are measured too but stay bf16 in every mode.
KINDS = (
    ("kept in bf16 (embedding, clf, mappers)", r"^(embedding|clf|clip_|effnet_mapper|pixels_mapper)"),
    ("ResBlock out-projection", r"\.channelwise\.4$"),
    ("ResBlock in-projection", r"\.channelwise\.0$"),
    ("ResBlock depthwise conv", r"\.depthwise$"),
    ("attention q/k/v", r"\.attention\.to_[qkv]$"),
    ("attention out", r"\.attention\.to_out\.0$"),
    ("attention kv mapper", r"\.kv_mapper\.1$"),
    ("timestep mappers", r"\.mapper(_sca|_crp)?$"),
    ("down/up scalers", r"^(down_downscalers|up_upscalers)\."),
    ("repeat mappers", r"^up_repeat_mappers\."),
    ("other", r""),
)


def kind_of(name: str) -> str:
    return next(label for label, pattern in KINDS if re.search(pattern, name))


def layer_shapes(folder: Path) -> dict[str, tuple[int, ...]]:
    """Linear and Conv2d weight shapes of the UNet in ``folder``, from its config on the meta device."""
    import torch
    from diffusers import StableCascadeUNet
    from torch import nn

    config = StableCascadeUNet.load_config(folder)
    with torch.device("meta"):
        model = StableCascadeUNet.from_config(config)
    return {name: tuple(m.weight.shape) for name, m in model.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d))}


def disk_weights(folder: Path, names):
    """``(name, bf16 weight)`` from the component's safetensors files, one at a time."""
    from safetensors import safe_open

    where = {}
    for file in sorted(folder.glob("*.safetensors")):
        with safe_open(file, "pt") as handle:
            for key in handle.keys():
                where[key] = file
    for name in names:
        with safe_open(where[name + ".weight"], "pt") as handle:
            yield name, handle.get_tensor(name + ".weight")


def training_weights(folder: Path, shapes, seed: int):
    """``(name, bf16 weight)`` drawn as Stability's training code initialises them."""
    import torch
    from diffusers import StableCascadeUNet

    from sote_ui.engine.builders import training_init_weight

    config = StableCascadeUNet.load_config(folder)
    shrink = math.sqrt(1 / sum(config["down_num_layers_per_block"]))
    generator = torch.Generator().manual_seed(seed)
    for name, shape in shapes.items():
        yield name, training_init_weight(name, shape, shrink, generator).to(torch.bfloat16)


def as_formats(weight) -> dict:
    """The weight as each format gives it back, in fp32."""
    import torch
    from optimum.quanto import freeze, qtypes, quantize
    from torch import nn

    w = weight.float()
    flat = weight.reshape(weight.shape[0], -1)  # per output channel, as quanto quantizes Conv2d too
    out = {"plain": weight.to(torch.float8_e4m3fn).float()}
    scale = w.reshape(w.shape[0], -1).abs().amax(dim=1).clamp(min=1e-12) / torch.finfo(torch.float8_e4m3fn).max
    scale = scale.reshape(-1, *([1] * (w.dim() - 1)))
    out["row-fp8"] = (w / scale).to(torch.float8_e4m3fn).float() * scale
    for label in ("qfloat8", "qint8"):
        layer = nn.Sequential(nn.Linear(flat.shape[1], flat.shape[0], bias=False, device="meta"))
        layer[0].weight = nn.Parameter(flat.clone(), requires_grad=False)
        quantize(layer, weights=qtypes[label])
        freeze(layer)
        out[label] = layer[0].weight.dequantize().float().reshape(weight.shape)
    return out


def sample_rows(weight, rows: int, generator):
    """Up to ``rows`` output channels of ``weight``, chosen at random (all when ``rows`` is 0)."""
    import torch

    if not rows or weight.shape[0] <= rows:
        return weight
    return weight[torch.randperm(weight.shape[0], generator=generator)[:rows].sort().values]


def measure(weights, rows: int = 0, seed: int = 0) -> list[dict]:
    import torch

    generator = torch.Generator().manual_seed(seed)
    rows_out = []
    for name, full in weights:
        weight = sample_rows(full, rows, generator)
        w = weight.float()
        norm = float(w.norm())
        if norm == 0:  # zero at init (outputs, timestep gates): nothing to lose
            continue
        nonzero = w != 0
        # params: the whole layer's; norm: the sample's, scaled to the whole layer for the kind totals
        row = {"name": name, "kind": kind_of(name), "params": full.numel(), "std": float(w.std()),
               "norm": norm * math.sqrt(full.shape[0] / weight.shape[0]), "rows_measured": weight.shape[0]}
        for label, q in as_formats(weight).items():
            row[label] = float((q - w).norm()) / norm
            row[label + "_zero"] = float(((q == 0) & nonzero).sum()) / max(1, int(nonzero.sum()))
        rows_out.append(row)
    return rows_out


def summarize(rows: list[dict]) -> list[dict]:
    kinds = []
    for label, _ in KINDS:
        group = [r for r in rows if r["kind"] == label]
        if not group:
            continue
        entry = {"kind": label, "layers": len(group), "params": sum(r["params"] for r in group),
                 "median_std": statistics.median(r["std"] for r in group)}
        for f in FORMATS:
            entry[f] = math.sqrt(sum((r[f] * r["norm"]) ** 2 for r in group) / sum(r["norm"] ** 2 for r in group))
            entry[f + "_median"] = statistics.median(r[f] for r in group)
            entry[f + "_worst"] = max(r[f] for r in group)
            entry[f + "_zero"] = sum(r[f + "_zero"] * r["params"] for r in group) / entry["params"]
        kinds.append(entry)
    return kinds


def totals(rows: list[dict]) -> dict:
    quantized = [r for r in rows if not r["kind"].startswith("kept")]
    if not quantized:
        return {}
    total = {"layers": len(quantized), "params": sum(r["params"] for r in quantized)}
    for f in FORMATS:
        total[f] = math.sqrt(sum((r[f] * r["norm"]) ** 2 for r in quantized) / sum(r["norm"] ** 2 for r in quantized))
        total[f + "_median"] = statistics.median(r[f] for r in quantized)
        total[f + "_worst"] = max(r[f] for r in quantized)
        total[f + "_zero"] = sum(r[f + "_zero"] * r["params"] for r in quantized) / total["params"]
        total[f + "_over_5pct"] = sum(r[f] > 0.05 for r in quantized)
    return total


def print_table(component: str, kinds: list[dict], total: dict) -> None:
    print(f"\n{component}: relative weight error, whole kind (median layer / worst layer); zeroed = nonzero "
          "weights the plain cast flushes to zero")
    head = f"{'layer kind':40} {'layers':>6} {'params':>7} {'std':>7} {'zeroed':>7}"
    print(head + "".join(f" {f:>22}" for f in FORMATS))
    for k in kinds + ([dict(total, kind="all 8-bit layers", median_std=float('nan'))] if total else []):
        cells = "".join(f" {100 * k[f]:6.2f}% ({100 * k[f + '_median']:5.2f}/{100 * k[f + '_worst']:5.2f})"
                        for f in FORMATS)
        std = "" if math.isnan(k["median_std"]) else f"{k['median_std']:.4f}"
        print(f"{k['kind']:40} {k['layers']:6d} {k['params'] / 1e6:6.0f}M {std:>7} {100 * k['plain_zero']:6.1f}%"
              + cells)
    if total:
        print("layers over 5% error: " + ", ".join(f"{f} {total[f + '_over_5pct']}" for f in FORMATS))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pair", type=Path, help="a pair folder with prior/ and decoder/ (make-tiny [--full])")
    parser.add_argument("--tiny", action="store_true", help="build the tiny pair in a temp folder and use it")
    parser.add_argument("--init", choices=("disk", "training"), default="training")
    parser.add_argument("--components", nargs="+", default=["prior", "decoder"], choices=["prior", "decoder"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rows", type=int, default=256, help="output channels sampled per layer (0: all)")
    parser.add_argument("--json", type=Path, help="write every layer's figures here")
    args = parser.parse_args(argv)
    import torch

    torch.set_grad_enabled(False)
    with tempfile.TemporaryDirectory() as scratch:
        pair = args.pair
        if args.tiny or pair is None:
            from sote_ui.engine.builders import build_tiny_pair

            pair = Path(scratch)
            build_tiny_pair(pair)
        results = {"pair": str(pair), "init": args.init, "rows": args.rows, "torch": torch.__version__,
                   "components": {}}
        for component in args.components:
            folder = pair / component / component
            started = time.perf_counter()
            shapes = layer_shapes(folder)
            source = (disk_weights(folder, shapes) if args.init == "disk"
                      else training_weights(folder, shapes, args.seed))
            rows = measure(source, args.rows, args.seed)
            kinds, total = summarize(rows), totals(rows)
            print_table(f"{component} ({args.init} init, {time.perf_counter() - started:.0f} s)", kinds, total)
            results["components"][component] = {"kinds": kinds, "total": total, "layers": rows}
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
