"""Skip and Stop and finish through the served app, as a script (gradio_client) sees them: ``/skip`` and
``/stop_and_finish`` act on the caller's own running ``/generate``, like ``/stop``."""

from __future__ import annotations

import re
import time

from PIL import Image
from support import SMALL

from sote_ui.core.metadata import read_parameters

LONG = {**SMALL, "prior_steps": 60, "decoder_steps": 2}  # long enough priors to press a button during one


def wait_until(condition, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "the run never got there"
        time.sleep(0.02)


def test_skip_and_finish_say_when_nothing_runs(client):
    assert client.predict(api_name="/skip") == "nothing is running"
    assert client.predict(api_name="/stop_and_finish") == "nothing is running"


def test_skip_drops_the_image_in_progress_and_the_batch_goes_on(app, client):
    engine = app.studio.engine
    job = client.submit(**{**LONG, "seed": 310, "count": 3}, preview="off", api_name="/generate")
    wait_until(lambda: "prior 1" in engine.stage_order)  # image 2 of 3 has started
    assert client.predict(api_name="/skip") == "skipping the image in progress; the batch goes on"
    images, summary, report, status, _live = job.result(timeout=300)
    assert report["seeds"] == [310, 312] and report["skipped"] == [311]
    assert "stopped" not in report
    assert [Image.open(item["image"]).size for item in images] == [(256, 256)] * 2
    assert summary.endswith(" · skipped seed 311")
    assert engine.stage_order == ["prior 0", "decoder 0", "prior 1", "prior 2", "decoder 2"]


def test_stop_and_finish_yields_the_image_in_progress_and_says_where_its_prior_stopped(app, client):
    engine = app.studio.engine
    before = engine.counters.prior_steps
    job = client.submit(**{**LONG, "seed": 320, "count": 2}, preview="off", api_name="/generate")
    wait_until(lambda: engine.counters.prior_steps >= before + 5)  # in image 1's prior
    assert client.predict(api_name="/stop_and_finish") == "finishing the image in progress, then stopping"
    images, summary, report, status, _live = job.result(timeout=300)
    assert report["stopped"] is True and report["seeds"] == [320]
    [finished] = report["prior_stopped_at"]
    step = int(re.fullmatch(r"(\d+)/60", finished["prior_stopped_at"]).group(1))
    assert finished["seed"] == 320 and 5 <= step < 60
    saved = report["files"][0]
    assert f"Prior stopped at: {step}/60" in read_parameters(Image.open(saved))
    assert Image.open(images[0]["image"]).size == (256, 256)
    assert f"seed 320 finished from its prior stopped at step {step}/60" in summary and status == summary
    assert "prior 1" not in engine.stage_order  # image 2 never started
