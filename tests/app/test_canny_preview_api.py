"""The canny preview's edge map from the Studio: the engine's own edge map of the file, at any thresholds,
made without loading the model; an upload that is not an image is one line and is removed."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageDraw
from support import make_studio

from sote_ui.core.errors import InputError
from sote_ui.engine.controlnet import canny


@pytest.fixture
def studio(tiny_pair, tmp_path):
    studio = make_studio(tiny_pair, tmp_path)
    yield studio
    studio.close()


@pytest.fixture
def picture(tmp_path):
    # Hard edges and a soft ramp: the ramp's edges come and go with the thresholds.
    image = Image.new("RGB", (192, 160), (240, 230, 210))
    draw = ImageDraw.Draw(image)
    draw.ellipse((30, 20, 130, 120), fill=(20, 60, 170))
    for x in range(140, 192):
        draw.line((x, 0, x, 159), fill=(240 - (x - 140) * 3,) * 3)
    path = tmp_path / "control.png"
    image.save(path)
    return path


@pytest.mark.parametrize("low, high", [(100, 200), (10, 20), (300, 500)])
def test_the_edge_map_is_the_engines_and_needs_no_model(studio, picture, low, high):
    edges = studio.edge_map(str(picture), low, high)
    expected = canny(Image.open(picture), low, high)
    assert edges.size == (192, 160) and edges.mode == "L"
    assert np.array_equal(np.asarray(edges), np.asarray(expected))
    assert studio._engine is None  # the preview loaded no model


def test_thresholds_change_the_edge_map(studio, picture):
    loose = np.asarray(studio.edge_map(str(picture), 10, 20))
    strict = np.asarray(studio.edge_map(str(picture), 300, 500))
    assert (loose == 255).sum() > (strict == 255).sum() > 0


def test_an_upload_that_is_not_an_image_is_one_line_and_removed(studio, tmp_path):
    bad = tmp_path / "notes.png"
    bad.write_text("not a picture")
    with pytest.raises(InputError) as caught:
        studio.edge_map(str(bad), 100, 200, remove_if_refused=True)
    assert str(caught.value) == ("control image 'notes.png': the file is not an image this app can read "
                                 "(PNG, JPEG or WebP)")
    assert not bad.exists()


def test_a_scripts_own_file_is_kept(studio, tmp_path):
    bad = tmp_path / "mine.png"
    bad.write_text("not a picture")
    with pytest.raises(InputError):
        studio.edge_map(str(bad), 100, 200)
    assert bad.read_text() == "not a picture"


def test_the_panel_shows_a_bad_control_image_as_one_line_then_clears_it(studio, picture, tmp_path):
    from sote_ui.ui.generate.inpaint_box import canny_preview

    bad = tmp_path / "scan.png"
    bad.write_bytes(b"\x89PNG broken")
    preview, note = canny_preview(studio, "canny", str(bad), None, 100, 200, 192, 160, "crop", "")
    assert preview["visible"] is False and preview["value"] is None
    assert note == "⚠️ control image 'scan.png': the file is not an image this app can read (PNG, JPEG or WebP)"
    assert not bad.exists()  # the refused upload left the server's upload folder
    preview, cleared = canny_preview(studio, "canny", None, str(picture), 100, 200, 192, 160, "crop", note)
    assert preview["visible"] is True and cleared == ""  # the start image stands in for the control image
    assert np.array_equal(np.asarray(preview["value"]), np.asarray(canny(Image.open(picture), 100, 200)))
    preview, kept = canny_preview(studio, "sr", None, str(picture), 100, 200, 192, 160, "crop", "the mask is inverted")
    assert preview["visible"] is False and kept == {"__type__": "update"}


@pytest.mark.parametrize("mode", ["crop", "fit", "stretch"])
def test_at_a_size_the_edge_map_is_the_runs(studio, picture, mode):
    from sote_ui.core.images import fit_to

    edges = studio.edge_map(str(picture), 100, 200, size=(256, 128), resize_mode=mode)
    expected = canny(fit_to(Image.open(picture), 256, 128, mode), 100, 200)
    assert edges.size == (256, 128)
    assert np.array_equal(np.asarray(edges), np.asarray(expected))
