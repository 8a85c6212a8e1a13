"""Start images fitted to the generation's size: crop, fit (edge-extended), stretch; EXIF; transparency."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from sote_ui.core.errors import InputError
from sote_ui.core.images import MIN_SIDE, RESIZE_MODES, fit_to, flatten, open_start_image
from sote_ui.core.outputs import open_image

RED, GREEN, BLUE = (230, 20, 20), (20, 200, 40), (20, 40, 230)


def bands(width: int = 400, height: int = 200) -> Image.Image:
    """Red, green and blue vertical bands: the left quarter red, the middle half green, the right quarter blue."""
    image = Image.new("RGB", (width, height), GREEN)
    image.paste(RED, (0, 0, width // 4, height))
    image.paste(BLUE, (width * 3 // 4, 0, width, height))
    return image


def near(pixel, colour, tolerance: int = 12) -> bool:
    return all(abs(int(a) - int(b)) <= tolerance for a, b in zip(pixel, colour))


def test_crop_keeps_the_centre():
    out = fit_to(bands(), 100, 100, "crop")
    assert out.size == (100, 100) and out.mode == "RGB"
    # Scaled to 200x100, then the middle 100 columns: the green band only.
    array = np.asarray(out)
    assert near(array[0, 0], GREEN) and near(array[99, 99], GREEN) and near(array[50, 50], GREEN)


def test_stretch_keeps_everything_out_of_proportion():
    out = np.asarray(fit_to(bands(), 100, 100, "stretch"))
    assert near(out[50, 5], RED) and near(out[50, 50], GREEN) and near(out[50, 95], BLUE)
    assert near(out[5, 5], RED) and near(out[95, 95], BLUE)  # every row is the whole picture


def test_fit_keeps_everything_and_extends_the_edges_into_the_margins():
    out = np.asarray(fit_to(bands(), 100, 100, "fit"))
    # The picture is 100x50, rows 25..74; the margins above and below continue each column's edge colour.
    assert near(out[50, 5], RED) and near(out[50, 50], GREEN) and near(out[50, 95], BLUE)
    for row in (0, 10, 90, 99):
        assert near(out[row, 5], RED) and near(out[row, 50], GREEN) and near(out[row, 95], BLUE), row
    # Sideways too: a tall picture's margins left and right repeat its first and last columns.
    tall = Image.new("RGB", (100, 400), GREEN)
    tall.paste(RED, (0, 0, 100, 100))
    tall.paste(BLUE, (0, 300, 100, 400))
    out = np.asarray(fit_to(tall, 200, 200, "fit"))
    for column in (0, 30, 170, 199):
        assert near(out[5, column], RED) and near(out[100, column], GREEN) and near(out[195, column], BLUE)


@pytest.mark.parametrize("mode", RESIZE_MODES)
@pytest.mark.parametrize("source, size", [((400, 200), (333, 517)), ((1000, 17), (256, 384)),
                                          ((17, 1000), (384, 256)), ((640, 640), (640, 640))])
def test_every_mode_gives_exactly_the_size(mode, source, size):
    out = fit_to(bands(*source), *size, mode)
    assert out.size == size and out.mode == "RGB"


def test_exif_orientation_is_applied():
    # Stored sideways (left red, right blue) with orientation 6: shown turned 90 degrees clockwise, so
    # red is at the top.
    stored = Image.new("RGB", (80, 40), BLUE)
    stored.paste(RED, (0, 0, 40, 40))
    exif = Image.Exif()
    exif[0x0112] = 6
    buffer = io.BytesIO()
    stored.save(buffer, "PNG", exif=exif)
    out = np.asarray(fit_to(open_image(buffer.getvalue()), 40, 80, "stretch"))
    assert near(out[5, 20], RED) and near(out[75, 20], BLUE)


def test_transparency_becomes_white():
    image = Image.new("RGBA", (64, 64), (0, 0, 0, 0))
    image.paste((230, 20, 20, 255), (0, 0, 32, 64))
    out = np.asarray(fit_to(image, 64, 64, "stretch"))
    assert near(out[32, 10], RED) and tuple(out[32, 60]) == (255, 255, 255)
    palette = image.convert("P")  # a palette image with a transparent index
    assert flatten(palette).mode == "RGB"


def test_a_tiny_image_is_refused_with_its_size():
    with pytest.raises(InputError, match=f"the start image is 1x1; it needs at least {MIN_SIDE}x{MIN_SIDE}"):
        fit_to(Image.new("RGB", (1, 1)), 256, 256, "crop")


def test_an_unknown_mode_lists_the_modes():
    with pytest.raises(InputError, match="unknown resize mode 'zoom'; choose one of: crop, fit, stretch"):
        fit_to(bands(), 256, 256, "zoom")


def test_a_start_file_that_is_no_image_is_named(tmp_path):
    notes = tmp_path / "notes.png"
    notes.write_text("not an image")
    with pytest.raises(InputError) as caught:
        open_start_image(notes)
    message = str(caught.value)
    assert message.startswith("start image 'notes.png': the file is not an image") and str(tmp_path) not in message
    with pytest.raises(InputError, match="start image 'gone.png': gone.png is not a file"):
        open_start_image(tmp_path / "gone.png")


def test_a_start_file_opens_upright_in_rgb(tmp_path):
    path = tmp_path / "sideways.png"
    stored = Image.new("RGBA", (80, 40), (20, 40, 230, 255))
    exif = Image.Exif()
    exif[0x0112] = 6
    stored.save(path, exif=exif)
    image = open_start_image(path)
    assert image.size == (40, 80) and image.mode == "RGB"
