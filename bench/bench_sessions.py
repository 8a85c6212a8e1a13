"""Memory held for browser sessions that have closed: the app as served, on the tiny model.

Each session is a ``gradio_client.Client`` that runs one small /generate and
closes (its heartbeat ends, as when a tab is closed). Prints the process's
resident memory and the sessions Gradio still holds, after a warm-up batch and
after N more sessions; ``--keep-closed-sessions`` removes the app's unload
handler to show what it saves.

    python bench/bench_sessions.py                 # 120 sessions
    python bench/bench_sessions.py --keep-closed-sessions
"""

from __future__ import annotations

import argparse
import gc
import os
import socket
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("GRADIO_HEARTBEAT_INTERVAL", "0.5")  # notice closed sessions quickly
os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=120)
    parser.add_argument("--keep-closed-sessions", action="store_true", help="drop the app's unload handler")
    args = parser.parse_args()

    from gradio_client import Client

    from sote_ui.engine.builders import build_tiny_pair
    from sote_ui.service.studio import Studio, StudioConfig
    from sote_ui.ui.app import build_demo

    root = Path(tempfile.mkdtemp(prefix="bench-sessions-"))
    prior, decoder = build_tiny_pair(root / "tiny")
    studio = Studio(StudioConfig(prior=str(prior), decoder=str(decoder), device="cpu", mode="fp32", outputs=None,
                                 presets_dir=str(root / "presets")))
    demo = build_demo(studio)
    if args.keep_closed_sessions:
        for key in [k for k, fn in demo.fns.items() if any(t[1] == "unload" for t in fn.targets)]:
            demo.fns.pop(key)
    demo.queue(default_concurrency_limit=1)
    studio.start_loading()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    demo.launch(prevent_thread_lock=True, server_port=port, quiet=True)
    studio.wait_loaded(300)
    url = f"http://127.0.0.1:{port}/"

    def sessions(n: int) -> None:
        for i in range(n):
            client = Client(url, verbose=False)
            client.predict(prompt="1girl", width=128, height=128, prior_steps=1, decoder_steps=1, seed=i,
                           api_name="/generate")
            client.close()

    sessions(20)
    time.sleep(3)
    gc.collect()
    start, held = rss_mb(), len(demo.state_holder.session_data)
    sessions(args.sessions)
    time.sleep(5)
    gc.collect()
    print(f"{'without' if args.keep_closed_sessions else 'with'} the unload handler: RSS {start:.0f} -> "
          f"{rss_mb():.0f} MB over {args.sessions} sessions; sessions held {held} -> "
          f"{len(demo.state_holder.session_data)}")
    demo.close()


if __name__ == "__main__":
    main()
