"""Sote Studio: SoteDiffusion Wuerstchen3 on your own GPU.

    python app.py                 # the real model, downloaded from the Hugging Face Hub on first use
    python app.py --demo          # a tiny random-weight model: try the whole UI with no download
    python app.py --mode fp8 --device cuda:1 --port 7861
    python app.py --devices all   # one engine per GPU, one queue: as many jobs at once as GPUs
    python app.py --backend ray --ray-address HEAD:6379 --replicas 1:4   # replicas on a Ray cluster

The page is served at once; the model loads in the background.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    from sote_ui.cli import add_model_flags
    from sote_ui.core.presets import default_user_dir

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_flags(parser)
    parser.add_argument("--host", default=None, help="address to bind (default 127.0.0.1; 0.0.0.0 on Spaces)")
    parser.add_argument("--port", type=int, default=None, help="port (default 7860 or $GRADIO_SERVER_PORT)")
    parser.add_argument("--share", action="store_true", help="also serve through a public gradio.live link")
    parser.add_argument("--auth", default=None, help="require a login, given as user:password")
    parser.add_argument("--presets-dir", default=str(default_user_dir()), help="where user presets are saved")
    parser.add_argument("--outputs", default="outputs", help="where images are saved ('' to keep none)")
    parser.add_argument("--demo", action="store_true", help="run on the tiny random-weight model (images are noise)")
    parser.add_argument("--queue-size", type=int, default=20, help="jobs allowed to wait for the GPU")
    parser.add_argument("--devices", default=None,
                        help="serve one queue with an engine on each device: cuda:0,cuda:1 (or all; cpu,cpu "
                             "for two CPU engines); each device's memory mode is chosen on its own")
    parser.add_argument("--backend", choices=("local", "ray"), default="local",
                        help="where jobs run: engines in this process (local) or Ray Serve replicas, one GPU "
                             "each (ray; pip install -r requirements-ray.txt)")
    parser.add_argument("--ray-address", default=None,
                        help="the Ray cluster to join (HEAD:6379 of `ray start --head`); default: start a local one")
    parser.add_argument("--replicas", default="1",
                        help="Ray Serve replicas: N, or MIN:MAX to add replicas while jobs wait (default 1)")
    return parser.parse_args(argv)


def tiny_model_dir() -> Path:
    """Build the demo model once per machine (it takes a few seconds)."""
    from sote_ui.engine.builders import EFFNET_FILE, build_tiny_pair

    folder = Path(os.environ.get("SOTE_STUDIO_HOME", Path.home() / ".sote-studio")) / "tiny-model"

    def complete() -> bool:  # a demo model of an earlier version may lack the encoders image remix and
        # image to image need, or the ControlNets (super-resolution's is written last)
        return (folder / "decoder" / "model_index.json").is_file() and \
            (folder / "prior" / "image_encoder" / "config.json").is_file() and \
            (folder / EFFNET_FILE).is_file() and (folder / "controlnet" / "super_resolution.safetensors").is_file()

    if not complete():
        tmp = Path(tempfile.mkdtemp(prefix="tiny-", dir=folder.parent if folder.parent.exists() else None))
        build_tiny_pair(tmp, image_encoder=True)
        folder.parent.mkdir(parents=True, exist_ok=True)
        if complete():  # another start finished one meanwhile: use it
            shutil.rmtree(tmp, ignore_errors=True)
            return folder
        if folder.exists():  # moved aside first, so the new one goes in whole
            old = folder.with_name(f"{folder.name}.old-{os.getpid()}")
            try:
                folder.rename(old)
            except OSError:
                pass
            shutil.rmtree(old, ignore_errors=True)
        try:
            tmp.rename(folder)
        except OSError:  # another start put its own in place meanwhile
            shutil.rmtree(tmp, ignore_errors=True)
    return folder


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    from sote_ui.core.errors import InputError
    from sote_ui.core.memory import parse_mode
    from sote_ui.service import hosting
    from sote_ui.service.pool import parse_devices
    from sote_ui.service.studio import Studio, StudioConfig, stop_on_sigterm
    from sote_ui.ui.app import build_demo, launch_options

    if args.devices and args.device:
        sys.exit("error: give --device or --devices, not both")
    ray_options = None
    try:
        devices = parse_devices(args.devices)
        if args.backend == "ray":
            from sote_ui.service.ray_backend import RayOptions, installed, parse_replicas

            if devices:
                sys.exit("error: --devices is for the local backend; Ray gives each replica its own GPU")
            if not installed():
                sys.exit("error: --backend ray needs Ray Serve: pip install -r requirements-ray.txt")
            ray_options = RayOptions(address=args.ray_address, replicas=parse_replicas(args.replicas))
        elif args.ray_address or args.replicas != "1":
            sys.exit("error: --ray-address and --replicas go with --backend ray")
    except InputError as exc:
        sys.exit(f"error: {exc}")
    config = StudioConfig(model=args.model, prior=args.prior, decoder=args.decoder, mode=args.mode,
                          device=args.device, devices=devices, effnet=args.effnet,
                          controlnet=args.controlnet, outputs=args.outputs or None,
                          presets_dir=args.presets_dir, demo=args.demo, ray=ray_options)
    if args.demo:
        folder = tiny_model_dir()
        config.prior, config.decoder, config.model = str(folder / "prior"), str(folder / "decoder"), None
    auth = None
    if args.auth:
        user, sep, password = args.auth.partition(":")
        if not sep or not user or not password:
            sys.exit("error: --auth must be user:password")
        auth = (user, password)
    config = hosting.for_environment(config)
    studio = Studio(config)
    stop_on_sigterm()  # Ctrl+C and SIGTERM both close the server and remove its temporary folder
    try:
        studio.source  # a bad --model, folder or mode is reported before serving
        parse_mode(config.mode)
    except InputError as exc:
        sys.exit(f"error: {exc}")
    demo = build_demo(studio)
    demo.queue(max_size=args.queue_size, default_concurrency_limit=1)
    if hosting.zero_gpu():
        studio.engine.load()  # ZeroGPU: models go to cuda at start, before the first GPU call
    else:
        studio.start_loading()
    demo.launch(server_name=hosting.server_name(args.host), server_port=args.port, share=args.share, auth=auth,
                show_error=True, **launch_options(studio))


if __name__ == "__main__":
    main()
