"""The page's side of image to image, the hi-res fix and the samplers, without a browser: the final size line,
the start image's preview and note, refused uploads, settings that never carry a file, and the grid's axes."""

from __future__ import annotations

import pytest
from PIL import Image

from sote_ui.core.errors import InputError
from sote_ui.core.request import DEFAULT_LIMITS, GenerationRequest, Limits, build_request
from sote_ui.service.compare import AXIS_LABELS, GRID_KEYS, parse_values
from sote_ui.ui.form import settings_for_form
from sote_ui.ui.generate.img2img_box import check_start_upload, final_size_text, fit_preview, scale_of, start_note
from sote_ui.ui.generate.persist import restorable


def test_the_final_size_line_is_the_snapped_hi_res_size_and_warns_past_the_limit():
    assert final_size_text(1024, 1536, 1.0, DEFAULT_LIMITS) == "Final size: **1024x1536**"
    assert final_size_text(1024, 1536, 1.5, DEFAULT_LIMITS) == \
        "Final size: **1536x2304** (hi-res fix: first pass 1024x1536, upscaled x1.5)"
    # 1024 x 1.3 = 1331.2 and 768 x 1.3 = 998.4: each side snaps to the nearest multiple of 128.
    assert final_size_text(1024, 768, 1.3, DEFAULT_LIMITS).startswith("Final size: **1280x1024**")
    small = Limits(max_pixels=1024 * 1024)
    assert "⚠️ over the limit of 1.0 MP" in final_size_text(1024, 1024, 1.25, small)
    assert "⚠️" not in final_size_text(1024, 1024, 1.0, small)


def test_the_checkbox_and_the_factor_make_the_requests_hires_scale():
    assert scale_of(False, 1.75) == 1.0
    assert scale_of(True, 1.75) == 1.75
    assert scale_of(True, 9) == 2.0  # never past what a request accepts
    assert build_request({"prompt": "1girl", "width": 512, "height": 512, "hires_scale": scale_of(True, 9)}).hires_scale == 2.0


def test_the_preview_shows_the_start_image_as_it_meets_the_size(tmp_path):
    wide = tmp_path / "wide.png"
    image = Image.new("RGB", (400, 100), (0, 0, 255))
    image.paste((255, 0, 0), (0, 0, 100, 100))  # a red left quarter
    image.save(wide)
    crop = fit_preview(str(wide), 256, 512, "crop")
    stretch = fit_preview(str(wide), 256, 512, "stretch")
    assert crop.size == stretch.size == (80, 160)  # the size's shape, small
    # Cropping a wide image to a tall size keeps its blue centre; stretching keeps the red left edge.
    assert crop.getpixel((2, 80))[2] > 200 and crop.getpixel((2, 80))[0] < 50
    assert stretch.getpixel((2, 80))[0] > 200
    assert start_note(str(wide), 256, 512, "crop", 0.75, 40) == \
        "image to image: the 400x100 start image is cropped to fill 256x512; denoise 0.75 runs about 30 of 40 prior steps"
    assert start_note(None, 256, 512, "crop", 0.75, 40) == ""


def test_a_phone_portrait_is_described_upright(tmp_path):
    photo = tmp_path / "portrait.jpg"
    exif = Image.Exif()
    exif[274] = 6  # stored sideways, shown turned a quarter
    Image.new("RGB", (300, 200), (10, 200, 10)).save(photo, exif=exif)
    assert "the 200x300 start image" in start_note(str(photo), 256, 256, "fit", 0.5, 10)
    assert fit_preview(str(photo), 256, 256, "fit").size == (160, 160)


def test_a_refused_start_image_leaves_the_upload_cache_and_a_good_one_stays(tmp_path):
    tiny, text, good = tmp_path / "tiny.png", tmp_path / "notes.png", tmp_path / "good.png"
    Image.new("RGB", (1, 1)).save(tiny)
    text.write_text("not an image")
    Image.new("RGB", (64, 48)).save(good)
    with pytest.raises(InputError, match="1x1"):
        check_start_upload(str(tiny))
    with pytest.raises(InputError, match="not an image"):
        check_start_upload(str(text))
    assert not tiny.exists() and not text.exists()
    assert check_start_upload(str(good)) == (64, 48) and good.exists()


def test_settings_never_put_a_file_in_the_start_image_panel(tmp_path):
    secret = tmp_path / "server-secret.png"
    Image.new("RGB", (64, 64)).save(secret)
    # A stored form is the visitor's own to edit: a path there must not become the panel's image.
    kept = restorable({"init_image": str(secret), "denoise": 0.4, "prior_sampler": "euler_a"}, DEFAULT_LIMITS)
    assert kept == {"denoise": 0.4, "prior_sampler": "euler_a"}
    # Nor does a preset, a PNG or Reuse settings: the panel keeps the image it has.
    values, _ = settings_for_form({"init_image": str(secret), "hires_scale": 1.5, "decoder_shift": 2.0})
    assert values == {"hires_scale": 1.5, "decoder_shift": 2.0}


def test_the_grid_offers_denoise_hi_res_samplers_and_shifts(tmp_path):
    assert {"denoise", "hires_scale", "hires_denoise", "prior_sampler", "decoder_sampler", "prior_shift",
            "decoder_shift"} <= set(GRID_KEYS)
    assert AXIS_LABELS["hires_scale"] == "Hi-res upscale"
    base = GenerationRequest(prompt="1girl", width=512, height=512)
    assert parse_values("decoder_sampler", "ddpm, Euler_A, lcm", base=base) == ["ddpm", "euler_a", "lcm"]
    assert parse_values("hires_scale", "1, 1.5, 2", base=base) == [1.0, 1.5, 2.0]
    with pytest.raises(InputError, match="unknown prior_sampler 'lcm'"):
        parse_values("prior_sampler", "ddpm, lcm", base=base)
    with pytest.raises(InputError, match="hires_scale must be 1"):
        parse_values("hires_scale", "1.1", base=base)
    # Denoise only means something with a start image.
    with pytest.raises(InputError, match="a Denoise axis needs a start image"):
        parse_values("denoise", "0.3, 0.6", base=base)
    start = tmp_path / "start.png"
    Image.new("RGB", (64, 64)).save(start)
    with_image = build_request({"prompt": "1girl", "init_image": str(start)})
    assert parse_values("denoise", "0.3, 0.6", base=with_image) == [0.3, 0.6]
