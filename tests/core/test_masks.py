"""Masks, their feather, the crop around them, the outpaint canvas, paste-back, and their PNG keys."""

from __future__ import annotations

import pytest
from PIL import Image, ImageDraw

from sote_ui.core.errors import InputError
from sote_ui.core.masks import (
    binary,
    canvas_size,
    crop_box,
    feather,
    feather_reach,
    load_mask,
    outpaint_canvas,
    parse_outpaint,
    paste_back,
    plan_inpaint,
)
from sote_ui.core.metadata import MASK_NOT_RESTORED, ModelInfo, format_parameters, parse_parameters
from sote_ui.core.request import build_request


def square_mask(size=(200, 160), box=(80, 60, 120, 100)) -> Image.Image:
    mask = Image.new("L", size, 0)
    ImageDraw.Draw(mask).rectangle(box, fill=255)
    return mask


def test_parse_outpaint_reads_sides_and_refuses_bad_ones():
    assert parse_outpaint("left:256, down:128") == {"left": 256, "down": 128}
    assert parse_outpaint("") == {} and parse_outpaint("up:0") == {}
    with pytest.raises(InputError, match="outpaint right 100 is not a multiple of 128; try 128"):
        parse_outpaint("right:100")
    with pytest.raises(InputError, match="side:pixels pairs"):
        parse_outpaint("sideways:128")
    with pytest.raises(InputError, match="names left twice"):
        parse_outpaint("left:128,left:256")


def test_outpaint_canvas_keeps_the_picture_and_masks_only_the_new_area():
    picture = Image.new("RGB", (128, 256), (10, 20, 30))
    picture.putpixel((0, 0), (200, 0, 0))
    canvas, mask = outpaint_canvas(picture, {"left": 128, "up": 128})
    assert canvas.size == canvas_size(128, 256, {"left": 128, "up": 128}) == (256, 384)
    assert canvas.crop((128, 128, 256, 384)).tobytes() == picture.tobytes()
    assert mask.getpixel((127, 200)) == 255 and mask.getpixel((128, 128)) == 0 and mask.getpixel((200, 127)) == 255
    assert canvas.getpixel((0, 0)) == (200, 0, 0)  # the corner pixel stretched into the new corner


def test_binary_reads_brightness_or_a_brush_layers_opacity():
    grey = Image.new("L", (4, 1))
    grey.putdata([0, 127, 128, 255])
    assert list(binary(grey).getdata()) == [0, 0, 255, 255]
    layer = Image.new("RGBA", (2, 1), (0, 0, 0, 0))
    layer.putpixel((1, 0), (0, 0, 0, 255))  # a black stroke on a transparent layer still marks the spot
    assert list(binary(layer).getdata()) == [0, 255]


def test_load_mask_resizes_with_a_note_and_refuses_empty_or_non_images(tmp_path):
    path = tmp_path / "m.png"
    square_mask((100, 80), (40, 30, 60, 50)).save(path)
    mask, note = load_mask(str(path), (200, 160))
    assert mask.size == (200, 160) and note == "the mask 'm.png' is 100x80; it was resized to the picture's 200x160"
    assert load_mask(str(path), (100, 80))[1] is None
    Image.new("L", (10, 10), 0).save(tmp_path / "empty.png")
    with pytest.raises(InputError, match="'empty.png' is empty: nothing to repaint"):
        load_mask(str(tmp_path / "empty.png"), None)
    (tmp_path / "text.png").write_text("hello")
    with pytest.raises(InputError, match="'text.png' is not an image Pillow can read"):
        load_mask(str(tmp_path / "text.png"), None)


def test_paste_back_keeps_every_pixel_beyond_the_feather():
    source = Image.effect_noise((200, 160), 40).convert("RGB")
    generated = Image.new("RGB", (200, 160), (255, 0, 255))
    mask = square_mask(box=(60, 40, 140, 120))
    for blur in (0, 3, 8):
        out = paste_back(plan_inpaint(source, mask, blur, "whole", 200, 160), generated)
        reach = feather_reach(blur)
        for x, y in ((60 - reach - 1, 80), (140 + reach + 1, 80), (100, 40 - reach - 1), (0, 0)):
            assert out.getpixel((x, y)) == source.getpixel((x, y))
        assert out.getpixel((100, 80)) == (255, 0, 255)
    assert feather(mask, 0) is mask


def test_crop_box_has_the_generation_aspect_and_stays_inside():
    mask = square_mask()
    left, top, right, bottom = crop_box(mask, 256, 128, padding=10)
    assert (right - left) == 2 * (bottom - top)
    assert 0 <= left <= 70 and right >= 130 and 0 <= top and bottom <= 160
    edge = square_mask(box=(0, 0, 20, 20))
    assert crop_box(edge, 128, 128, padding=8)[:2] == (0, 0)


def test_masked_area_plan_generates_the_crop_and_pastes_it_back():
    source = Image.new("RGB", (200, 160), (50, 50, 50))
    plan = plan_inpaint(source, square_mask(), 0, "masked", 128, 128)
    assert plan.generate_size == (128, 128) and plan.box is not None
    out = paste_back(plan, Image.new("RGB", (128, 128), (0, 255, 0)))
    assert out.size == (200, 160)
    assert out.getpixel((100, 80)) == (0, 255, 0) and out.getpixel((5, 5)) == (50, 50, 50)


def test_inpaint_keys_are_written_and_read_back(tmp_path):
    start, mask = tmp_path / "s.png", tmp_path / "m.png"
    Image.new("RGB", (128, 128)).save(start)
    square_mask((128, 128), (10, 10, 40, 40)).save(mask)
    request = build_request({"prompt": "1girl", "width": 128, "height": 128, "init_image": str(start),
                             "mask": str(mask), "mask_blur": 6, "inpaint_area": "masked", "outpaint": "down:128",
                             "control_strength": 0.7, "control_start": 0.1, "control_end": 0.9})
    text = format_parameters(request, 1, ModelInfo("p", "d"))
    assert "Mask blur: 6" in text and "Inpaint area: Only masked" in text and "Control: inpaint" in text
    values = parse_parameters(text + ", Mask hash: 0123456789")
    assert (values["mask_blur"], values["inpaint_area"], values["outpaint"], values["control"]) == \
        (6, "masked", "down:128", "inpaint")
    assert (values["control_strength"], values["control_start"], values["control_end"]) == (0.7, 0.1, 0.9)
    assert values["mask_note"] == MASK_NOT_RESTORED and "not_applied" not in values


def test_request_checks_for_masks_and_control(tmp_path):
    start = tmp_path / "s.png"
    Image.new("RGB", (128, 128)).save(start)
    base = {"prompt": "1girl", "width": 128, "height": 128}
    with pytest.raises(InputError, match="control inpaint needs a mask"):
        build_request(dict(base, control="inpaint", init_image=str(start)))
    with pytest.raises(InputError, match="control_start \\(0.5\\) must be below control_end \\(0.5\\)"):
        build_request(dict(base, control_start=0.5, control_end=0.5))
    with pytest.raises(InputError, match="control_strength must be between 0 and 2"):
        build_request(dict(base, control_strength=3))
    with pytest.raises(InputError, match="canny_low \\(300\\) must not be above canny_high \\(200\\)"):
        build_request(dict(base, canny_low=300))
    with pytest.raises(InputError, match="outpainting makes 128x128 into 4224x128"):
        build_request(dict(base, init_image=str(start), outpaint="right:4096"))
