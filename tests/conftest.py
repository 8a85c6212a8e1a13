"""Shared fixtures: the tiny random-weight Stable Cascade pair, built once per run."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

import pytest

# Tests never reach the Hub; the real loading code runs on the tiny pair.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
# fp8 loads write their weight cache here, not in the user's cache folder.
os.environ["SOTE_CACHE"] = tempfile.mkdtemp(prefix="sote-test-cache-")
atexit.register(shutil.rmtree, os.environ["SOTE_CACHE"], True)


@pytest.fixture(scope="session")
def tiny_pair(tmp_path_factory):
    """(prior_dir, decoder_dir) of a tiny pair in the published repos' layout."""
    from sote_ui.engine.builders import build_tiny_pair

    return build_tiny_pair(tmp_path_factory.mktemp("tiny-model"))


@pytest.fixture(scope="session")
def tiny_source(tiny_pair):
    from sote_ui.engine.models import ModelSource

    prior, decoder = tiny_pair
    return ModelSource(str(prior), str(decoder), name="tiny")


@pytest.fixture(scope="session")
def engine(tiny_source):
    """One loaded engine on the CPU in fp32, shared by tests that only generate."""
    from sote_ui.engine import Engine

    eng = Engine(tiny_source, mode="fp32", device="cpu")
    eng.load()
    return eng


@pytest.fixture
def small():
    """Request values that keep the tiny model fast."""
    return {"prompt": "1girl, solo", "width": 256, "height": 256, "prior_steps": 3, "decoder_steps": 2,
            "seed": 1234}


@pytest.fixture
def empty_hub_cache(tmp_path, monkeypatch):
    """An empty Hugging Face cache, offline. huggingface_hub reads HF_HUB_CACHE and
    HF_HUB_OFFLINE into module constants at import, so the constants are patched."""
    from huggingface_hub import constants

    cache = tmp_path / "hf-cache"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return cache


@pytest.fixture
def into_hub_cache():
    """``put(cache, repo_id, folder, commit)``: lay ``folder`` out as huggingface_hub's cache holds a
    downloaded snapshot of ``repo_id``; returns the snapshot folder."""

    def put(cache: Path, repo_id: str, folder: Path, commit: str) -> Path:
        repo = cache / ("models--" + repo_id.replace("/", "--"))
        snapshot = repo / "snapshots" / commit
        shutil.copytree(folder, snapshot)
        (repo / "refs").mkdir(parents=True)
        (repo / "refs" / "main").write_text(commit)
        return snapshot

    return put
