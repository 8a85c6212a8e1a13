"""Several devices behind one queue (``--devices cpu,cpu``): two CPU engines in one process, driven through
the served app as scripts see it (gradio_client), and the pool and flags underneath."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from support import ROOT, SMALL, make_studio, pixels, serve_app

from sote_ui.core.errors import InputError
from sote_ui.core.request import build_request
from sote_ui.service.pool import EnginePool, labels, parse_devices, threads_per_engine

# Long enough priors that two runs started together are both still running when either starts.
LONG = {**SMALL, "prior_steps": 24, "decoder_steps": 2}


@pytest.fixture(scope="module")
def served_studio(tiny_pair, studio_home):
    return make_studio(tiny_pair, studio_home, device=None, devices=["cpu", "cpu"])


@pytest.fixture(scope="module")
def live_app(served_studio):
    with serve_app(served_studio) as served:
        yield served


@pytest.fixture
def app(live_app):
    for engine in live_app.studio.engines:  # what a test reuses is its own
        engine.clear_caches()
    return live_app


def both(app, first: dict, second: dict) -> tuple[tuple, tuple]:
    """Two visitors' /generate runs asked for at the same moment; both results."""
    a, b = app.connect(), app.connect()
    jobs = [a.submit(**first, preview="off", api_name="/generate"),
            b.submit(**second, preview="off", api_name="/generate")]
    return jobs[0].result(timeout=300), jobs[1].result(timeout=300)


def test_two_visitors_run_at_once_on_the_two_devices_and_each_gets_its_own_images(app, loaded_engine):
    (images_a, summary_a, report_a, _, _), (images_b, summary_b, report_b, _, _) = both(
        app, {**LONG, "seed": 501}, {**LONG, "seed": 502})
    # Both ran at the same time, each on its own device: the later start comes before the earlier end.
    assert {report_a["device"], report_b["device"]} == {"cpu #1", "cpu #2"}
    assert max(report_a["started"], report_b["started"]) < min(report_a["ended"], report_b["ended"])
    assert report_a["seeds"] == [501] and report_b["seeds"] == [502]
    assert f"on {report_a['device']}" in summary_a and f"on {report_b['device']}" in summary_b
    # Each visitor's image is the one a lone engine makes for its seed, not the other's. The lone engine
    # computes on two threads, each of these on one: sums taken in another order move a pixel by 1 at most.
    lone = {seed: pixels(loaded_engine.generate(build_request({**LONG, "seed": seed}))) for seed in (501, 502)}
    got_a, got_b = pixels(images_a[0]["image"]), pixels(images_b[0]["image"])
    assert not np.array_equal(lone[501], lone[502])
    assert np.abs(got_a.astype(int) - lone[501]).max() <= 1
    assert np.abs(got_b.astype(int) - lone[502]).max() <= 1


def test_the_same_seed_gives_the_same_pixels_on_either_device(app):
    made = {}
    for seed in (601, 602):  # two visitors ask for the same seed at once: one runs on each device
        (images_a, _, report_a, _, _), (images_b, _, report_b, _, _) = both(
            app, {**LONG, "seed": seed}, {**LONG, "seed": seed})
        assert {report_a["device"], report_b["device"]} == {"cpu #1", "cpu #2"}
        for images, report in ((images_a, report_a), (images_b, report_b)):
            made[(report["seeds"][0], report["device"])] = pixels(images[0]["image"])
    assert sorted(made) == [(601, "cpu #1"), (601, "cpu #2"), (602, "cpu #1"), (602, "cpu #2")]
    assert np.array_equal(made[(601, "cpu #1")], made[(601, "cpu #2")])
    assert np.array_equal(made[(602, "cpu #1")], made[(602, "cpu #2")])
    assert not np.array_equal(made[(601, "cpu #1")], made[(602, "cpu #1")])


def test_stop_ends_one_visitors_run_while_the_other_device_finishes(app):
    a, b = app.connect(), app.connect()
    long = {**SMALL, "prior_steps": 80, "decoder_steps": 2}
    job_a = a.submit(**{**long, "seed": 701}, preview="off", api_name="/generate")
    job_b = b.submit(**{**LONG, "seed": 702, "count": 2}, preview="off", api_name="/generate")
    deadline = time.monotonic() + 120
    while app.studio.pool.busy() < 2:
        assert time.monotonic() < deadline, "the two runs never ran together"
        time.sleep(0.05)
    a.predict(api_name="/stop")
    _, summary_a, report_a, _, _ = job_a.result(timeout=300)
    _, _, report_b, _, _ = job_b.result(timeout=300)
    assert report_a["stopped"] is True and report_a["seeds"] == []
    assert "stopped before the first image was finished" in summary_a
    assert report_b["seeds"] == [702, 703] and "stopped" not in report_b
    assert report_a["device"] != report_b["device"]


def test_the_status_names_every_device_and_the_queue_runs_two_gpu_jobs_at_once(app):
    status = app.studio.status()
    assert status.startswith("ready on 2 devices: cpu #1 CPU (") and "; cpu #2 CPU (" in status
    limits = {fn.concurrency_limit for fn in app.demo.fns.values() if fn.concurrency_id == "gpu"}
    assert limits == {2}


def test_cpu_engines_split_the_cores_between_them(app):
    pool = app.studio.pool
    assert pool.threads == threads_per_engine(["cpu", "cpu"])
    seen = []

    def job():
        import torch

        with pool.take("someone") as (_, label):
            seen.append((label, torch.get_num_threads()))

    worker = threading.Thread(target=job)
    worker.start()
    worker.join()
    assert seen == [("cpu #1", pool.threads)]


# The pool, the flag and the fp8 cache ---------------------------------------------------------------


def test_devices_flag_names():
    assert parse_devices("cuda:0, cuda:1") == ["cuda:0", "cuda:1"]
    assert parse_devices("ALL") == ["all"] and parse_devices(None) == [] and parse_devices(" ") == []
    with pytest.raises(InputError, match=r"^--devices: 'gpu0' is not a device like cuda:0"):
        parse_devices("cuda:0,gpu0")
    with pytest.raises(InputError, match="an empty name"):
        parse_devices("cuda:0,")
    assert labels(["cpu", "cpu", "cuda:1"]) == ["cpu #1", "cpu #2", "cuda:1"]
    assert threads_per_engine(["cpu", "cpu"], cores=16) == 8
    assert threads_per_engine(["cpu", "cpu", "cpu"], cores=2) == 1
    assert threads_per_engine(["cuda:0", "cpu"], cores=16) is None


def test_app_py_refuses_a_bad_devices_value_before_serving():
    import subprocess
    import sys

    bad = subprocess.run([sys.executable, "app.py", "--devices", "cuda:0,tpu"], cwd=ROOT, capture_output=True,
                         text=True, timeout=120)
    assert bad.returncode == 1
    assert bad.stderr.strip().splitlines()[-1] == (
        "error: --devices: 'tpu' is not a device like cuda:0, xpu:1, mps or cpu (or give 'all')")
    both_flags = subprocess.run([sys.executable, "app.py", "--device", "cpu", "--devices", "cpu,cpu"], cwd=ROOT,
                                capture_output=True, text=True, timeout=120)
    assert both_flags.returncode == 1 and both_flags.stderr.strip() == "error: give --device or --devices, not both"


def test_a_session_gets_its_last_engine_back_when_it_is_free():
    pool = EnginePool(["engine 1", "engine 2"], ["cuda:0", "cuda:1"])
    with pool.take("a") as (_, first):
        with pool.take("b") as (_, other):
            assert (first, other) == ("cuda:0", "cuda:1")
    with pool.take("b") as (_, again):
        assert again == "cuda:1"
        with pool.take("a") as (_, busy):
            assert busy == "cuda:0"
    with pool.take("b") as (_, back):
        assert back == "cuda:1" and pool.busy() == 1
    assert pool.busy() == 0


def test_the_fp8_cache_is_built_by_the_first_device_and_read_by_the_second(tiny_pair, tmp_path, monkeypatch):
    monkeypatch.setenv("SOTE_CACHE", str(tmp_path / "cache"))
    studio = make_studio(tiny_pair, tmp_path, device=None, devices=["cpu", "cpu"], mode="fp8")
    try:
        studio.start_loading()
        assert studio.wait_loaded(300), studio.status()
        first, second = (engine.load_notes for engine in studio.engines)
        assert [note.split(" (")[0] for note in first] == [
            "fp8 cache built for the prior", "fp8 cache built for the decoder", "fp8 cache built for the text_encoder"]
        assert [note.split(" (")[0] for note in second] == [
            "fp8 cache used for the prior", "fp8 cache used for the decoder", "fp8 cache used for the text_encoder"]
    finally:
        studio.close()
