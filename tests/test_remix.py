"""Image remix on the tiny pair: reference images steer the prior through CLIP image embeddings."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sote_ui.core.errors import InputError, ModelError
from sote_ui.core.metadata import parse_parameters, read_parameters
from sote_ui.core.request import MAX_REFERENCES, build_request
from sote_ui.engine import Engine
from sote_ui.engine.models import ModelSource
from sote_ui.engine.references import FALLBACK_ENCODER

ROOT = Path(__file__).resolve().parent.parent
SMALL = {"prompt": "1girl, solo", "width": 256, "height": 256, "prior_steps": 3, "decoder_steps": 2, "seed": 5}


@pytest.fixture(scope="module")
def remix_pair(tmp_path_factory):
    """A tiny pair whose prior folder has a tiny CLIP image encoder and feature extractor."""
    from sote_ui.engine.builders import build_tiny_pair

    return build_tiny_pair(tmp_path_factory.mktemp("tiny-remix"), image_encoder=True)


@pytest.fixture(scope="module")
def remix_engine(remix_pair):
    prior, decoder = remix_pair
    return Engine(ModelSource(str(prior), str(decoder)), mode="fp32", device="cpu")


@pytest.fixture(scope="module")
def refs(tmp_path_factory):
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


def _run(engine, **values):
    return engine.generate(build_request({**SMALL, **values}))


def _pixels(result) -> np.ndarray:
    return np.asarray(result.images[0].image)


def test_strength_zero_is_exactly_no_reference(remix_engine, refs):
    plain = _pixels(_run(remix_engine))
    zero = _pixels(_run(remix_engine, images=[str(refs["red"]), str(refs["blue"])], image_strengths=0))
    assert np.array_equal(plain, zero)


def test_a_reference_changes_the_image_and_is_deterministic(remix_engine, refs):
    plain = _pixels(_run(remix_engine))
    remix_engine.clear_caches()
    red = _run(remix_engine, images=[str(refs["red"])])
    remix_engine.clear_caches()
    again = _run(remix_engine, images=[str(refs["red"])])
    assert not np.array_equal(plain, _pixels(red))
    assert np.array_equal(_pixels(red), _pixels(again))
    blue = _run(remix_engine, images=[str(refs["blue"])])
    assert not np.array_equal(_pixels(red), _pixels(blue))
    half = _run(remix_engine, images=[str(refs["red"])], image_strengths=0.5)
    assert not np.array_equal(_pixels(red), _pixels(half))
    both = _run(remix_engine, images=[str(refs["red"]), str(refs["blue"])], image_strengths=[1.0, 0.5])
    assert not np.array_equal(_pixels(red), _pixels(both))


def test_embeddings_are_cached_by_content(remix_pair, refs):
    prior, decoder = remix_pair
    engine = Engine(ModelSource(str(prior), str(decoder)), mode="fp32", device="cpu")
    first = _run(engine, images=[str(refs["red"])])
    assert first.counters.image_encodes == 1 and first.counters.prior_runs == 1
    # The same pixels under another name: no new encoding, and the prior is reused.
    copy = _run(engine, images=[str(refs["red-copy"])])
    assert (copy.counters.image_encodes, copy.counters.prior_runs, copy.counters.prior_cache_hits) == (0, 0, 1)
    assert np.array_equal(_pixels(first), _pixels(copy))
    # A new strength reruns the prior with the cached embedding.
    stronger = _run(engine, images=[str(refs["red"])], image_strengths=1.5)
    assert (stronger.counters.image_encodes, stronger.counters.prior_runs) == (0, 1)
    other = _run(engine, images=[str(refs["red"]), str(refs["blue"])])
    assert other.counters.image_encodes == 1


def test_references_are_recorded_in_the_png_by_name_hash_and_strength(remix_engine, refs):
    from sote_ui.engine.references import content_hash

    result = _run(remix_engine, images=[str(refs["red"]), str(refs["blue"])], image_strengths=[1.0, 0.25])
    values = parse_parameters(result.images[0].parameters)
    assert values["references"] == [
        {"name": "red.png", "sha256": content_hash(refs["red"])[:16], "strength": 1.0},
        {"name": "blue.png", "sha256": content_hash(refs["blue"])[:16], "strength": 0.25},
    ]


@pytest.mark.parametrize("values, message", [
    ({"images": ["/nowhere/ref.png"]}, "reference image 'ref.png' does not exist"),
    ({"images": ["RED"], "image_strengths": 2.5}, "image strength must be between 0 and 2"),
    ({"images": ["RED"], "image_strengths": "nan"}, "image_strengths must be a finite number"),
    ({"images": ["RED", "RED"], "image_strengths": [1, 1, 1]}, "3 image strengths for 2 reference images"),
    ({"images": ["RED"] * (MAX_REFERENCES + 1)}, f"at most {MAX_REFERENCES}"),
    ({"images": [""]}, "must be a file path"),
])
def test_bad_references_are_refused_with_a_message(refs, values, message):
    values = {k: [str(refs["red"]) if v == "RED" else v for v in val] if k == "images" else val
              for k, val in values.items()}
    with pytest.raises(InputError, match=message):
        build_request({**SMALL, **values})


def test_a_file_that_is_not_an_image_is_refused_before_any_work(remix_engine, refs):
    before = remix_engine.counters.snapshot()
    with pytest.raises(InputError, match="reference image 'notes.png': the file is not an image"):
        _run(remix_engine, images=[str(refs["text"])], seed=77)
    ran = remix_engine.counters.since(before)
    assert (ran.prior_steps, ran.decoder_steps) == (0, 0)


def test_a_huge_reference_is_shrunk_for_the_encoder(remix_engine, tmp_path):
    big = tmp_path / "big.png"
    Image.new("RGB", (5000, 3000), (10, 200, 10)).save(big)
    seen = []
    encoder = remix_engine.load_image_encoder()
    original = encoder.processor.__class__.__call__

    def spy(self, images=None, **kwargs):
        seen.append(images.size)
        return original(self, images=images, **kwargs)

    encoder.processor.__class__.__call__ = spy
    try:
        result = _run(remix_engine, images=[str(big)], seed=78)
    finally:
        encoder.processor.__class__.__call__ = original
    assert result.images[0].image.size == (256, 256)
    assert seen and max(seen[0]) <= 1024


def test_a_prior_without_an_encoder_uses_the_fallback_offline(empty_hub_cache, into_hub_cache, tiny_pair,
                                                               remix_pair, refs):
    prior, decoder = tiny_pair  # no image_encoder/ in this prior folder
    engine = Engine(ModelSource(str(prior), str(decoder)), mode="fp32", device="cpu")
    with pytest.raises(ModelError, match=rf"{FALLBACK_ENCODER} \(the image encoder image remix needs\) is not in the local cache"):
        _run(engine, images=[str(refs["red"])])
    assert _run(engine).images[0].image.size == (256, 256)  # text-only generation still works
    # The encoder laid out in the cache as huggingface_hub downloads it: one folder, model + processor.
    source = remix_pair[0]
    snapshot_files = empty_hub_cache.parent / "clip-snapshot"
    snapshot_files.mkdir()
    for sub in ("image_encoder", "feature_extractor"):
        for file in (source / sub).iterdir():
            shutil.copy(file, snapshot_files / file.name)
    into_hub_cache(empty_hub_cache, FALLBACK_ENCODER, snapshot_files, "e" * 40)
    result = _run(engine, images=[str(refs["red"])])
    assert result.counters.image_encodes == 1
    assert engine.image_encoder.source == FALLBACK_ENCODER
    assert "Reference images" in result.images[0].parameters


def test_the_cli_takes_reference_images(remix_pair, refs, tmp_path):
    prior, decoder = remix_pair
    out = tmp_path / "remix.png"
    proc = subprocess.run(
        [sys.executable, "-m", "sote_ui", "generate", "--prior", str(prior), "--decoder", str(decoder),
         "--device", "cpu", "--mode", "fp32", "--prompt", "1girl", "--width", "128", "--height", "128",
         "--prior-steps", "2", "--decoder-steps", "1", "--seed", "3", "--image", str(refs["red"]), "--image",
         str(refs["blue"]), "--image-strength", "1,0.5", "--out", str(out), "--quiet"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    values = parse_parameters(read_parameters(Image.open(out)))
    assert [(r["name"], r["strength"]) for r in values["references"]] == [("red.png", 1.0), ("blue.png", 0.5)]
    bad = subprocess.run(
        [sys.executable, "-m", "sote_ui", "generate", "--prior", str(prior), "--decoder", str(decoder),
         "--device", "cpu", "--prompt", "1girl", "--image", str(refs["red"]), "--image-strength", "3",
         "--out", str(tmp_path / "x.png")],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert bad.returncode == 2
    assert bad.stderr.strip() == "error: image strength must be between 0 and 2, got 3"


def test_presets_may_name_references_or_none(refs, tmp_path):
    from sote_ui.core.presets import PresetStore

    store = PresetStore(user_dir=tmp_path / "presets")
    store.save("with-ref", build_request({**SMALL, "images": [str(refs["red"])], "image_strengths": 0.7}))
    store.save("plain", build_request(SMALL))
    saved = json.loads((tmp_path / "presets" / "plain.json").read_text())
    assert "images" not in saved and "image_strengths" not in saved
    request = store.request("with-ref")
    assert [(r.path, r.strength) for r in request.references] == [(str(refs["red"]), 0.7)]
