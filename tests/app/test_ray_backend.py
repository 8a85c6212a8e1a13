"""The Ray Serve backend (``--backend ray``): two replicas of the tiny model on a local Ray cluster bounded to
two CPUs, behind the real Gradio app, driven as scripts drive it (gradio_client). Skipped where Ray Serve is
not installed (``pip install -r requirements-ray.txt``)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from support import ROOT, SMALL, make_studio, pixels, serve_app

pytest.importorskip("ray.serve")

from sote_ui.core.errors import InputError  # noqa: E402
from sote_ui.core.request import build_request  # noqa: E402
from sote_ui.service.ray_backend import RayOptions, parse_replicas  # noqa: E402

pytestmark = pytest.mark.ray

LONG = {**SMALL, "prior_steps": 24, "decoder_steps": 2}


@pytest.fixture(scope="module")
def served_studio(tiny_pair, studio_home):
    return make_studio(tiny_pair, studio_home, device=None, ray=RayOptions(replicas=(2, 2), local_cpus=2))


@pytest.fixture(scope="module")
def live_app(served_studio):
    with serve_app(served_studio) as served:
        yield served


def wait_until(condition, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "the run never got there"
        time.sleep(0.05)


def test_two_visitors_run_at_once_on_two_replicas_with_the_lone_engines_pixels(live_app, loaded_engine):
    a, b = live_app.connect(), live_app.connect()
    jobs = [a.submit(**{**LONG, "seed": 801}, preview="off", api_name="/generate"),
            b.submit(**{**LONG, "seed": 802}, preview="off", api_name="/generate")]
    (images_a, summary_a, report_a, _, _), (images_b, _, report_b, _, _) = (job.result(timeout=300) for job in jobs)
    assert report_a["device"].startswith("replica ") and report_b["device"].startswith("replica ")
    assert report_a["device"] != report_b["device"]
    assert max(report_a["started"], report_b["started"]) < min(report_a["ended"], report_b["ended"])
    assert f"on {report_a['device']}" in summary_a and report_a["mode"] == "fp32"
    # A replica computes on its one CPU's thread, the lone engine on two: a pixel moves by 1 at most.
    for images, report, seed in ((images_a, report_a, 801), (images_b, report_b, 802)):
        assert report["seeds"] == [seed] and len(report["files"]) == 1
        lone = pixels(loaded_engine.generate(build_request({**LONG, "seed": seed})))
        assert np.abs(pixels(images[0]["image"]).astype(int) - lone).max() <= 1


def test_previews_and_progress_stream_back_from_the_replica(live_app):
    previews, progress = [], []
    shots, report = live_app.studio.generate({**LONG, "seed": 811}, session="stream", on_preview=previews.append,
                                             preview="fast", on_progress=progress.append)
    assert report["seeds"] == [811] and len(shots) == 1
    assert [p.step for p in previews] == sorted(p.step for p in previews) and len(previews) >= 2
    assert previews[0].image.size[0] > 0 and progress[-1].done == progress[-1].total == 26


def test_stop_and_skip_reach_the_replica_running_the_job(live_app):
    studio = live_app.studio
    seen = []
    studio_thread_result = {}

    import threading

    def run():
        studio_thread_result["value"] = studio.generate({**LONG, "seed": 821, "count": 3}, session="skipper",
                                                        on_progress=seen.append)

    worker = threading.Thread(target=run)
    worker.start()
    wait_until(lambda: any(p.image == 1 and p.stage == "prior" and p.step >= 2 for p in seen))
    assert studio.skip("skipper")
    worker.join(300)
    _, report = studio_thread_result["value"]
    assert report["seeds"] == [821, 823] and report["skipped"] == [822]

    client = live_app.connect()
    job = client.submit(**{**SMALL, "prior_steps": 80, "seed": 831}, preview="off", api_name="/generate")
    wait_until(lambda: studio.ray.running())
    client.predict(api_name="/stop")
    _, summary, report, _, _ = job.result(timeout=300)
    assert report["stopped"] is True and report["seeds"] == []
    assert summary.startswith("stopped before the first image was finished")


def test_a_killed_replica_gives_one_clear_line_and_the_next_job_succeeds(live_app, loaded_engine):
    studio = live_app.studio
    client = live_app.connect()
    job = client.submit(**{**SMALL, "prior_steps": 80, "seed": 841}, preview="off", api_name="/generate")
    wait_until(lambda: studio.ray.running())
    [replica] = studio.ray.running().values()
    os.kill(replica["pid"], signal.SIGKILL)
    with pytest.raises(Exception) as failed:
        job.result(timeout=300)
    assert str(failed.value) == ("the Ray Serve replica running this job stopped before it finished "
                                 "(ActorDiedError); ask again: the next job goes to a healthy replica")
    images, _, report, _, _ = client.predict(**{**SMALL, "seed": 842}, preview="off", api_name="/generate")
    assert report["seeds"] == [842] and report["device"] != replica["label"]
    lone = pixels(loaded_engine.generate(build_request({**SMALL, "seed": 842})))
    assert np.abs(pixels(images[0]["image"]).astype(int) - lone).max() <= 1


def test_replicas_flag():
    assert parse_replicas("2") == (2, 2) and parse_replicas("1:4") == (1, 4) and parse_replicas(None) == (1, 1)
    with pytest.raises(InputError, match=r"^--replicas: '0' needs 1 <= MIN <= MAX$"):
        parse_replicas("0")
    with pytest.raises(InputError, match=r"^--replicas: 'two' is not a count like 2 or a range like 1:4$"):
        parse_replicas("two")
    refused = subprocess.run([sys.executable, "app.py", "--replicas", "2"], cwd=ROOT, capture_output=True, text=True,
                             timeout=120)
    assert refused.returncode == 1 and refused.stderr.strip() == \
        "error: --ray-address and --replicas go with --backend ray"
