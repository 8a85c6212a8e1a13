"""Tag suggestion latency: the index in-process, and the /suggest_tags round trip over HTTP.

    python bench/bench_suggest.py              # index build, in-process lookups, HTTP round trips
    python bench/bench_suggest.py --no-http    # in-process only

Queries are what a person types, one keystroke at a time, for a set of common and rare tags,
plus 2000 random 1-5 letter prefixes (the worst case for short prefixes). The HTTP part launches
the suggestion endpoint alone in a Gradio app on this machine and posts to
/gradio_api/run/suggest_tags as the page's script does.
"""

from __future__ import annotations

import argparse
import random
import socket
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

WORDS = ["long hair", "looking at viewer", "kanzaki ranko (cosplay)", "hatsune miku", "school uniform",
         "very aesthetic", "best quality", "/lh", "thighhighs", "blue eyes", "wlop", "standing on one leg"]


def typed_prefixes() -> list[str]:
    queries = [word[:n] for word in WORDS for n in range(1, len(word) + 1)]
    rng = random.Random(0)
    queries += ["".join(rng.choice("abcdefghijklmnopqrstuvwxyz ") for _ in range(rng.randint(1, 5)))
                for _ in range(2000)]
    return queries


def summary(label: str, seconds: list[float]) -> str:
    ms = sorted(s * 1000 for s in seconds)
    return (f"{label}: n={len(ms)} median {statistics.median(ms):.3f} ms, p99 {ms[int(len(ms) * 0.99) - 1]:.3f} ms, "
            f"max {ms[-1]:.3f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-http", action="store_true")
    args = parser.parse_args()

    from sote_ui.core import tagindex

    started = time.perf_counter()
    index = tagindex.index()
    print(f"index built in {time.perf_counter() - started:.2f} s ({len(index.keys)} keys)")
    queries = typed_prefixes()
    times = []
    for query in queries:
        started = time.perf_counter()
        index.suggest(query)
        times.append(time.perf_counter() - started)
    print(summary("in-process suggest()", times))
    if args.no_http:
        return

    import gradio as gr
    import httpx

    from sote_ui.core.suggestions import suggest_tags

    with gr.Blocks() as demo:
        gr.api(suggest_tags, api_name="suggest_tags", queue=False)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    _, url, _ = demo.launch(prevent_thread_lock=True, server_name="127.0.0.1", server_port=port, quiet=True)
    endpoint = url.rstrip("/") + "/gradio_api/run/suggest_tags"
    try:
        with httpx.Client(timeout=10) as client:
            for query in queries[:50]:  # warm the connection and the server
                client.post(endpoint, json={"data": [query, ""]})
            times = []
            for query in queries[:600]:
                started = time.perf_counter()
                reply = client.post(endpoint, json={"data": [query, ""]})
                reply.raise_for_status()
                times.append(time.perf_counter() - started)
        print(summary("HTTP round trip POST /gradio_api/run/suggest_tags", times))
    finally:
        demo.close()


if __name__ == "__main__":
    main()
