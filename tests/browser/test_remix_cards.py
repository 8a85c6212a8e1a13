"""Image remix in Chromium: one card per image with its own strength; a strength goes with its image;
the encoder is checked when an image is added."""

from __future__ import annotations

import pytest
from PIL import Image
from support import generate_and_wait, make_studio, small_settings

from sote_ui.core.metadata import parse_parameters, read_parameters


@pytest.fixture(scope="module")
def served_studio(tmp_path_factory, studio_home):
    """The demo studio on a tiny pair whose prior folder has its own (tiny) image encoder."""
    from sote_ui.engine.builders import build_tiny_pair

    pair = build_tiny_pair(tmp_path_factory.mktemp("remix-pair"), image_encoder=True)
    return make_studio(pair, studio_home, demo=True)


def newest_references(app) -> list[dict]:
    outputs = sorted(app.outputs.glob("*.png"), key=lambda path: path.stat().st_mtime)
    with Image.open(outputs[-1]) as image:
        return parse_parameters(read_parameters(image)).get("references", [])


def test_each_card_keeps_its_strength_and_removing_an_image_takes_its_strength(page, app, tmp_path):
    red, blue = tmp_path / "red.png", tmp_path / "blue.png"
    Image.new("RGB", (96, 96), (220, 30, 30)).save(red)
    Image.new("RGB", (96, 96), (30, 30, 220)).save(blue)
    small_settings(page, prior_steps=2, decoder_steps=1)
    page.get_by_text("Image remix: steer the composition").click()
    page.locator("#remix_image_1 input[type=file]").set_input_files(str(red))
    page.locator("#remix_note").filter(has_text="image encoder: the prior's own").wait_for(timeout=60_000)
    page.locator("#remix_image_2 input[type=file]").set_input_files(str(blue))
    page.locator("#remix_image_2 img").first.wait_for()
    strength = page.locator("#remix_strength_2").get_by_label("number input for Strength", exact=True)
    strength.fill("0.5")
    strength.press("Enter")
    strength.blur()
    page.locator("#seed input").fill("570")
    generate_and_wait(page)
    assert [(ref["name"], ref["strength"]) for ref in newest_references(app)] == [("red.png", 1.0), ("blue.png", 0.5)]

    # Remove the first image: the second keeps its 0.5, nothing is left over to block the run.
    page.locator("#remix_image_1").get_by_role("button", name="Remove Image").click()
    page.locator("#seed input").fill("571")
    generate_and_wait(page)
    assert [(ref["name"], ref["strength"]) for ref in newest_references(app)] == [("blue.png", 0.5)]
