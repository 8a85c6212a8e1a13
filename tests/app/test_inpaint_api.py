"""Inpainting and ControlNets through the served app's API (``/generate`` takes the mask and control image by
name) and the Generate tab's "Inpaint / control" panel's helpers."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageDraw
from support import SMALL, make_studio

from sote_ui.core.metadata import parse_parameters, read_parameters

# The endpoint's file fields have no default value: a script names each one, None where it has no file.
FAST = {**SMALL, "prompt": "1girl", "width": 128, "height": 128, "prior_steps": 2, "decoder_steps": 1,
        "init_image": None, "mask": None, "control_image": None}


@pytest.fixture(scope="module")
def served_studio(tiny_pair, studio_home):
    """The studio on the tiny pair (its own ControlNets lie in its controlnet/ folder)."""
    return make_studio(tiny_pair, studio_home)


@pytest.fixture
def start(tmp_path):
    path = tmp_path / "start.png"
    image = Image.new("RGB", (128, 128), (200, 120, 40))
    ImageDraw.Draw(image).ellipse((30, 30, 100, 100), fill=(20, 40, 160))
    image.save(path)
    return path


@pytest.fixture
def mask(tmp_path):
    path = tmp_path / "mask.png"
    image = Image.new("L", (128, 128), 0)
    ImageDraw.Draw(image).rectangle((48, 48, 80, 80), fill=255)
    image.save(path)
    return path


def test_generate_inpaints_with_a_mask_by_name(client, start, mask):
    from gradio_client import handle_file

    _, _, report, _, _ = client.predict(**{**FAST, "init_image": handle_file(str(start)),
                                           "mask": handle_file(str(mask))}, mask_blur=0, api_name="/generate")
    path = report["files"][0]
    with Image.open(path) as image:
        values = parse_parameters(read_parameters(image))
        out = np.asarray(image.convert("RGB"))
    source = np.asarray(Image.open(start).convert("RGB"))
    assert values["control"] == "inpaint" and values["mask_blur"] == 0
    assert np.array_equal(out[:48], source[:48]) and np.array_equal(out[81:], source[81:])


def test_canny_control_by_name(client, start):
    from gradio_client import handle_file

    _, _, report, _, _ = client.predict(**{**FAST, "control_image": handle_file(str(start))}, control="canny",
                                        control_strength=1.5, api_name="/generate")
    with Image.open(report["files"][0]) as image:
        values = parse_parameters(read_parameters(image))
    assert values["control"] == "canny" and values["control_strength"] == 1.5


def test_an_empty_mask_is_a_one_line_error(client, start, tmp_path):
    from gradio_client import handle_file

    empty = tmp_path / "blank.png"
    Image.new("L", (128, 128), 0).save(empty)
    with pytest.raises(Exception) as refused:
        client.predict(**{**FAST, "init_image": handle_file(str(start)), "mask": handle_file(str(empty))},
                       api_name="/generate")
    assert "is empty: nothing to repaint" in str(refused.value)


def test_panel_helpers_make_masks_and_grow_the_canvas():
    from sote_ui.ui.generate.inpaint_box import drawn_mask, grown

    layer = Image.new("RGBA", (64, 64), (0, 0, 0, 0))
    ImageDraw.Draw(layer).rectangle((10, 10, 20, 20), fill=(255, 255, 255, 255))
    mask, note = drawn_mask({"background": None, "layers": [layer], "composite": None})
    assert mask.getbbox() == (10, 10, 21, 21) and note == "the painted strokes are the mask"
    assert drawn_mask({"layers": [Image.new("RGBA", (8, 8))]})[0] is None
    assert grown("left:128", "left") == ("left:256", "outpaint: left:256")
    assert grown("", "down")[0] == "down:128"
