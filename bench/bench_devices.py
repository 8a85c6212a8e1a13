"""Images per minute with one engine, two engines behind one queue (``--devices``), and 1 or 2 Ray Serve replicas.

Each setup serves the same work through the Studio (the service layer the page and its queue call): ``clients``
visitors ask at the same time, each for ``images`` one-image runs with its own seeds. With one engine their
runs take turns; with two they run side by side, one per engine. On the CPU the engines share the cores
(``--threads`` per CPU engine; default: the cores split between them).

    python bench/bench_devices.py                          # tiny model, CPU: 1 and 2 engines
    python bench/bench_devices.py --ray                    # ... and 1 and 2 Ray replicas (requirements-ray.txt)
    python bench/bench_devices.py --devices cuda:0,cuda:1 --model sotediffusion-wuerstchen3 --size 1024x1536
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", default="cpu,cpu", help="the devices of the two-engine setup (default cpu,cpu)")
    parser.add_argument("--model", default=None, help="a model name (default: the tiny random-weight pair)")
    parser.add_argument("--mode", default=None, help="memory mode (default fp32 on the tiny pair, else auto)")
    parser.add_argument("--size", default="256x256")
    parser.add_argument("--prior-steps", type=int, default=20)
    parser.add_argument("--decoder-steps", type=int, default=4)
    parser.add_argument("--clients", type=int, default=2, help="visitors asking at the same time")
    parser.add_argument("--images", type=int, default=4, help="one-image runs per visitor")
    parser.add_argument("--threads", default=None,
                        help="intra-op threads per CPU engine, comma-separated to try several (default: split)")
    parser.add_argument("--ray", action="store_true", help="also 1 and 2 Ray Serve replicas (local cluster)")
    parser.add_argument("--json", default=None, help="write the rows to this file")
    return parser.parse_args(argv)


def make_studio(args, folder: Path, **config):
    from sote_ui.service.studio import Studio, StudioConfig

    values = {"outputs": None, "presets_dir": str(folder / "presets"), "mode": args.mode or "auto"}
    if args.model:
        values["model"] = args.model
    else:
        from sote_ui.engine.builders import build_tiny_pair

        pair = folder / "tiny"
        if not (pair / "decoder" / "model_index.json").is_file():
            build_tiny_pair(pair)
        values.update(prior=str(pair / "prior"), decoder=str(pair / "decoder"), mode=args.mode or "fp32")
    return Studio(StudioConfig(**{**values, **config}))


def serve(studio, args) -> dict:
    """Every visitor's runs at once; images per minute over the whole."""
    width, height = (int(v) for v in args.size.lower().split("x"))
    base = {"prompt": "1girl, solo", "width": width, "height": height, "prior_steps": args.prior_steps,
            "decoder_steps": args.decoder_steps}
    studio.generate({**base, "seed": 1}, session="warm-up")  # loads, and compiles nothing twice later
    if studio.pool is not None or studio.ray is not None:
        threads = [threading.Thread(target=studio.generate, args=({**base, "seed": 2},), kwargs={"session": f"w{i}"})
                   for i in range(len(studio.engines) if studio.ray is None else studio.device_count)]
        [t.start() for t in threads]
        [t.join() for t in threads]  # every engine or replica warm
    devices: dict[str, int] = {}
    lock = threading.Lock()

    def visitor(index: int) -> None:
        for run in range(args.images):
            _, report = studio.generate({**base, "seed": 1000 * (index + 1) + run}, session=f"visitor-{index}")
            with lock:
                devices[report.get("device", "the engine")] = devices.get(report.get("device", "the engine"), 0) + 1

    replicas = {item["pid"] for item in studio.ray.replicas} if studio.ray is not None else set()
    cpu_before = cpu_seconds(replicas)
    started = time.perf_counter()
    visitors = [threading.Thread(target=visitor, args=(i,)) for i in range(args.clients)]
    [t.start() for t in visitors]
    [t.join() for t in visitors]
    seconds = time.perf_counter() - started
    images = args.clients * args.images
    cpu = cpu_seconds(replicas) - cpu_before
    return {"images": images, "seconds": round(seconds, 2), "images_per_min": round(images * 60 / seconds, 1),
            "cpu_s_per_image": round(cpu / images, 3), "by_device": devices}


def cpu_seconds(pids: set[int]) -> float:
    """CPU time (user + system) of this process and of the replica processes ``pids``.

    On a busy machine the wall clock measures the share of the CPU each setup wins from the rest (the
    kernel shares it per session, and every Ray worker is a session of its own); CPU time per image does
    not depend on that.
    """
    import psutil

    total = sum(psutil.Process().cpu_times()[:2])
    for pid in pids:
        try:
            total += sum(psutil.Process(pid).cpu_times()[:2])
        except psutil.Error:
            pass
    return total


def main(argv=None) -> None:
    args = parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "0" if args.model else "1")
    from sote_ui.service.pool import parse_devices

    rows = []
    folder = Path(tempfile.mkdtemp(prefix="bench-devices-"))
    names = parse_devices(args.devices)
    counts = [int(threads) for threads in args.threads.split(",")] if args.threads else [None]
    setups = [("1 engine", {"device": names[0]}, threads) for threads in counts]
    setups += [(f"{len(names)} engines", {"devices": names}, threads) for threads in counts]
    if args.ray:
        from sote_ui.service.ray_backend import RayOptions

        for count in (1, 2):
            setups.append((f"{count} Ray replica{'s' if count > 1 else ''}",
                           {"ray": RayOptions(replicas=(count, count), local_cpus=os.cpu_count())}, None))
    for name, config, threads in setups:
        studio = make_studio(args, folder, **config)
        try:
            if threads is not None and studio.pool is not None:
                studio.pool.threads = threads
            elif threads is not None:  # one engine: the visitors' threads start with torch's process-wide count
                import torch

                torch.set_num_threads(threads)
            row = {"setup": name, "threads_per_engine": threads or (studio.pool.threads if studio.pool else None),
                   **serve(studio, args)}
        finally:
            studio.close()
        rows.append(row)
        print(f"{name:>16}  threads/engine {str(row['threads_per_engine'] or 'default'):>7}  "
              f"{row['images']} images in {row['seconds']:6.1f} s  {row['images_per_min']:6.1f} images/min  "
              f"{row['cpu_s_per_image']:5.2f} CPU s/image  "
              f"{row['by_device']}", flush=True)
    import torch

    torch.set_num_threads(os.cpu_count() or 1)
    base = rows[0]["images_per_min"]
    for row in rows:
        row["ratio"] = round(row["images_per_min"] / base, 2)
    print("ratio to 1 engine: " + ", ".join(f"{row['setup']} {row['ratio']}" for row in rows))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
