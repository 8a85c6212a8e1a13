"""Image to image, the hi-res fix, samplers and shifts: the request's fields, their checks, presets and
PNG metadata (pure logic, no torch)."""

from __future__ import annotations

import pytest
from PIL import Image
from support import SMALL

from sote_ui.core.errors import InputError
from sote_ui.core.metadata import ModelInfo, format_parameters, not_applied_note, parse_pairs, parse_parameters
from sote_ui.core.presets import PresetStore
from sote_ui.core.request import (
    DECODER_SAMPLERS,
    FIELD_NAMES,
    PRIOR_SAMPLERS,
    GenerationRequest,
    Limits,
    build_request,
    decoder_only_difference,
    final_size,
)

MODEL = ModelInfo("prior", "decoder")
NEW_FIELDS = ("init_image", "denoise", "resize_mode", "hires_scale", "hires_denoise", "hires_steps",
              "prior_sampler", "decoder_sampler", "prior_shift", "decoder_shift")


@pytest.fixture
def start(tmp_path):
    path = tmp_path / "start.png"
    Image.new("RGB", (96, 64), (200, 40, 90)).save(path)
    return str(path)


def test_the_fields_follow_prompt_padding_in_the_agreed_order():
    names = list(FIELD_NAMES)
    at = names.index("prompt_padding")
    assert tuple(names[at + 1:at + 1 + len(NEW_FIELDS)]) == NEW_FIELDS
    request = GenerationRequest()
    assert (request.init_image, request.denoise, request.resize_mode, request.hires_scale, request.hires_denoise,
            request.hires_steps, request.prior_sampler, request.decoder_sampler, request.prior_shift,
            request.decoder_shift) == (None, 0.75, "crop", 1.0, 0.5, 0, "ddpm", "ddpm", 1.0, 1.0)
    assert PRIOR_SAMPLERS == ("ddpm", "dpmpp_2m", "euler_a")
    assert DECODER_SAMPLERS == ("ddpm", "dpmpp_2m", "euler_a", "lcm")


def test_values_are_converted(start):
    request = build_request({**SMALL, "init_image": {"path": start}, "denoise": "0.4", "resize_mode": " Fit ",
                             "hires_scale": "1.5", "hires_steps": 5.0, "prior_sampler": "DPMPP_2M",
                             "decoder_sampler": "lcm", "prior_shift": "2", "decoder_shift": 1})
    assert request.init_image == start and request.denoise == 0.4 and request.resize_mode == "fit"
    assert (request.hires_scale, request.hires_steps, request.prior_sampler, request.decoder_sampler) == \
        (1.5, 5, "dpmpp_2m", "lcm")
    assert request.prior_shift == 2.0 and isinstance(request.decoder_shift, float)
    assert build_request({**SMALL, "init_image": start}, base=request).init_image == start
    assert build_request({"init_image": ""}, base=request).init_image is None  # '' clears the start image


@pytest.mark.parametrize(("values", "message"), [
    ({"denoise": 1.5}, "denoise must be between 0 and 1, got 1.5"),
    ({"denoise": -0.1}, "denoise must be between 0 and 1, got -0.1"),
    ({"hires_denoise": 2}, "hires_denoise must be between 0 and 1, got 2"),
    ({"prior_sampler": "lcm"}, "unknown prior_sampler 'lcm'; choose one of: ddpm, dpmpp_2m, euler_a"),
    ({"decoder_sampler": "heun"}, "unknown decoder_sampler 'heun'; choose one of: ddpm, dpmpp_2m, euler_a, lcm"),
    ({"prior_shift": 0.05}, "prior_shift must be between 0.1 and 10, got 0.05"),
    ({"decoder_shift": 11}, "decoder_shift must be between 0.1 and 10, got 11"),
    ({"hires_scale": 1.1}, "hires_scale must be 1 (off) or between 1.25 and 2, got 1.1"),
    ({"hires_scale": 2.5}, "hires_scale must be 1 (off) or between 1.25 and 2, got 2.5"),
    ({"hires_steps": -1}, "hires_steps must be between 0 (as many as prior_steps) and 150, got -1"),
    ({"resize_mode": "zoom"}, "resize_mode must be one of crop, fit, stretch, got 'zoom'"),
    ({"denoise": "lots"}, "denoise must be a number, got 'lots'"),
    ({"init_image": 5}, "init_image must be an image file's path"),
])
def test_bad_values_get_one_line(values, message):
    with pytest.raises(InputError) as info:
        build_request({**SMALL, **values})
    assert str(info.value) == message


def test_the_start_image_must_be_a_readable_image_of_some_size(tmp_path, start):
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    tiny = tmp_path / "dot.png"
    Image.new("RGB", (1, 1)).save(tiny)
    for path, message in ((tmp_path / "gone.png", "start image 'gone.png' does not exist"),
                          (text, "start image 'notes.png' is not an image Pillow can read (PNG, JPEG, WebP...)"),
                          (tiny, "start image 'dot.png' is 1x1; it needs at least 16 pixels on each side")):
        with pytest.raises(InputError) as info:
            build_request({**SMALL, "init_image": str(path)})
        assert str(info.value) == message
        assert str(tmp_path) not in str(info.value)  # no server path
    assert build_request({**SMALL, "init_image": start}).init_image == start


def test_final_size_snaps_the_upscaled_size_to_128():
    assert final_size(build_request(SMALL)) == (256, 256)
    assert final_size(build_request({**SMALL, "hires_scale": 1.5})) == (384, 384)
    assert final_size(build_request({**SMALL, "width": 1024, "height": 1536, "hires_scale": 1.5})) == (1536, 2304)
    # 384 x 1.3 = 499.2 -> 512, 768 x 1.3 = 998.4 -> 1024 (nearest multiple of 128); 640 x 1.3 = 832 and
    # 384 x 1.5 = 576 lie halfway: up, to 896 and 640
    assert final_size(build_request({**SMALL, "width": 384, "height": 768, "hires_scale": 1.3})) == (512, 1024)
    assert final_size(build_request({**SMALL, "width": 640, "height": 128, "hires_scale": 1.3})) == (896, 128)
    assert final_size(build_request({**SMALL, "width": 384, "height": 384, "hires_scale": 1.5})) == (640, 640)


def test_a_hires_size_beyond_the_limits_is_refused():
    with pytest.raises(InputError) as info:
        build_request({**SMALL, "width": 1024, "height": 1536, "hires_scale": 2.0})
    assert str(info.value) == ("the hi-res fix makes 1024x1536 into 2048x3072 (6.3 MP), over the limit of 4.2 MP and "
                               "4096 per side; lower hires_scale or the size")
    build_request({**SMALL, "width": 512, "height": 512, "hires_scale": 2.0},
                  limits=Limits(max_pixels=1024 * 1024))
    with pytest.raises(InputError, match="into 1024x1024"):
        build_request({**SMALL, "width": 512, "height": 512, "hires_scale": 2.0}, limits=Limits(max_side=1000))


def test_with_the_hires_fix_the_decoder_reaches_the_second_prior():
    a = build_request(SMALL)
    assert decoder_only_difference(a, build_request({**SMALL, "decoder_sampler": "lcm", "decoder_shift": 2}))
    hires = build_request({**SMALL, "hires_scale": 1.5})
    assert not decoder_only_difference(hires, build_request({**SMALL, "hires_scale": 1.5, "decoder_steps": 3}))


def test_presets_carry_the_fields(tmp_path):
    store = PresetStore(None, tmp_path)
    request = build_request({**SMALL, "denoise": 0.3, "hires_scale": 1.5, "hires_steps": 7, "prior_sampler":
                             "euler_a", "decoder_sampler": "lcm", "prior_shift": 2.0, "decoder_shift": 1.5})
    store.save("refine", request)
    back = store.request("refine")
    assert back == request


def _round_trip(request):
    text = format_parameters(request, request.seed, MODEL)
    values = parse_parameters(text)
    return build_request({k: v for k, v in values.items() if k in FIELD_NAMES}), values, text


def test_metadata_round_trip_of_samplers_shifts_and_hires():
    request = build_request({**SMALL, "hires_scale": 1.5, "hires_denoise": 0.35, "hires_steps": 6,
                             "prior_sampler": "dpmpp_2m", "decoder_sampler": "euler_a", "prior_shift": 2.0,
                             "decoder_shift": 1.25})
    back, values, text = _round_trip(request)
    assert back == request and "not_applied" not in values
    pairs = parse_pairs(text.splitlines()[-1])
    assert {k: pairs[k] for k in ("Sampler", "Schedule type", "Decoder sampler", "Prior shift", "Decoder shift",
                                  "Hires upscale", "Hires steps", "Hires upscaler", "Denoising strength", "Size")} == {
        "Sampler": "DPM++ 2M", "Schedule type": "SGM Uniform", "Decoder sampler": "Euler a", "Prior shift": "2",
        "Decoder shift": "1.25", "Hires upscale": "1.5", "Hires steps": "6", "Hires upscaler": "Lanczos",
        "Denoising strength": "0.35", "Size": "256x256"}  # A1111's Size is the first pass's


def test_metadata_of_a_start_image(start):
    request = build_request({**SMALL, "init_image": start, "denoise": 0.6, "resize_mode": "stretch",
                             "hires_scale": 1.25, "hires_denoise": 0.4, "decoder_sampler": "lcm"})
    text = format_parameters(request, 5, MODEL, extra={"Init image": "start.png sha256:abc123"})
    pairs = parse_pairs(text.splitlines()[-1])
    assert (pairs["Denoising strength"], pairs["Hires denoising strength"], pairs["Resize mode"]) == \
        ("0.6", "0.4", "stretch")
    values = parse_parameters(text)
    assert (values["denoise"], values["hires_denoise"], values["resize_mode"], values["decoder_sampler"]) == \
        (0.6, 0.4, "stretch", "lcm")
    assert values["init_image_note"] == "start.png sha256:abc123" and "init_image" not in values
    assert "not_applied" not in values


def test_defaults_write_no_new_keys():
    text = format_parameters(build_request(SMALL), 1, MODEL)
    for key in ("Denoising strength", "Hires", "shift", "Decoder sampler", "Schedule type", "Resize mode"):
        assert key not in text
    assert "Sampler: DDPMWuerstchen" in text


def test_another_tools_hires_and_sampler_settings():
    text = ("1girl\nSteps: 20, Sampler: Euler a, Schedule type: Karras, CFG scale: 7, Seed: 1, Size: 512x768, "
            "Denoising strength: 0.7, Hires upscale: 4, Hires upscaler: Latent, Sampler2: x")
    values = parse_parameters(text)
    assert values["prior_sampler"] == "euler_a" and values["hires_denoise"] == 0.7
    assert "hires_scale" not in values  # 4x is more than the fix makes: named, not applied
    assert not_applied_note(values) == ("not applied (no such setting here): Schedule type Karras, Hires upscale 4, "
                                        "Hires upscaler Latent, Sampler2 x")
    with pytest.raises(InputError, match="'Denoising strength' value '1.5' is out of range"):
        parse_parameters("1girl\nSteps: 20, Seed: 1, Denoising strength: 1.5")
