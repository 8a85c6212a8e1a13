#!/usr/bin/env python
"""Real-scale benchmark: load time and peak host memory per mode on the full-size pair.

Each run is a fresh process (so its peak RSS is its own, read from the kernel
with ``wait4``), one at a time, at a small size with few steps so loading
dominates:

* ``baseline``: a hand-written diffusers bf16 script (each component loaded with
  its own class, the two pipelines called directly), the reference;
* ``bf16``: ``python -m sote_ui generate --mode bf16``;
* ``fp8 first``: ``--mode fp8`` with an empty fp8 cache (quantizes and writes the cache);
* ``fp8 second``: ``--mode fp8`` again (maps the cached fp8 weights).

Then, in one more process per mode, the components loaded and nothing run:
the weights' bytes as loaded (exact, machine-independent) and that load's
peak RSS (the fp8 ones, with the cache the runs above left: the layerwise one
reads the bf16 files tensor by tensor). Ratios are against the baseline and
against bf16.

Example (from the repository root)::

    python -m sote_ui make-tiny --full /data/fullsize      # once, ~13 GB, ~2 min
    python bench/bench_scale.py --pair /data/fullsize --json scale.json
    python bench/bench_scale.py --tiny                     # the same runs on the tiny pair (a smoke test)

Full size needs ~13 GB of RAM for the bf16 runs: run nothing else heavy meanwhile.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

BASELINE = r"""
import sys, torch
from diffusers import DDPMWuerstchenScheduler, StableCascadeUNet
from diffusers import StableCascadeDecoderPipeline, StableCascadePriorPipeline
from diffusers.pipelines.deprecated.wuerstchen.modeling_paella_vq_model import PaellaVQModel
from transformers import CLIPTextModelWithProjection, CLIPTokenizer
prior_dir, decoder_dir, size, prior_steps, decoder_steps, out = sys.argv[1:7]
size, dt = int(size), torch.bfloat16
te = CLIPTextModelWithProjection.from_pretrained(prior_dir, subfolder="text_encoder", dtype=dt)
prior = StableCascadePriorPipeline(
    tokenizer=CLIPTokenizer.from_pretrained(prior_dir, subfolder="tokenizer"), text_encoder=te,
    prior=StableCascadeUNet.from_pretrained(prior_dir, subfolder="prior", torch_dtype=dt),
    scheduler=DDPMWuerstchenScheduler.from_pretrained(prior_dir, subfolder="scheduler"))
decoder = StableCascadeDecoderPipeline(
    decoder=StableCascadeUNet.from_pretrained(decoder_dir, subfolder="decoder", torch_dtype=dt),
    tokenizer=prior.tokenizer, text_encoder=te,
    scheduler=DDPMWuerstchenScheduler.from_pretrained(decoder_dir, subfolder="scheduler"),
    vqgan=PaellaVQModel.from_pretrained(decoder_dir, subfolder="vqgan", torch_dtype=dt))
g = torch.Generator("cpu").manual_seed(1)
with torch.no_grad():
    emb = prior(prompt="1girl, solo", width=size, height=size, num_inference_steps=int(prior_steps),
                guidance_scale=4.0, generator=g).image_embeddings
    image = decoder(image_embeddings=emb, prompt="1girl, solo", num_inference_steps=int(decoder_steps),
                    guidance_scale=0.0, generator=g, output_type="pil").images[0]
image.save(out)
"""

WEIGHTS = r"""
import json, sys, torch
from sote_ui.engine.loading import weight_bytes
from sote_ui.engine.loading import Folders, load_components
from pathlib import Path
prior_dir, decoder_dir, fp8 = sys.argv[1:4]
parts = load_components(Folders(Path(prior_dir), Path(decoder_dir)), torch.bfloat16, fp8=fp8 or None)
print(json.dumps({k: weight_bytes(getattr(parts, k)) for k in ("text_encoder", "prior", "decoder", "vqgan")}))
"""


def run_measured(command: list[str], env: dict) -> dict:
    """Run ``command``; its wall time, exit status and peak RSS (the kernel's figure for this child, via wait4)."""
    started = time.perf_counter()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(command, env=env, cwd=ROOT, stdout=out, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        seconds = time.perf_counter() - started
        out.seek(0)
        err.seek(0)
        return {"seconds": round(seconds, 2), "peak_rss": usage.ru_maxrss * 1024, "rc": proc.returncode,
                "stdout": out.read().decode(errors="replace")[-3000:],
                "stderr": err.read().decode(errors="replace")[-3000:]}


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        import psutil

        ram = f"{psutil.virtual_memory().total / 1024**3:.0f} GB RAM"
    except ImportError:
        ram = "? RAM"
    return f"{cpu}, {os.cpu_count()} cores, {ram}, {platform.system()}"


def gb(value) -> str:
    return "-" if value is None else f"{value / 1e9:.2f} GB"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--pair", help="folder made by `python -m sote_ui make-tiny --full` (prior/ and decoder/)")
    where.add_argument("--tiny", action="store_true", help="build and use the tiny pair (a smoke test)")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--prior-steps", type=int, default=1)
    parser.add_argument("--decoder-steps", type=int, default=1)
    parser.add_argument("--runs", default="baseline,bf16,fp8-first,fp8-second,weights",
                        help="comma-separated subset of baseline, bf16, fp8-first, fp8-second, weights")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="sote-bench-scale-"))
    if args.tiny:
        from sote_ui.engine.builders import build_tiny_pair

        prior, decoder = build_tiny_pair(work / "tiny")
    else:
        prior, decoder = Path(args.pair) / "prior", Path(args.pair) / "decoder"
    env = dict(os.environ, SOTE_CACHE=str(work / "cache"), HF_HUB_OFFLINE="1", PYTHONPATH=str(ROOT))
    python = sys.executable
    cli = [python, "-m", "sote_ui", "generate", "--prior", str(prior), "--decoder", str(decoder),
           "--width", str(args.size), "--height", str(args.size), "--prior-steps", str(args.prior_steps),
           "--decoder-steps", str(args.decoder_steps), "--seed", "1", "--device", "cpu", "--prompt", "1girl, solo"]
    plan = {
        "baseline": [python, "-c", BASELINE, str(prior), str(decoder), str(args.size), str(args.prior_steps),
                     str(args.decoder_steps), str(work / "baseline.png")],
        "bf16": cli + ["--mode", "bf16", "--out", str(work / "bf16.png")],
        "fp8-first": cli + ["--mode", "fp8", "--out", str(work / "fp8-first.png")],
        "fp8-second": cli + ["--mode", "fp8", "--out", str(work / "fp8-second.png")],
    }
    wanted = [name.strip() for name in args.runs.split(",") if name.strip()]
    results: dict = {"machine": machine(), "size": args.size, "steps": [args.prior_steps, args.decoder_steps],
                     "runs": {}, "weights": {}, "load_only": {}}
    print(f"{results['machine']}; {args.size}x{args.size}, {args.prior_steps}+{args.decoder_steps} steps",
          file=sys.stderr)
    for name, command in plan.items():
        if name not in wanted:
            continue
        print(f"running {name} ...", file=sys.stderr, flush=True)
        result = run_measured(command, env)
        results["runs"][name] = result
        if result["rc"] != 0:
            print(f"  {name} failed (rc {result['rc']}): {result['stderr'][-600:]}", file=sys.stderr)
        else:
            notes = [line for line in result["stderr"].splitlines() if line.startswith("fp8 cache")]
            print(f"  {result['seconds']:.1f} s, peak RSS {gb(result['peak_rss'])}"
                  + (f"; {'; '.join(notes)}" if notes else ""), file=sys.stderr)
    if "weights" in wanted:
        for label, fp8 in (("bf16", ""), ("fp8 (quanto)", "quanto"), ("int8 (quanto, CPU)", "quanto-int8"),
                           ("fp8 (layerwise)", "layerwise")):
            out = run_measured([python, "-c", WEIGHTS, str(prior), str(decoder), fp8], env)
            if out["rc"] == 0:
                results["weights"][label] = json.loads(out["stdout"].strip().splitlines()[-1])
                results["load_only"][label] = {"seconds": out["seconds"], "peak_rss": out["peak_rss"]}
            else:
                print(f"  weights {label} failed: {out['stderr'][-400:]}", file=sys.stderr)

    runs = results["runs"]
    base = runs.get("baseline", {})
    bf16 = runs.get("bf16", {})
    print(f"\n{'run':12} {'whole job':>10} {'peak RSS':>10} {'time/base':>10} {'RSS/base':>9} "
          f"{'time/bf16':>10} {'RSS/bf16':>9}")
    for name, run in runs.items():
        def ratio(key, ref):
            if run.get("rc") or not ref or ref.get("rc") or not ref.get(key):
                return "-"
            return f"{run[key] / ref[key]:.2f}"

        print(f"{name:12} {run['seconds']:>9.1f}s {gb(run['peak_rss']):>10} {ratio('seconds', base):>10} "
              f"{ratio('peak_rss', base):>9} {ratio('seconds', bf16):>10} {ratio('peak_rss', bf16):>9}")
    if results["weights"]:
        print(f"\n{'weights':16} {'text enc.':>10} {'prior':>10} {'decoder':>10} {'VQGAN':>10} {'total':>10}")
        for label, sizes in results["weights"].items():
            print(f"{label:16} " + " ".join(f"{gb(sizes[k]):>10}" for k in ("text_encoder", "prior", "decoder",
                                                                              "vqgan"))
                  + f" {gb(sum(sizes.values())):>10}")
    if results["load_only"]:
        print(f"\n{'load only (a fresh process)':28} {'seconds':>8} {'peak RSS':>10} {'RSS/bf16':>9}")
        bf16_load = results["load_only"].get("bf16", {}).get("peak_rss")
        for label, run in results["load_only"].items():
            share = f"{run['peak_rss'] / bf16_load:.2f}" if bf16_load else "-"
            print(f"{label:28} {run['seconds']:>7.1f}s {gb(run['peak_rss']):>10} {share:>9}")
    if args.json:
        for run in runs.values():
            run.pop("stdout", None)
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    failed = [name for name, run in runs.items() if run["rc"] != 0]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
