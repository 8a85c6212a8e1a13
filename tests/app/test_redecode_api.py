"""/redecode on a live server: a saved PNG, a new decoder seed, steps or CFG, and only the decoder runs."""

from __future__ import annotations

import numpy as np
import pytest
from gradio_client import handle_file
from PIL import Image
from support import SMALL, pixels

from sote_ui.core.metadata import parse_parameters, read_parameters


def params(path) -> dict:
    with Image.open(path) as image:
        return parse_parameters(read_parameters(image))


def test_redecode_a_saved_png_with_another_decoder_seed(app, client):
    shots, _ = app.studio.generate({**SMALL, "seed": 4242})
    original = shots[0].path
    runs = app.studio.engine.counters.prior_runs
    path, report = client.predict(handle_file(original), 9, 3, None, api_name="/redecode")
    assert app.studio.engine.counters.prior_runs == runs
    assert report["prior_runs"] == 0 and report["decoder_seed"] == 9 and report["decoder_steps_run"] == 3
    values = params(path)
    assert values["seed"] == 4242 and values["decoder_steps"] == 3
    assert values["not_applied"]["Decoder seed"] == "9"
    assert not np.array_equal(pixels(path), pixels(original))
    # Nothing but the image: its own decoder noise and settings give the image back.
    same, report = client.predict(handle_file(original), None, None, None, api_name="/redecode")
    assert report["decoder_seed"] is None and np.array_equal(pixels(same), pixels(original))


def test_an_image_this_app_did_not_save_gets_one_line(client, tmp_path):
    other = tmp_path / "holiday.png"
    Image.new("RGB", (32, 32), (9, 9, 9)).save(other)
    with pytest.raises(Exception) as info:
        client.predict(handle_file(str(other)), 1, None, None, api_name="/redecode")
    message = str(info.value)
    assert "holiday.png has no stored composition: only images this app saved can be re-decoded" in message
    assert "\n" not in message.strip() and str(tmp_path) not in message


def test_what_the_page_boxes_accept():
    from sote_ui.core.errors import InputError
    from sote_ui.ui.generate.gallery import typed_number

    assert typed_number(" 12 ", "decoder steps", True) == 12
    assert typed_number("", "decoder steps", True) is None
    assert typed_number("1.5", "decoder CFG", False) == 1.5
    for bad in ("1e400", "nan", "2.5", "many"):
        with pytest.raises(InputError, match="^decoder steps must be a whole number or empty, got "):
            typed_number(bad, "decoder steps", True)
    with pytest.raises(InputError, match="^decoder CFG must be a number or empty, got 'inf'$"):
        typed_number("inf", "decoder CFG", False)
