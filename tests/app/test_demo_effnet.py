"""The demo model carries image to image's encoder, and an older demo model without one is rebuilt."""

from __future__ import annotations

import importlib.util

import torch
from PIL import Image
from support import ROOT

from sote_ui.engine import Engine
from sote_ui.engine.effnet import HUB_FILE, load_effnet
from sote_ui.engine.models import ModelSource


def _app():
    spec = importlib.util.spec_from_file_location("sote_app_entry", ROOT / "app.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_demo_model_has_an_encoder_the_engine_finds(tmp_path, monkeypatch):
    monkeypatch.setenv("SOTE_STUDIO_HOME", str(tmp_path))
    app = _app()
    folder = app.tiny_model_dir()
    assert (folder / HUB_FILE).is_file()
    engine = Engine(ModelSource(str(folder / "prior"), str(folder / "decoder"), name="demo"), mode="fp32",
                    device="cpu")
    image = Image.new("RGB", (256, 256), (200, 120, 40))
    latent = engine.encode_image(image, 256, 256)
    assert torch.equal(latent, load_effnet(folder / HUB_FILE).encode(image.resize((192, 192))))
    engine.unload()

    # A demo model built by an earlier version has no encoder: the next start builds it again, whole.
    (folder / HUB_FILE).unlink()
    marker = folder / "prior" / "model_index.json"
    before = marker.stat().st_mtime_ns
    assert app.tiny_model_dir() == folder
    assert (folder / HUB_FILE).is_file() and marker.stat().st_mtime_ns != before
