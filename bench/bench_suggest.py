"""Tag suggestion latency: the index in-process, and the two ways the page can reach it.

    python bench/bench_suggest.py              # index build, in-process lookups, both routes, the page index
    python bench/bench_suggest.py --no-http    # in-process only
    python bench/bench_suggest.py --busy       # the routes again while torch keeps the CPU busy, as a run does
    python bench/bench_suggest.py --page       # also keystroke to popup in Chromium (Playwright, /usr/bin/chromium)

Queries are what a person types, one keystroke at a time, for a set of common and rare tags,
plus 2000 random 1-5 letter prefixes (the worst case for short prefixes). The HTTP part serves the
whole app as app.py does (every tab and event; the model is not loaded: suggestions need none) and
times, request by request, in alternating rounds:

- the old way: POST /gradio_api/run/suggest_tags, the Gradio API endpoint (queue=False);
- the new way: GET /sote_api/suggest_tags, a plain FastAPI route beside the app (what the page uses).

The other candidate, the whole index shipped in the page (as A1111's tagcomplete does), is sized:
the bytes every page load would carry (names, categories, counts, aliases as JSON, raw and gzipped).

With ``--page`` the page itself is timed in headless Chromium: from a keystroke in the prompt box to the
popup showing its first suggestion (the script waits 15 ms after the last keystroke before it asks).
"""

from __future__ import annotations

import argparse
import gzip
import json
import random
import socket
import statistics
import sys
import threading
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


def page_index_size(index) -> str:
    """What shipping the index in the page would weigh: every tag with its category, count and aliases."""
    aliases: dict[int, list[str]] = {}
    for position, key in enumerate(index.keys):
        if index.entry_alias[position]:
            aliases.setdefault(index.entry_tag[position], []).append(key)
    rows = [[name, index.categories[n], index.counts[n], aliases.get(n, [])] for n, name in enumerate(index.names)]
    raw = json.dumps(rows, separators=(",", ":")).encode()
    return (f"index in the page: {len(rows)} tags, {len(raw) / 1e6:.1f} MB of JSON, "
            f"{len(gzip.compress(raw)) / 1e6:.1f} MB gzipped, on every page load")


ROUNDS = 3


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def timed(send, queries: list[str]) -> list[float]:
    for query in queries[:20]:  # warm the connection and the server
        send(query)
    times = []
    for query in queries[:200]:
        started = time.perf_counter()
        send(query)
        times.append(time.perf_counter() - started)
    return times


def keep_busy(stop: threading.Event) -> None:
    """Matrix products on the CPU until ``stop``: the load a run puts on the machine."""
    import torch

    a = torch.randn(768, 768)
    while not stop.is_set():
        a = (a @ a).tanh()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-http", action="store_true")
    parser.add_argument("--busy", action="store_true", help="time the routes again while torch keeps the CPU busy")
    parser.add_argument("--page", action="store_true", help="time keystroke to popup in Chromium too")
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
    print(page_index_size(index))
    if args.no_http:
        return

    import tempfile

    import httpx

    from sote_ui.service.studio import Studio, StudioConfig
    from sote_ui.ui.app import build_demo, launch_options
    from sote_ui.ui.generate.prompt_tools import ROUTE

    folder = tempfile.mkdtemp(prefix="sote-bench-")
    studio = Studio(StudioConfig(outputs=f"{folder}/outputs", presets_dir=f"{folder}/presets", device="cpu"))
    demo = build_demo(studio)
    demo.queue(max_size=20, default_concurrency_limit=1)
    _, url, _ = demo.launch(prevent_thread_lock=True, server_name="127.0.0.1", server_port=free_port(), quiet=True,
                            **launch_options(studio))
    base = url.rstrip("/")
    try:
        with httpx.Client(timeout=10) as client:
            def old(query):
                client.post(base + "/gradio_api/run/suggest_tags", json={"data": [query, ""]}).raise_for_status()

            def new(query):
                client.get(base + ROUTE, params={"text": query, "category": ""}).raise_for_status()

            rounds = [("", None)] + ([(" while the CPU is busy", threading.Event())] if args.busy else [])
            for note, stop in rounds:
                worker = threading.Thread(target=keep_busy, args=(stop,), daemon=True) if stop else None
                if worker:
                    worker.start()
                try:
                    times = {"old": [], "new": []}
                    for _ in range(ROUNDS):  # alternate, so a busy moment on the machine hits both alike
                        times["old"] += timed(old, queries)
                        times["new"] += timed(new, queries)
                    print(summary(f"old: POST /gradio_api/run/suggest_tags{note}", times["old"]))
                    print(summary(f"new: GET {ROUTE}{note}", times["new"]))
                finally:
                    if stop:
                        stop.set()
                        worker.join()
        if args.page:
            print(summary("page: keystroke to popup (Chromium)", keystroke_to_popup(url, [q for q in queries[:170] if len(q.strip()) >= 2])))
    finally:
        demo.close()
        studio.close()


# In the page: the time of each real key press in the prompt box, and the moment the popup next shows a
# suggestion after it (a MutationObserver on the popup), so the figure leaves out Playwright's own round trips.
WATCH = """() => {
  window.__typed = 0; window.__shown = [];
  document.addEventListener('keydown', () => { window.__typed = performance.now(); }, true);
  new MutationObserver(() => {
    const popup = document.getElementById('tag_suggestions');
    if (window.__typed && popup && popup.style.display === 'block' && popup.querySelector('.sote-suggestion')) {
      window.__shown.push(performance.now() - window.__typed); window.__typed = 0;
    }
  }).observe(document.body, {subtree: true, childList: true, attributes: true, attributeFilter: ['style']});
}"""


def keystroke_to_popup(url: str, queries: list[str]) -> list[float]:
    """Seconds from a key press in the prompt box to the popup showing, for each query that has suggestions."""
    from playwright.sync_api import sync_playwright

    times = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path="/usr/bin/chromium", headless=True,
                                     args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"])
        try:
            page = browser.new_page()
            page.goto(url)
            box = page.locator("#prompt textarea")
            box.wait_for()
            page.evaluate(WATCH)
            for query in queries:
                box.fill(query[:-1])
                page.wait_for_timeout(150)  # the answer for the text before this key has come and gone
                page.evaluate("() => { const p = document.getElementById('tag_suggestions'); "
                              "if (p) p.style.display = 'none'; window.__typed = 0; }")
                before = page.evaluate("() => window.__shown.length")
                box.press_sequentially(query[-1])  # a real key press: the script answers only real typing
                try:
                    page.wait_for_function(f"() => window.__shown.length > {before}", timeout=1000)
                except Exception:  # no suggestion for this text
                    continue
                times.append(page.evaluate("() => window.__shown[window.__shown.length - 1]") / 1000)
        finally:
            browser.close()
    return times


if __name__ == "__main__":
    main()
