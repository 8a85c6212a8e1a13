"""The run's event stream between the engine's worker and the page: a page slower than the engine gets
the newest live preview, never a backlog of old ones, and loses no progress tick or finished image."""

from __future__ import annotations

import queue
import threading

from sote_ui.ui.generate.run import fresh_events, stream_job


def test_only_the_newest_waiting_preview_is_kept_and_everything_else_comes_in_order():
    events: queue.Queue = queue.Queue()
    for event in (("progress", 1), ("preview", "step 4"), ("progress", 2), ("shot", "image 1"),
                  ("preview", "step 8"), ("preview", "step 12"), ("progress", 3), None):
        events.put(event)
    assert fresh_events(events) == [("progress", 1), ("progress", 2), ("shot", "image 1"),
                                    ("preview", "step 12"), ("progress", 3), None]
    assert events.empty()


def test_a_lone_preview_is_kept_and_the_call_waits_for_the_first_event():
    events: queue.Queue = queue.Queue()
    threading.Timer(0.2, events.put, (("preview", "step 4"),)).start()
    assert fresh_events(events) == [("preview", "step 4")]


def test_a_slow_page_sees_the_last_preview_and_every_image():
    """The page takes its first progress tick only once the worker has made all 40 previews and 2 images."""
    done = threading.Event()

    def work(progress, preview, shot):
        for image in range(2):
            for step in range(1, 21):
                progress(step)
                preview(f"image {image} step {step}")
            shot(f"image {image}")
        done.set()
        return "finished"

    seen = []

    def slow_page(step):
        done.wait(10)
        seen.append(step)

    job = stream_job(work, slow_page)
    streamed = []
    try:
        while True:
            streamed.append(next(job))
    except StopIteration as end:
        result = end.value
    assert result == "finished"
    assert [item for kind, item in streamed if kind == "shot"] == ["image 0", "image 1"]
    previews = [item for kind, item in streamed if kind == "preview"]
    # At most the one taken with the first tick, then the newest: not 40 stale steps.
    assert previews[-1] == "image 1 step 20" and len(previews) <= 2
    assert seen == [step for _ in range(2) for step in range(1, 21)]
