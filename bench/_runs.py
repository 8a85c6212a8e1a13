"""What the benches that time whole ``python -m sote_ui generate`` processes share: the command line, one
timed run (wall seconds, the seconds the command reports for generating, peak RSS from the kernel) and the
table they print."""

from __future__ import annotations

import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def generate_command(prior, decoder, *, mode: str, seed: int, prior_steps: int, decoder_steps: int,
                     device: str | None = None, effnet=None) -> list[str]:
    """``python -m sote_ui generate`` on the pair, the options every run of a bench shares."""
    command = [sys.executable, "-m", "sote_ui", "generate", "--prompt", "1girl, solo", "--seed", str(seed),
               "--prior-steps", str(prior_steps), "--decoder-steps", str(decoder_steps), "--prior", str(prior),
               "--decoder", str(decoder), "--mode", mode]
    command += ["--device", device] if device else []
    command += ["--effnet", str(effnet)] if effnet else []
    return command


def run(argv: list[str]) -> dict:
    """Run one command from the repository root: its wall seconds, the seconds it reports for generating
    (None if it prints none), its own peak RSS in bytes (``wait4``) and what it printed (the file it wrote)."""
    print(" ".join(argv[3:]), file=sys.stderr)
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        started = time.perf_counter()
        process = subprocess.Popen(argv, cwd=ROOT, stdout=out, stderr=err, text=True)
        _, status, usage = os.wait4(process.pid, 0)
        wall = time.perf_counter() - started
        process.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        printed, log = out.read(), err.read()
    if process.returncode != 0:
        raise SystemExit(f"failed ({process.returncode}): {' '.join(argv)}\n{log[-2000:]}")
    found = re.search(r"image\(s\) in ([0-9.]+) s", log)
    return {"wall_s": round(wall, 2), "generate_s": float(found.group(1)) if found else None,
            "peak_rss": usage.ru_maxrss * (1 if sys.platform == "darwin" else 1024), "file": printed.strip()}


def machine() -> str:
    return f"{platform.node()} {platform.machine()}, {os.cpu_count()} CPUs"


def print_runs(results: dict[str, dict], rss: bool = False) -> None:
    """One line per run: wall seconds, generating seconds and, with ``rss``, peak RSS in GB."""
    print(f"{'run':8} {'wall s':>8} {'generate s':>11}" + (f" {'peak RSS GB':>12}" if rss else ""))
    for name, r in results.items():
        print(f"{name:8} {r['wall_s']:8.2f} {r['generate_s'] or 0:11.2f}"
              + (f" {r['peak_rss'] / 1e9:12.2f}" if rss else ""))
