"""The launcher's real first run, as a newcomer meets it: ./run.sh --demo in a fresh copy of the
tracked files makes its own .venv, installs PyTorch (TORCH_COMMAND, the CPU build here) and
requirements.txt, serves the demo page; a second start installs nothing.

It installs packages, so the default suite leaves it out (every test in this folder is marked
`launcher`) and CI runs it as its own step: `python -m pytest -q -m launcher tests/launcher`.
How run.sh detects the GPU and picks the build is checked against fake programs in
tests/core/test_run_script.py.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
from support import ROOT, free_port

VENV_PY = ".venv/bin/python"

pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")


def _clean_copy(dest: Path) -> None:
    """The repository's tracked files as they are now: what a fresh clone holds (no .venv, caches or
    outputs), uncommitted edits included so the launcher being changed is the one tested."""
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True)
    if listed.returncode != 0:
        pytest.skip("needs a git checkout to know the tracked files")
    for name in listed.stdout.decode().split("\0"):
        if name and (ROOT / name).is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, dest / name)


def _start_and_serve(clone: Path, env: dict[str, str], log: Path, timeout: float) -> tuple[str, str]:
    """Run ./run.sh --demo until the page is served, then stop it (its whole process group).
    Returns (the page, the launcher's output)."""
    for _attempt in range(3):
        port = free_port()
        with log.open("w") as out:
            proc = subprocess.Popen(["./run.sh", "--demo", "--port", str(port)], cwd=clone, env=env,
                                    stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and proc.poll() is None:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as response:
                        return response.read().decode(), log.read_text()
                except OSError:
                    time.sleep(1)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
        text = log.read_text()
        if "address already in use" not in text.lower() and "cannot find empty port" not in text.lower():
            break
    pytest.fail(f"the page was not served; the launcher said:\n{log.read_text()[-4000:]}")


@pytest.mark.launcher
def test_first_run_installs_and_serves_then_a_second_start_installs_nothing(tmp_path):
    clone = tmp_path / "sote-studio"
    clone.mkdir()
    _clean_copy(clone)
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH", "TORCH_COMMAND")}
    env.update(TORCH_COMMAND="pip install torch==2.13.0", SOTE_STUDIO_HOME=str(tmp_path / "home"),
               HF_HUB_OFFLINE="1", GRADIO_ANALYTICS_ENABLED="False")

    page, first = _start_and_serve(clone, env, tmp_path / "first.log", timeout=1200)
    assert "Sote Studio" in page
    assert "[3/5] Environment  creating .venv" in first
    assert f"running: {VENV_PY} -m pip install torch==2.13.0" in first
    assert f"running: {VENV_PY} -m pip install -r requirements.txt" in first
    assert "Starting: .venv/bin/python app.py --demo --port" in first
    stamp = clone / ".venv" / "sote-install.stamp"
    written = stamp.read_text(), stamp.stat().st_mtime_ns
    assert "torch_command=pip install torch==2.13.0\n" in written[0]

    page, second = _start_and_serve(clone, env, tmp_path / "second.log", timeout=300)
    assert "Sote Studio" in page
    assert "[4/5] PyTorch      up to date (python -m pip install torch==2.13.0)" in second
    assert "[5/5] Packages     up to date (requirements.txt unchanged)" in second
    assert "running:" not in second and "Collecting" not in second
    assert (stamp.read_text(), stamp.stat().st_mtime_ns) == written
