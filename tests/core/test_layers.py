"""The package's layers hold (ui and cli -> service -> engine -> core), and the check would catch a break."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from support import ROOT

LINT = Path(sys.executable).with_name("lint-imports")

pytestmark = pytest.mark.skipif(not LINT.exists(), reason="import-linter is not installed (requirements-test.txt)")


def lint(tree: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    return subprocess.run([str(LINT), "--no-cache"], cwd=tree, env=env, capture_output=True, text=True, timeout=120)


def copy_of_the_package(tmp_path: Path) -> Path:
    tree = tmp_path / "tree"
    shutil.copytree(ROOT / "sote_ui", tree / "sote_ui", ignore=shutil.ignore_patterns("__pycache__", "data"))
    shutil.copy(ROOT / ".importlinter", tree / ".importlinter")
    return tree


def test_the_layers_hold():
    result = lint(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "4 kept, 0 broken" in result.stdout


@pytest.mark.parametrize(("module", "line", "broken"), [
    ("core/tags.py", "import torch", "core imports no torch"),
    ("core/request.py", "from ..engine import models", "One direction"),
    ("engine/caches.py", "import gradio", "only the ui imports gradio"),
    ("ui/form.py", "from ..engine import facade", "the ui reaches the engine only through the service layer"),
])
def test_a_forbidden_import_breaks_a_contract(tmp_path, module, line, broken):
    tree = copy_of_the_package(tmp_path)
    target = tree / "sote_ui" / module
    target.write_text(target.read_text() + f"\n{line}  # added by the test\n")
    result = lint(tree)
    assert result.returncode != 0
    report = " ".join(result.stdout.split())
    assert f"{broken}" in report and "BROKEN" in report
