"""The served app under load and attack: one GPU job at a time, a bounded queue, equal seeds give
equal pixels whatever runs beside them, and no file is served that the app did not produce."""

from __future__ import annotations

import concurrent.futures
import gc
import shutil
import time
import weakref
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image
from support import SMALL, make_studio, pixels, serve_app

from sote_ui.service.studio import Studio, StudioConfig

FAST = {**SMALL, "prompt": "1girl", "width": 128, "height": 128, "prior_steps": 2}


def _image(result) -> np.ndarray:
    """The pixels of the first image a /generate call returned."""
    gallery = result[0]
    return pixels(gallery[0]["image"])


def test_six_clients_at_once_all_get_their_images_and_equal_seeds_match(app):
    seeds = [11, 12, 11, 13, 12, 11]

    def one(seed):
        client = app.connect()
        return client.predict(**{**FAST, "prompt": "1girl, solo", "seed": seed}, api_name="/generate")

    with concurrent.futures.ThreadPoolExecutor(len(seeds)) as pool:
        results = list(pool.map(one, seeds))
    reports = [r[2] for r in results]
    assert [r["seeds"] for r in reports] == [[s] for s in seeds]
    by_seed: dict[int, list[np.ndarray]] = {}
    for seed, result in zip(seeds, results):
        by_seed.setdefault(seed, []).append(_image(result))
    for seed, images in by_seed.items():
        assert all(np.array_equal(images[0], other) for other in images[1:]), seed
    assert not np.array_equal(by_seed[11][0], by_seed[13][0])
    # Each client gets only its own job's image: no per-user state is shared.
    assert all(len(r[0]) == 1 for r in results)


def test_the_queue_bound_refuses_overflow_with_a_message(tiny_pair, tmp_path):
    with serve_app(make_studio(tiny_pair, tmp_path), queue_size=1) as served:
        client = served.client
        slow = {**FAST, "width": 256, "height": 256, "prior_steps": 30, "decoder_steps": 10}
        jobs = [client.submit(**{**slow, "seed": i}, api_name="/generate") for i in range(6)]
        outcomes = []
        for job in jobs:
            try:
                outcomes.append(("ok", job.result(timeout=300)[2]["seeds"]))
            except Exception as exc:  # gradio_client raises the server's refusal
                outcomes.append(("refused", str(exc)))
        refused = [text for kind, text in outcomes if kind == "refused"]
        done = [seeds for kind, seeds in outcomes if kind == "ok"]
        assert refused, outcomes
        assert all("queue is full" in text.lower() for text in refused), refused
        assert done  # the first jobs ran
        # The app still serves once the queue drains.
        result = client.predict(**{**FAST, "seed": 99}, api_name="/generate")
        assert result[2]["seeds"] == [99]


@pytest.mark.parametrize("path", [
    "/etc/passwd",
    "../../../../etc/passwd",
    "..%2F..%2F..%2F..%2Fetc%2Fpasswd",
    "%2Fetc%2Fpasswd",
    "/proc/self/environ",
])
def test_no_arbitrary_file_is_served(app, path):
    url = app.url
    for route in ("gradio_api/file=", "file="):
        response = httpx.get(url + route + path, timeout=10)
        assert response.status_code != 200 or "root:" not in response.text, (route, path)
        assert response.status_code in (400, 403, 404, 405), (route, path, response.status_code)


def test_files_the_app_produced_are_served(app):
    result = app.connect().predict(**{**FAST, "seed": 5}, api_name="/generate")
    served_url = result[0][0]["image"]
    assert Image.open(served_url).size == (128, 128)


def test_auth_keeps_strangers_out(tiny_pair, tmp_path):
    with serve_app(make_studio(tiny_pair, tmp_path), queue_size=5, auth=("artist", "s3cret")) as served:
        with pytest.raises(Exception):
            served.connect()
        client = served.connect(auth=("artist", "s3cret"))
        result = client.predict(**{**FAST, "seed": 3}, api_name="/generate")
        assert result[2]["seeds"] == [3]


def test_bad_input_is_one_line_and_the_next_request_works(app):
    client = app.connect()
    # Out-of-range slider values are refused by the slider itself; the rest by the request's validation.
    for bad, needle in (({"width": 200}, "multiple of 128"), ({"prior_steps": 0}, "less than minimum value 1"),
                        ({"prompt": "x" * 100_000}, "characters long"),
                        ({"count": 99}, "greater than maximum value 16")):
        with pytest.raises(Exception) as info:
            client.predict(**{**FAST, "seed": 1, **bad}, api_name="/generate")
        assert needle in str(info.value)
    result = client.predict(**{**FAST, "seed": 21}, api_name="/generate")
    assert result[2]["seeds"] == [21]


def test_stop_ends_the_running_job_and_frees_the_gpu(app):
    studio = app.studio
    client = app.connect()
    slow = {**FAST, "width": 512, "height": 512, "prior_steps": 80, "decoder_steps": 40}
    # Every activation the prior makes is watched: after the stop, none may still be alive.
    alive: list[weakref.ref] = []
    studio.wait_loaded(60)
    hook = studio.engine.prior_pipe.prior.register_forward_hook(
        lambda module, args, output: alive.append(weakref.ref(output[0] if isinstance(output, tuple) else
                                                              output.sample)))
    job = client.submit(**{**slow, "seed": 31}, api_name="/generate")
    before = studio.engine.counters.prior_steps
    for _ in range(600):  # wait until denoising has started (bounded: 60 s)
        if studio.engine.counters.prior_steps > before or job.done():
            break
        time.sleep(0.1)
    assert studio.engine.counters.prior_steps > before
    assert client.predict(api_name="/stop") == "stopping after the current step"
    gallery, _summary, report, status, _preview = job.result(timeout=120)
    assert report["stopped"] is True and report["seeds"] == []  # stopped inside the only image
    assert "stopped" in status
    assert studio.engine.counters.prior_steps - before < 80  # it did not run to the end
    hook.remove()
    gc.collect()
    assert alive and all(ref() is None for ref in alive)  # the stopped job's tensors were freed
    # The next job runs at once.
    assert client.predict(**{**FAST, "seed": 32}, api_name="/generate")[2]["seeds"] == [32]


def test_an_outputs_folder_anywhere_is_served(tiny_pair, tmp_path):
    # Gradio serves only its cache, the working folder and the temp folder unless told otherwise.
    outputs = Path.home() / ".cache" / "sote-studio-test-outputs" / tmp_path.name
    try:
        with serve_app(make_studio(tiny_pair, tmp_path, outputs=str(outputs)), queue_size=5) as served:
            result = served.client.predict(**{**FAST, "seed": 8}, api_name="/generate")
            assert result[2]["seeds"] == [8]
            assert Image.open(result[0][0]["image"]).size == (128, 128)
            assert len(list(outputs.glob("*.png"))) == 1
    finally:
        shutil.rmtree(outputs, ignore_errors=True)


# --- disk that only grew ----------------------------------------------------------------------------

def _gradio_cache() -> Path:
    import os
    import tempfile

    return Path(os.environ.get("GRADIO_TEMP_DIR") or Path(tempfile.gettempdir()) / "gradio")


def test_uploads_over_the_limit_are_refused_before_they_are_stored(app, tmp_path):
    from sote_ui.core.outputs import MAX_UPLOAD_BYTES

    url = app.url
    big = tmp_path / "big.png"
    big.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * (MAX_UPLOAD_BYTES + 1024))
    before = {p for p in _gradio_cache().rglob("big.png")}
    with big.open("rb") as handle:
        response = httpx.post(url + "gradio_api/upload", files={"files": ("big.png", handle, "image/png")},
                              timeout=60)
    assert response.status_code == 413
    assert "maximum allowed size" in response.text
    assert {p for p in _gradio_cache().rglob("big.png")} == before  # nothing of it was kept


def test_a_refused_upload_is_removed_from_the_cache(app, tmp_path):
    from gradio_client import handle_file

    junk = tmp_path / "not-an-image-7731.png"
    junk.write_bytes(b"this is not a PNG at all")
    client = app.connect()
    with pytest.raises(Exception, match="not an image this app can read"):
        client.predict(handle_file(str(junk)), api_name="/png_info")
    assert list(_gradio_cache().rglob(junk.name)) == []


def test_the_temporary_folder_goes_at_close_and_stale_ones_at_start(tiny_pair, tmp_path):
    import os
    import tempfile

    from sote_ui.service.studio import TEMP_PREFIX

    dead = Path(tempfile.gettempdir()) / f"{TEMP_PREFIX}999999999-stale"
    dead.mkdir(exist_ok=True)
    (dead / "sote-old.png").write_bytes(b"x")
    presets = tmp_path / "presets"
    presets.mkdir()
    orphan = presets / ".mine.json.x1y2.tmp"
    orphan.write_text("{")
    studio = Studio(StudioConfig(prior=str(tiny_pair[0]), decoder=str(tiny_pair[1]), outputs=None,
                                 presets_dir=str(presets)))
    assert not dead.exists() and not orphan.exists()
    mine = studio.temp_folder
    assert mine.is_dir() and mine.name.startswith(f"{TEMP_PREFIX}{os.getpid()}-")
    other = Studio(StudioConfig(prior=str(tiny_pair[0]), decoder=str(tiny_pair[1]), outputs=None))
    assert mine.is_dir()  # a live server's folder is left alone
    studio.close()
    other.close()
    assert not mine.exists() and not other.temp_folder.exists()


def test_a_refused_remix_upload_is_removed_from_the_cache(app, tmp_path):
    from gradio_client import handle_file

    junk = tmp_path / "not-an-image-7732.png"
    junk.write_bytes(b"this is not a PNG either")
    client = app.connect()
    for endpoint in ("/generate", "/draft"):
        with pytest.raises(Exception, match="reference image 'not-an-image-7732.png': the file is not an image"):
            client.predict(prompt="1girl", width=128, height=128, prior_steps=1, decoder_steps=1, seed=1,
                           images=[handle_file(str(junk))], api_name=endpoint)
        assert list(_gradio_cache().rglob(junk.name)) == []


# --- server files stay out of reach ---------------------------------------------------------------

# Every endpoint that takes files, with the parameter that carries them and how to send a file there.
FILE_ENDPOINTS = {
    "/png_info": ("path", lambda file: file),
    "/generate": ("images", lambda file: [file]),
    "/draft": ("images", lambda file: [file]),
}


@pytest.mark.parametrize("endpoint", sorted(FILE_ENDPOINTS))
def test_raw_server_paths_are_refused_alike_whether_or_not_the_file_exists(app, tmp_path, endpoint):
    secret = tmp_path / "server-secret.png"
    Image.new("RGB", (64, 64), (200, 10, 10)).save(secret)
    missing = tmp_path / "no-such-file.png"
    name, wrap = FILE_ENDPOINTS[endpoint]
    replies = {}
    for label, path in (("existing", secret), ("missing", missing)):
        raw = {"path": str(path), "meta": {"_type": "gradio.FileData"}, "orig_name": path.name}
        data = {"prompt": "1girl", "width": 128, "height": 128, "prior_steps": 1, "decoder_steps": 1, "seed": 1}
        payload = {name: wrap(raw)} if endpoint == "/png_info" else {**data, name: wrap(raw)}
        replies[label] = call_raw(app.url, endpoint, payload)
    refused = {label: reply.replace(str(secret), "PATH").replace(str(missing), "PATH")
               for label, reply in replies.items()}
    assert "not uploaded by a user" in refused["existing"], refused
    assert refused["existing"] == refused["missing"]
    assert "200" not in refused["existing"] and "server-secret" not in refused["existing"]


def call_raw(url: str, endpoint: str, values: dict) -> str:
    """POST ``values`` (by parameter name) to ``endpoint`` as a raw HTTP client would; return the event stream's error text."""
    import json as jsonlib

    from gradio_client import Client

    info = Client(url, verbose=False).view_api(return_format="dict", print_info=False)
    params = info["named_endpoints"][endpoint]["parameters"]
    data = [values.get(p["parameter_name"], p.get("parameter_default")) for p in params]
    posted = httpx.post(f"{url}gradio_api/call{endpoint}", json={"data": data}, timeout=30)
    event_id = posted.json()["event_id"]
    with httpx.stream("GET", f"{url}gradio_api/call{endpoint}/{event_id}", timeout=60) as stream:
        text = "".join(stream.iter_text())
    lines = [line for line in text.splitlines() if line.startswith("data:")]
    return jsonlib.dumps([line[5:].strip() for line in lines])
