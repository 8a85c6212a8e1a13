"""Inpainting in Chromium: a mask drawn over the start image in the "Inpaint / control" panel repaints only
that area (the rest of the image is the start image's pixels), and the outpaint buttons grow the canvas."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageDraw
from support import generate_and_wait, make_studio, small_settings

from sote_ui.core.masks import feather_reach
from sote_ui.core.metadata import parse_parameters, read_parameters


@pytest.fixture(scope="module")
def served_studio(tiny_pair, studio_home):
    """The demo studio on the tiny pair, whose folder holds the tiny encoder and ControlNets."""
    return make_studio(tiny_pair, studio_home, demo=True)


def newest(app) -> Image.Image:
    outputs = sorted(app.outputs.glob("*.png"), key=lambda path: path.stat().st_mtime)
    return Image.open(outputs[-1])


def start_image(tmp_path):
    path = tmp_path / "start.png"
    image = Image.new("RGB", (256, 256), (230, 200, 150))
    ImageDraw.Draw(image).rectangle((0, 0, 60, 256), fill=(20, 60, 180))
    image.save(path)
    return path


def open_panels(page, start) -> None:
    page.get_by_text("Image to image: start from a picture").click()
    page.locator("#init_image input[type=file]").set_input_files(str(start))
    page.locator("#init_preview img").wait_for()
    page.get_by_text("Inpaint / control").click()
    page.locator("#mask_editor canvas").first.wait_for(state="visible")


def test_a_drawn_mask_repaints_only_its_area(page, app, tmp_path):
    start = start_image(tmp_path)
    small_settings(page, prior_steps=2, decoder_steps=1)
    open_panels(page, start)
    canvas = page.locator("#mask_editor canvas").first
    box = canvas.bounding_box()
    # A short stroke in the middle of the picture, with the editor's brush.
    brush = page.locator("#mask_editor").get_by_role("button", name="Brush")
    if brush.count():
        brush.first.click()
    x, y = box["x"] + box["width"] * 0.5, box["y"] + box["height"] * 0.5
    page.mouse.move(x - 20, y)
    page.mouse.down()
    page.mouse.move(x, y, steps=5)
    page.mouse.move(x + 20, y, steps=5)
    page.mouse.up()
    page.locator("#use_drawn_mask").click()
    page.locator("#inpaint_note").filter(has_text="the painted strokes are the mask").wait_for()
    page.locator("#mask img").wait_for()
    page.locator("#seed input").fill("77")
    generate_and_wait(page)

    with newest(app) as image:
        values = parse_parameters(read_parameters(image))
        out = np.asarray(image.convert("RGB"))
    source = np.asarray(Image.open(start).convert("RGB"))
    assert values["control"] == "inpaint" and values["seed"] == 77
    assert values["mask_note"].startswith("the mask itself is not stored")
    # The stroke is in the middle: the left band and the top and bottom rows are the start image's.
    assert np.array_equal(out[:40], source[:40]) and np.array_equal(out[-40:], source[-40:])
    assert not np.array_equal(out, source)


def test_the_outpaint_buttons_grow_the_canvas(page, app, tmp_path):
    start = start_image(tmp_path)
    small_settings(page, prior_steps=2, decoder_steps=1)
    open_panels(page, start)
    page.locator("#outpaint_right").click()
    page.locator("#outpaint_right").click()
    page.locator("#inpaint_note").filter(has_text="outpaint: right:256").wait_for()
    assert page.locator("#outpaint textarea, #outpaint input").first.input_value() == "right:256"
    page.locator("#seed input").fill("78")
    generate_and_wait(page)
    reach = feather_reach(4)  # the default mask blur feathers the seam into the old canvas this far
    with newest(app) as image:
        assert image.size == (512, 256)
        kept = np.asarray(image.convert("RGB"))[:, :256 - reach]
    assert np.array_equal(kept, np.asarray(Image.open(start).convert("RGB"))[:, :256 - reach])


def test_send_to_inpaint_puts_the_selected_image_under_the_mask_editor(page):
    small_settings(page, prior_steps=2, decoder_steps=1)
    page.locator("#seed input").fill("79")
    generate_and_wait(page)
    page.locator("#to_inpaint").click()
    page.locator("#inpaint_note").filter(has_text="seed 79 is the picture to repaint").wait_for()
    page.locator("#mask_editor canvas").first.wait_for(state="visible")
    page.get_by_text("Image to image: start from a picture").click()  # the start image is the sent one
    page.locator("#init_image img").wait_for()
