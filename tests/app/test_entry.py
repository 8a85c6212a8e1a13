"""app.py, the entry point people start: ``python app.py --demo`` builds the tiny model in the user
folder, serves the page and loads the model in the background. (The page itself is driven in
tests/browser, served in-process the same way.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import httpx
import pytest
from support import ROOT, free_port

from sote_ui.service.studio import DEMO_PREFIX


def test_app_py_demo_serves_the_page_and_loads_the_tiny_model(tmp_path):
    home = tmp_path / "home"
    port = free_port()
    temp = tmp_path / "tmp"
    temp.mkdir()
    env = {**os.environ, "SOTE_STUDIO_HOME": str(home), "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1",
           "TMPDIR": str(temp)}
    log_path = tmp_path / "app.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            [sys.executable, "app.py", "--demo", "--device", "cpu", "--port", str(port), "--outputs",
             str(home / "outputs"), "--presets-dir", str(home / "presets")],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}/"
    try:
        status, deadline = "", time.monotonic() + 180
        while "ready on" not in status:  # the page answers at once; the model loads behind it
            if proc.poll() is not None:
                pytest.fail(f"app.py exited with {proc.returncode}:\n{log_path.read_text()[-3000:]}")
            if time.monotonic() > deadline:
                pytest.fail(f"app.py was not ready within 180 s ({status!r}):\n{log_path.read_text()[-3000:]}")
            try:
                reply = httpx.post(url + "gradio_api/run/status", json={"data": []}, timeout=5)
                if reply.status_code == 200:
                    status = reply.json()["data"][0]
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        page = httpx.get(url, timeout=10)
        config = httpx.get(url + "config", timeout=10)
        served_temp = [path.name for path in temp.glob("sote-studio-*")]
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=15)
    assert page.status_code == 200 and "Sote Studio" in page.text
    assert status.startswith(DEMO_PREFIX) and "ready on CPU" in status
    assert config.status_code == 200 and "Demo mode" in json.dumps(config.json())
    assert (home / "tiny-model" / "decoder" / "model_index.json").is_file()  # built once, in the user folder
    # SIGTERM (how services and containers stop a server) removes the server's temporary folder.
    assert served_temp == [f"sote-studio-{proc.pid}-{served_temp[0].rsplit('-', 1)[-1]}"]
    assert not list(temp.glob("sote-studio-*")), log_path.read_text()[-2000:]
