"""Real scale: the full-size architectures, the memory estimator's counts of them, and the GPU check's flow
(the estimator's figures for the full-size pair are checked in tests/core/test_memory.py).

The meta-device and smoke tests run everywhere; the ones that build and run
the ~13 GB full-size pair are marked ``slow`` and left out of the default run
(``python -m pytest -m slow`` runs them; ``SOTE_FULLSIZE=DIR`` reuses a pair
built with ``python -m sote_ui make-tiny --full DIR``).
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

import pytest
from support import ROOT

from sote_ui.core.memory import FULL_SIZE, ComponentSizes
from sote_ui.engine.builders import build_full_pair, full_models


@pytest.fixture(scope="module")
def full_counts():
    models = full_models("meta")  # no memory: shapes only
    return {name: sum(p.numel() for p in model.parameters()) for name, model in models.items()}


def test_full_architectures_have_the_published_parameter_counts(full_counts):
    expected = {"prior": 3.589e9, "decoder": 1.563e9, "text_encoder": 0.695e9, "vqgan": 0.0184e9}
    for name, count in expected.items():
        assert full_counts[name] == pytest.approx(count, rel=0.005), name


def test_the_memory_estimator_counts_the_full_size_pair_exactly(full_counts):
    assert FULL_SIZE == ComponentSizes(**full_counts)


def test_gpu_check_runs_its_whole_flow_on_the_tiny_pair(tmp_path, monkeypatch):
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        import gpu_check
    finally:
        sys.path.remove(str(ROOT / "bench"))
    monkeypatch.setenv("SOTE_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "check.json"
    code = gpu_check.main(["--tiny", "--device", "cpu", "--pair", str(tmp_path / "pair"), "--width", "256",
                           "--height", "256", "--prior-steps", "2", "--decoder-steps", "2", "--budgets", "8",
                           "--json", str(out)])
    results = json.loads(out.read_text())
    assert code == 0
    assert [row["mode"] for row in results["modes"]] == ["bf16", "fp8", "fp32"]
    assert all(row["ok"] and row["load_s"] >= 0 and row["image_s"] > 0 for row in results["modes"])
    assert results["modes"][1]["fp8_backend"] == "quanto-int8"
    (budget,) = results["budgets"]
    assert budget["budget_gb"] == 8 and budget["within_budget"] and budget["picked"] in ("fp32", "bf16", "fp8")
    free = re.search(r"\(([\d.]+) GiB RAM free\)", budget["reason"])
    assert free and float(free.group(1)) <= 8.0  # auto saw the emulated 8 GB, not the machine's memory


# --------------------------------------------------------------------------- full size (slow)


@pytest.fixture(scope="module")
def full_pair(tmp_path_factory):
    given = os.environ.get("SOTE_FULLSIZE")
    root = Path(given) if given else tmp_path_factory.mktemp("fullsize")
    if not (root / "decoder" / "vqgan" / "config.json").is_file():
        build_full_pair(root)
    return root


@pytest.mark.slow
def test_full_size_pair_has_the_real_sizes_on_disk(full_pair):
    from sote_ui.engine.loading import Folders, component_sizes

    sizes = component_sizes(Folders(full_pair / "prior", full_pair / "decoder"))
    for name in ("text_encoder", "prior", "decoder"):
        assert getattr(sizes, name) == getattr(FULL_SIZE, name), name
    assert sizes.vqgan == pytest.approx(FULL_SIZE.vqgan, abs=100)  # its files also hold a few buffer values


@pytest.mark.slow
def test_full_size_fp8_needs_no_more_host_memory_than_bf16(full_pair, tmp_path):
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        import bench_scale
    finally:
        sys.path.remove(str(ROOT / "bench"))
    out = tmp_path / "scale.json"
    assert bench_scale.main(["--pair", str(full_pair), "--runs", "bf16,fp8-first,fp8-second", "--json",
                             str(out)]) == 0
    runs = json.loads(out.read_text())["runs"]
    assert runs["fp8-first"]["peak_rss"] <= runs["bf16"]["peak_rss"]
    assert runs["fp8-second"]["peak_rss"] <= 0.7 * runs["bf16"]["peak_rss"]
