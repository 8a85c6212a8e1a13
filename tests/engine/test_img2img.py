"""Image to image and the two-pass hi-res fix on the tiny pair (its own tiny EfficientNet encoder)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from support import SMALL, pixels

from sote_ui.core.errors import Cancelled, InputError
from sote_ui.core.metadata import parse_pairs, parse_parameters
from sote_ui.core.request import build_request, final_size

STEPS = {**SMALL, "prior_steps": 8}


@pytest.fixture
def start(tmp_path):
    path = tmp_path / "start.png"
    ramp = np.linspace(0, 255, 64 * 96, dtype=np.uint8).reshape(64, 96)
    Image.fromarray(np.stack([ramp, ramp[::-1], np.full_like(ramp, 90)], axis=-1)).save(path)
    return str(path)


@pytest.fixture
def other(tmp_path):
    path = tmp_path / "other.png"
    Image.new("RGB", (80, 80), (10, 200, 30)).save(path)
    return str(path)


def test_same_seed_image_and_denoise_give_the_same_pixels_and_denoise_sets_the_steps(engine, start, other):
    request = build_request({**STEPS, "init_image": start, "denoise": 0.5})
    first = engine.generate(request)
    c = first.counters
    assert (c.prior_steps, c.decoder_steps, c.start_encodes, c.prior_runs) == (4, 2, 1, 1)  # round(8 * 0.5)
    engine.clear_caches()
    again = engine.generate(request)
    assert np.array_equal(pixels(first), pixels(again))
    changed = engine.generate(build_request({**STEPS, "init_image": other, "denoise": 0.5}))
    assert not np.array_equal(pixels(first), pixels(changed))
    text = engine.generate(build_request(STEPS))
    assert not np.array_equal(pixels(first), pixels(text))
    assert engine.generate(build_request({**STEPS, "init_image": start, "denoise": 0.25})).counters.prior_steps == 2


def test_denoise_zero_runs_no_prior_step_and_one_ignores_the_image(engine, start):
    kept = engine.generate(build_request({**STEPS, "init_image": start, "denoise": 0}))
    assert (kept.counters.prior_steps, kept.counters.decoder_steps) == (0, 2)
    # The prior's output is the start image's latent itself.
    job = kept.images[0].request
    assert np.array_equal(engine.cached_priors()[-1].latents.numpy(), engine.start_latents(job).numpy())
    ignored = engine.generate(build_request({**STEPS, "init_image": start, "denoise": 1}))
    assert ignored.counters.start_encodes == 0 and ignored.counters.prior_steps == 8
    engine.clear_caches()
    assert np.array_equal(pixels(ignored), pixels(engine.generate(build_request(STEPS))))


def test_the_prior_cache_knows_the_image_content_denoise_and_resize_mode(engine, start, tmp_path):
    values = {**STEPS, "init_image": start, "denoise": 0.5}
    engine.generate(build_request(values))
    reused = engine.generate(build_request(values)).counters
    assert (reused.prior_cache_hits, reused.prior_steps, reused.start_encodes) == (1, 0, 0)
    for change in ({"denoise": 0.75}, {"resize_mode": "stretch"}, {"prior_sampler": "euler_a"}, {"prior_shift": 2}):
        c = engine.generate(build_request({**values, **change})).counters
        assert c.prior_cache_hits == 0 and c.prior_steps > 0, change
    Image.new("RGB", (64, 64), (250, 250, 250)).save(start)  # same name, new content
    c = engine.generate(build_request(values)).counters
    assert (c.prior_cache_hits, c.start_encodes, c.prior_steps) == (0, 1, 4)


def test_the_start_image_is_in_the_metadata_and_reads_back(engine, start):
    request = build_request({**STEPS, "init_image": start, "denoise": 0.6, "resize_mode": "fit"})
    image = engine.generate(request).images[0]
    pairs = parse_pairs(image.parameters.splitlines()[-1])
    assert pairs["Init image"].startswith("start.png sha256:") and len(pairs["Init image"].split(":")[1]) == 16
    assert (pairs["Denoising strength"], pairs["Resize mode"]) == ("0.6", "fit")
    values = parse_parameters(image.parameters)
    assert (values["denoise"], values["resize_mode"]) == (0.6, "fit") and "not_applied" not in values


def test_a_start_image_gone_before_the_run_is_one_line(engine, start):
    request = build_request({**STEPS, "init_image": start, "denoise": 0.5})
    Image.open(start).close()
    import os

    os.remove(start)
    with pytest.raises(InputError) as info:
        engine.generate(request)
    assert "start.png" in str(info.value) and "\n" not in str(info.value) and "/" not in str(info.value)


# The hi-res fix --------------------------------------------------------------------------------------

HIRES = {**SMALL, "width": 256, "height": 384, "prior_steps": 4, "hires_scale": 1.5, "hires_denoise": 0.5,
         "hires_steps": 6}


def test_hires_makes_the_snapped_final_size_in_two_passes(engine):
    request = build_request(HIRES)
    assert final_size(request) == (384, 640)  # 256 x 1.5 = 384; 384 x 1.5 = 576 -> 640
    progress = []
    result = engine.generate(request, on_progress=progress.append)
    c = result.counters
    assert result.images[0].image.size == (384, 640)
    # Pass one: 4 prior and 2 decoder steps; pass two: round(6 * 0.5) = 3 prior and 2 decoder steps.
    assert (c.prior_steps, c.decoder_steps, c.prior_runs, c.decoder_runs, c.start_encodes) == (7, 4, 2, 2, 1)
    assert progress[-1].done == progress[-1].total == 11
    assert [p.stage for p in progress] == ["prior"] * 4 + ["decoder"] * 2 + ["prior"] * 3 + ["decoder"] * 2
    pairs = parse_pairs(result.images[0].parameters.splitlines()[-1])
    assert (pairs["Size"], pairs["Hires upscale"], pairs["Hires steps"], pairs["Denoising strength"]) == \
        ("256x384", "1.5", "6", "0.5")
    values = parse_parameters(result.images[0].parameters)
    assert build_request({k: v for k, v in values.items() if k in request.to_dict()}, base=request) == request
    # Deterministic, and the second prior is cached: only its decoder runs again.
    again = engine.generate(request)
    assert np.array_equal(pixels(result), pixels(again))
    assert (again.counters.prior_steps, again.counters.decoder_steps, again.counters.start_encodes) == (0, 2, 0)
    engine.clear_caches()
    assert np.array_equal(pixels(result), pixels(engine.generate(request)))


def test_hires_differs_from_its_first_pass_and_follows_its_settings(engine):
    hires = pixels(engine.generate(build_request(HIRES)))
    first = engine.generate(build_request({**HIRES, "hires_scale": 1.0}))
    assert first.images[0].image.size == (256, 384)
    stronger = pixels(engine.generate(build_request({**HIRES, "hires_denoise": 0.9})))
    assert not np.array_equal(hires, stronger)


def test_stop_during_the_second_pass_keeps_the_first_pass_image(engine):
    request = build_request(HIRES)
    seen, handed = [], []
    with pytest.raises(Cancelled) as info:
        engine.generate_many([request], on_progress=seen.append, on_image=handed.append,
                             should_stop=lambda: bool(seen) and seen[-1].done >= 7)  # 1 step into pass two
    kept = info.value.images
    assert len(kept) == 1 and kept[0].image.size == (256, 384) and handed == kept
    assert "Hires upscale" not in kept[0].parameters  # its parameters make this image again
    plain = engine.generate(build_request({**HIRES, "hires_scale": 1.0}))
    assert np.array_equal(pixels(kept[0].image), pixels(plain))


def test_stop_and_finish_in_the_second_pass_decodes_what_it_reached(engine):
    request = build_request(HIRES)
    seen = []
    with pytest.raises(Cancelled) as info:
        engine.generate_many([request], on_progress=seen.append,
                             should_finish=lambda: bool(seen) and seen[-1].done >= 7)
    images = info.value.images
    assert len(images) == 1 and images[0].image.size == (384, 640)
    assert "Prior stopped at: 1/3" in images[0].parameters


def test_hires_with_a_start_image(engine, start):
    request = build_request({**HIRES, "init_image": start, "denoise": 0.5})
    result = engine.generate(request)
    c = result.counters
    assert (c.prior_steps, c.start_encodes) == (2 + 3, 2)  # round(4 * 0.5) then round(6 * 0.5)
    pairs = parse_pairs(result.images[0].parameters.splitlines()[-1])
    assert (pairs["Denoising strength"], pairs["Hires denoising strength"]) == ("0.5", "0.5")


def test_skip_in_the_first_pass_takes_both_passes_off_the_budget(engine):
    request = build_request({**HIRES, "count": 2, "seed": 40})
    seen, pressed = [], []

    def skip():
        if seen and seen[-1].image == 0 and seen[-1].step == 2 and seen[-1].stage == "prior" and not pressed:
            pressed.append(True)
            return True
        return False

    result = engine.generate_many([request], on_progress=seen.append, should_skip=skip)
    assert [image.request.seed for image in result.images] == [41]
    # Image 1 ran 2 of its first pass's 4 prior steps; image 2 ran both passes (4 + 2 + 3 + 2).
    assert seen[-1].done == seen[-1].total == 2 + 11
