"""Fixtures for the whole suite, and markers by folder.

Folders: ``core`` (pure, no torch), ``engine`` (the tiny random-weight pair through diffusers), ``app``
(Studio, CLI, the app served in-process), ``browser`` (Chromium), ``launcher`` (installs packages).
Each test gets its folder's marker, so ``-m core`` runs the quick ones alone.

The tiny pair is built once per run. The shared engine is loaded once and its caches are emptied
before each test; a served app has a studio (and an engine) of its own per module, its caches
emptied before each test too, so no test depends on what another one cached.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

import pytest
from support import SMALL, make_studio, serve_app

# Tests never reach the Hub; the real loading code runs on the tiny pair.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
# fp8 loads write their weight cache here, not in the user's cache folder.
os.environ["SOTE_CACHE"] = tempfile.mkdtemp(prefix="sote-test-cache-")
atexit.register(shutil.rmtree, os.environ["SOTE_CACHE"], True)

TESTS = Path(__file__).resolve().parent
FOLDER_MARKERS = {"core": "core", "engine": "engine", "app": "app", "browser": "browser", "launcher": "launcher"}


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects by marker
def pytest_collection_modifyitems(config, items):
    for item in items:
        try:
            folder = Path(str(item.path)).resolve().relative_to(TESTS).parts[0]
        except ValueError:
            continue
        if folder in FOLDER_MARKERS:
            item.add_marker(FOLDER_MARKERS[folder])


# 1. The tiny pair and an engine on it ------------------------------------------------------------


@pytest.fixture(scope="session")
def tiny_pair(tmp_path_factory):
    """(prior_dir, decoder_dir) of a tiny pair in the published repos' layout."""
    from sote_ui.engine.builders import build_tiny_pair

    return build_tiny_pair(tmp_path_factory.mktemp("tiny-model"))


@pytest.fixture(scope="session")
def tiny_effnet(tmp_path_factory):
    """The path of a tiny random EfficientNet encoder file in Stability's key layout."""
    from sote_ui.engine.builders import build_tiny_effnet

    return build_tiny_effnet(tmp_path_factory.mktemp("tiny-effnet"))


@pytest.fixture(scope="session")
def tiny_source(tiny_pair):
    from sote_ui.engine.models import ModelSource

    prior, decoder = tiny_pair
    return ModelSource(str(prior), str(decoder), name="tiny")


@pytest.fixture(scope="session")
def loaded_engine(tiny_source):
    """One engine on the CPU in fp32, loaded once for the run."""
    from sote_ui.engine import Engine

    eng = Engine(tiny_source, mode="fp32", device="cpu")
    eng.load()
    return eng


@pytest.fixture
def engine(loaded_engine):
    """The loaded engine with its caches emptied (prompts, priors, reference images): every count
    and every reuse a test sees comes from the test itself."""
    loaded_engine.clear_caches()
    return loaded_engine


@pytest.fixture
def small():
    """Request values that keep the tiny model fast (a copy of ``support.SMALL``)."""
    return dict(SMALL)


# 2. Files ------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def refs(tmp_path_factory):
    """Reference images for image remix: red and blue (320x200), a copy of red under another name,
    and a text file named like a PNG."""
    from PIL import Image

    folder = tmp_path_factory.mktemp("refs")
    paths = {}
    for name, colour in (("red", (230, 20, 20)), ("blue", (20, 40, 230))):
        image = Image.new("RGB", (320, 200), colour)
        image.paste((250, 250, 250), (40, 40, 120, 160))
        paths[name] = folder / f"{name}.png"
        image.save(paths[name])
    paths["red-copy"] = folder / "same-pixels-other-name.png"
    shutil.copyfile(paths["red"], paths["red-copy"])
    paths["text"] = folder / "notes.png"
    paths["text"].write_text("not an image")
    return paths


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


# 3. The app served in-process (app/ and browser/) -----------------------------------------------


@pytest.fixture(scope="module")
def studio_home(tmp_path_factory):
    """A user folder of the module's own (SOTE_STUDIO_HOME: wildcards, presets, the prompt history)."""
    folder = tmp_path_factory.mktemp("studio-home")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SOTE_STUDIO_HOME", str(folder))
        yield folder


@pytest.fixture(scope="module")
def served_studio(tiny_pair, studio_home):
    """The studio the module's server serves: its own engine on the tiny pair (CPU, fp32), outputs and
    presets in the module's user folder. A module that needs another one defines this fixture."""
    return make_studio(tiny_pair, studio_home)


@pytest.fixture(scope="module")
def live_app(served_studio):
    """``served_studio`` served in-process for the whole module (``support.serve_app``)."""
    with serve_app(served_studio) as served:
        yield served


@pytest.fixture
def app(live_app):
    """The module's live app with its engine's caches emptied: what a test counts or reuses is its own."""
    live_app.studio.engine.clear_caches()
    return live_app


@pytest.fixture
def client(app):
    """The module's gradio_client session on the live app."""
    return app.client
