"""Image remix on the tiny pair: reference images steer the prior through CLIP image embeddings."""

from __future__ import annotations

import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from support import ROOT, SMALL, pixels

from sote_ui.core.errors import InputError, ModelError
from sote_ui.core.metadata import parse_parameters, read_parameters
from sote_ui.core.request import build_request
from sote_ui.engine import Engine
from sote_ui.engine.models import ModelSource
from sote_ui.engine.references import FALLBACK_ENCODER

REMIX = {**SMALL, "seed": 5}


@pytest.fixture(scope="module")
def remix_pair(tmp_path_factory):
    """A tiny pair whose prior folder has a tiny CLIP image encoder and feature extractor."""
    from sote_ui.engine.builders import build_tiny_pair

    return build_tiny_pair(tmp_path_factory.mktemp("tiny-remix"), image_encoder=True)


@pytest.fixture(scope="module")
def loaded_remix_engine(remix_pair):
    prior, decoder = remix_pair
    engine = Engine(ModelSource(str(prior), str(decoder)), mode="fp32", device="cpu")
    engine.load()
    return engine


@pytest.fixture
def remix_engine(loaded_remix_engine):
    """The module's engine on the remix pair, its caches (prompts, priors, reference embeddings) emptied."""
    loaded_remix_engine.clear_caches()
    return loaded_remix_engine


def _run(engine, **values):
    return engine.generate(build_request({**REMIX, **values}))


def test_strength_zero_is_exactly_no_reference(remix_engine, refs):
    plain = pixels(_run(remix_engine))
    zero = pixels(_run(remix_engine, images=[str(refs["red"]), str(refs["blue"])], image_strengths=0))
    assert np.array_equal(plain, zero)


def test_a_reference_changes_the_image_and_is_deterministic(remix_engine, refs):
    plain = pixels(_run(remix_engine))
    remix_engine.clear_caches()
    red = _run(remix_engine, images=[str(refs["red"])])
    remix_engine.clear_caches()
    again = _run(remix_engine, images=[str(refs["red"])])
    assert not np.array_equal(plain, pixels(red))
    assert np.array_equal(pixels(red), pixels(again))
    blue = _run(remix_engine, images=[str(refs["blue"])])
    assert not np.array_equal(pixels(red), pixels(blue))
    half = _run(remix_engine, images=[str(refs["red"])], image_strengths=0.5)
    assert not np.array_equal(pixels(red), pixels(half))
    both = _run(remix_engine, images=[str(refs["red"]), str(refs["blue"])], image_strengths=[1.0, 0.5])
    assert not np.array_equal(pixels(red), pixels(both))


def test_embeddings_are_cached_by_content(remix_pair, refs):
    prior, decoder = remix_pair
    engine = Engine(ModelSource(str(prior), str(decoder)), mode="fp32", device="cpu")
    first = _run(engine, images=[str(refs["red"])])
    assert first.counters.image_encodes == 1 and first.counters.prior_runs == 1
    # The same pixels under another name: no new encoding, and the prior is reused.
    copy = _run(engine, images=[str(refs["red-copy"])])
    assert (copy.counters.image_encodes, copy.counters.prior_runs, copy.counters.prior_cache_hits) == (0, 0, 1)
    assert np.array_equal(pixels(first), pixels(copy))
    # A new strength reruns the prior with the cached embedding.
    stronger = _run(engine, images=[str(refs["red"])], image_strengths=1.5)
    assert (stronger.counters.image_encodes, stronger.counters.prior_runs) == (0, 1)
    other = _run(engine, images=[str(refs["red"]), str(refs["blue"])])
    assert other.counters.image_encodes == 1


def test_references_are_recorded_in_the_png_by_name_hash_and_strength(remix_engine, refs):
    from sote_ui.core.files import file_sha256 as content_hash

    result = _run(remix_engine, images=[str(refs["red"]), str(refs["blue"])], image_strengths=[1.0, 0.25])
    values = parse_parameters(result.images[0].parameters)
    assert values["references"] == [
        {"name": "red.png", "sha256": content_hash(refs["red"])[:16], "strength": 1.0},
        {"name": "blue.png", "sha256": content_hash(refs["blue"])[:16], "strength": 0.25},
    ]


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


def _sideways_photo(folder):
    """A JPEG stored sideways (64x32: red left, blue right) whose EXIF tag says to turn it 90 degrees clockwise."""
    image = Image.new("RGB", (64, 32), (220, 30, 30))
    image.paste((30, 30, 220), (32, 0, 64, 32))
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 CW to display
    path = folder / "phone.jpg"
    image.save(path, quality=95, exif=exif)
    return path


def _cutout(folder):
    """An RGBA PNG: a transparent left half (its hidden colour black) and an opaque blue right half."""
    image = Image.new("RGBA", (64, 64), (0, 0, 0, 0))
    image.paste((30, 30, 220, 255), (32, 0, 64, 64))
    path = folder / "cutout.png"
    image.save(path)
    return path


def test_references_are_turned_upright_by_their_exif_tag(tmp_path):
    from sote_ui.engine.references import load_reference

    upright = load_reference(_sideways_photo(tmp_path))
    assert upright.size == (32, 64) and upright.mode == "RGB"
    top, bottom = upright.getpixel((16, 8)), upright.getpixel((16, 56))
    assert top[0] > 180 and top[2] < 80  # the red half is on top once turned
    assert bottom[2] > 180 and bottom[0] < 80


def test_transparent_references_are_flattened_on_white(tmp_path):
    from sote_ui.engine.references import load_reference

    flat = load_reference(_cutout(tmp_path))
    assert flat.mode == "RGB"
    assert flat.getpixel((8, 32)) == (255, 255, 255)
    assert flat.getpixel((56, 32)) == (30, 30, 220)


def test_the_encoder_sees_the_upright_flattened_picture(remix_engine, tmp_path):
    photo, cutout = _sideways_photo(tmp_path), _cutout(tmp_path)
    # The pictures as the encoder should see them, made by hand: turned clockwise, and on white.
    upright = tmp_path / "upright.png"
    Image.open(photo).convert("RGB").transpose(Image.Transpose.ROTATE_270).save(upright)
    on_white = tmp_path / "on-white.png"
    Image.alpha_composite(Image.new("RGBA", (64, 64), "white"), Image.open(cutout)).convert("RGB").save(on_white)
    # What a reader that ignores both gives: the stored pixels, transparency on black.
    sideways = tmp_path / "sideways.png"
    Image.open(photo).convert("RGB").save(sideways)
    on_black = tmp_path / "on-black.png"
    Image.open(cutout).convert("RGB").save(on_black)

    def image(path):
        remix_engine.clear_caches()
        return pixels(_run(remix_engine, images=[str(path)], seed=90))

    assert np.array_equal(image(photo), image(upright))
    assert not np.array_equal(image(upright), image(sideways))
    assert np.array_equal(image(cutout), image(on_white))
    assert not np.array_equal(image(on_white), image(on_black))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_the_encoder_leaves_the_gpu_after_encoding(remix_pair, refs):
    prior, decoder = remix_pair
    engine = Engine(ModelSource(str(prior), str(decoder)), mode="bf16")
    result = _run(engine, images=[str(refs["red"])])
    assert result.counters.image_encodes == 1
    assert {p.device.type for p in engine.image_encoder.model.parameters()} == {"cpu"}
    assert engine.prior_pipe.prior.device.type == "cuda"  # the pipelines stay where bf16 puts them


def _conditioning_seen(engine, **values):
    """The conditioning tokens (text, pooled text, image) the prior's first attention block reads at the
    first step, for the conditional half of the batch."""
    from diffusers.models.unets.unet_stable_cascade import SDCascadeAttnBlock

    block = next(m for m in engine.prior_pipe.prior.modules() if isinstance(m, SDCascadeAttnBlock))
    seen = []
    handle = block.register_forward_pre_hook(lambda module, args: seen.append(args[1][0].detach().clone()))
    try:
        engine.clear_caches()
        _run(engine, **values)
    finally:
        handle.remove()
    return seen[0]


def test_strength_moves_the_image_tokens_in_proportion(remix_engine, refs):
    seq = remix_engine.prior_pipe.prior.config.clip_seq
    tokens = {s: _conditioning_seen(remix_engine, images=[str(refs["red"])], image_strengths=s, seed=91)
              for s in (0.0, 0.5, 1.0, 2.0)}
    # Strength 0 is the image left out: the prior then reads one zero embedding's tokens.
    assert all(t.shape == tokens[0.0].shape for t in tokens.values())
    assert all(torch.equal(t[:-seq], tokens[0.0][:-seq]) for t in tokens.values())  # the text is untouched
    moved = {s: (t - tokens[0.0]).norm().item() for s, t in tokens.items()}
    assert moved[1.0] > 0.5
    assert moved[0.5] / moved[1.0] == pytest.approx(0.5, abs=0.02)
    assert moved[2.0] / moved[1.0] == pytest.approx(2.0, abs=0.04)


def test_strength_one_is_the_priors_own_input(remix_engine, refs):
    """At strength 1 the prior runs exactly as diffusers' pipeline runs it with the image's embedding."""
    request = build_request({**REMIX, "images": [str(refs["red"])], "seed": 92, "prior_cfg": 4.0})
    remix_engine.generate(request)
    ours = remix_engine.cached_priors()[-1].latents
    pipe = remix_engine.prior_pipe
    embeds = remix_engine.encode(request).conditioning(guided=True)
    image = remix_engine.load_image_encoder().embed(Image.open(refs["red"]))
    theirs = pipe(**embeds, image_embeds=image, width=256, height=256, num_inference_steps=request.prior_steps,
                  guidance_scale=4.0, generator=torch.Generator("cpu").manual_seed(92),
                  output_type="pt").image_embeddings
    assert torch.equal(ours, theirs)


def test_the_unguided_half_sees_one_zero_image_embedding(remix_engine):
    """Two references under guidance: the unconditional half attends as if given one zero embedding (as
    Stable Cascade was trained), not diffusers' two."""
    from sote_ui.engine.references import reference_strengths

    prior = remix_engine.prior_pipe.prior
    width = prior.config.clip_image_in_channels
    torch.manual_seed(3)
    sample = torch.randn(1, 16, 6, 6).repeat(2, 1, 1, 1)
    text, pooled = torch.randn(1, 77, prior.config.clip_text_in_channels), torch.randn(1, 1, width)
    images = torch.cat([torch.randn(1, 2, width), torch.zeros(1, 2, width)])  # conditional, unconditional
    inputs = dict(sample=sample, timestep_ratio=torch.full((2,), 0.7), clip_text_pooled=pooled.repeat(2, 1, 1),
                  clip_text=text.repeat(2, 1, 1), clip_img=images)
    with torch.no_grad():
        with reference_strengths(prior, [1.0, 1.0], guided=True):
            ours = prior(**inputs).sample
        diffusers_own = prior(**inputs).sample
        one_zero = prior(sample=sample[1:], timestep_ratio=torch.full((1,), 0.7), clip_text_pooled=pooled,
                         clip_text=text, clip_img=torch.zeros(1, 1, width)).sample
        both_images = prior(**{**inputs, "sample": sample[:1], "timestep_ratio": torch.full((1,), 0.7),
                               "clip_text_pooled": pooled, "clip_text": text, "clip_img": images[:1]}).sample
    assert torch.allclose(ours[1:], one_zero, atol=1e-5, rtol=0)
    assert not torch.allclose(diffusers_own[1:], one_zero, atol=1e-3, rtol=0)
    assert torch.allclose(ours[:1], both_images, atol=1e-5, rtol=0)  # the conditional half is untouched
    with torch.no_grad():
        assert torch.equal(prior(**inputs).sample, diffusers_own)  # and put back after the block


def test_strengths_and_the_unguided_side_act_alike_under_model_offload(remix_pair, refs, loaded_remix_engine):
    """Model CPU offload wraps the prior in accelerate's hooks; the strength and the attention mask work
    through them: the same prior latent as with everything in place."""
    import dataclasses

    from sote_ui.core.memory import Mode
    from sote_ui.engine.loading import load_components

    values = dict(images=[str(refs["red"]), str(refs["blue"])], image_strengths=[1.5, 0.5], seed=93, prior_cfg=4.0)
    loaded_remix_engine.clear_caches()
    _run(loaded_remix_engine, **values)
    in_place = loaded_remix_engine.cached_priors()[-1].latents
    prior, decoder = remix_pair
    engine = Engine(ModelSource(str(prior), str(decoder)), mode="fp32", device="cpu")
    engine.load()
    plan = dataclasses.replace(engine.plan, mode=Mode.OFFLOAD_FP32)
    engine.install(load_components(engine.folders, torch.float32), plan)
    _run(engine, **values)
    assert torch.equal(engine.cached_priors()[-1].latents, in_place)
    plain = loaded_remix_engine.generate(build_request({**REMIX, "seed": 93, "prior_cfg": 4.0}))
    assert plain.counters.prior_runs == 1
    assert not torch.equal(loaded_remix_engine.cached_priors()[-1].latents, in_place)  # the references acted
