"""The tests in tests/core stay pure: importing them, with the conftest files and support.py they
load, brings in neither torch nor diffusers nor gradio (a check run in a fresh interpreter, since the
rest of the suite imports all of them)."""

from __future__ import annotations

import json
import subprocess
import sys

from support import ROOT

HEAVY = ("torch", "diffusers", "transformers", "gradio", "gradio_client")

CODE = """
import importlib.util, json, sys
from pathlib import Path

core, heavy = Path(sys.argv[1]), sys.argv[2].split(",")
sys.path[:0] = [str(core.parent), str(core)]
files = [core.parent / "conftest.py", *sorted(core.glob("conftest.py")), *sorted(core.glob("test_*.py"))]
found = {}
for number, path in enumerate(files):
    spec = importlib.util.spec_from_file_location(f"core_check_{number}", path)
    spec.loader.exec_module(importlib.util.module_from_spec(spec))
    loaded = [name for name in heavy if name in sys.modules and name not in found]
    for name in loaded:
        found[name] = path.name
print(json.dumps({"files": len(files), "heavy": found}))
"""


def test_the_core_tests_import_neither_torch_nor_gradio():
    done = subprocess.run([sys.executable, "-c", CODE, str(ROOT / "tests" / "core"), ",".join(HEAVY)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["files"] > 10  # the conftest files and every test module were imported
    assert report["heavy"] == {}  # which module first brought each heavy package in
