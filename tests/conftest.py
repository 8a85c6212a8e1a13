"""Shared fixtures: the tiny random-weight Stable Cascade pair, built once per run."""

from __future__ import annotations

import os

import pytest

# Tests never reach the Hub; the real loading code runs on the tiny pair.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")


@pytest.fixture(scope="session")
def tiny_pair(tmp_path_factory):
    """(prior_dir, decoder_dir) of a tiny pair in the published repos' layout."""
    from sote_ui.tiny import build_tiny_pair

    return build_tiny_pair(tmp_path_factory.mktemp("tiny-model"))


@pytest.fixture(scope="session")
def tiny_source(tiny_pair):
    from sote_ui.models import ModelSource

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
