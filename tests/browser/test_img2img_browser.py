"""Image to image, the hi-res fix and the samplers in Chromium: a start image dropped in the panel makes an
image whose parameters say "Denoising strength"; "Send to image-to-image" fills the panel; the final size
line follows the hi-res fix; a sampler picked in Advanced comes back through a preset."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image
from support import (
    SMALL,
    dropdown_text,
    expect_dropdown,
    expect_value,
    generate_and_wait,
    make_studio,
    pick,
    set_number,
    small_settings,
)

from sote_ui.core.metadata import parse_parameters, read_parameters


@pytest.fixture(scope="module")
def served_studio(tiny_pair, tiny_effnet, studio_home):
    """The demo studio on the tiny pair, with the tiny EfficientNet encoder for image to image."""
    return make_studio(tiny_pair, studio_home, demo=True, effnet=str(tiny_effnet))


def newest_parameters(app) -> str:
    outputs = sorted(app.outputs.glob("*.png"), key=lambda path: path.stat().st_mtime)
    with Image.open(outputs[-1]) as image:
        return read_parameters(image)


def open_panel(page) -> None:
    page.get_by_text("Image to image: start from a picture").click()
    page.locator("#init_image").wait_for(state="visible")


def test_a_start_image_dropped_in_the_panel_makes_an_image_to_image_run(page, app, tmp_path):
    start = tmp_path / "start.png"
    Image.new("RGB", (300, 200), (30, 160, 220)).save(start)
    small_settings(page, prior_steps=4, decoder_steps=1)
    open_panel(page)
    page.locator("#init_image input[type=file]").set_input_files(str(start))
    # The panel says what the run will do with it, and shows how it meets 256x256.
    page.locator("#init_note").filter(has_text="the 300x200 start image is cropped to fill 256x256").wait_for()
    assert "denoise 0.75 runs about 3 of 4 prior steps" in page.locator("#init_note").inner_text()
    page.locator("#init_preview img").wait_for()
    set_number(page, "Denoise", 0.5)
    page.locator("#init_note").filter(has_text="denoise 0.5 runs about 2 of 4 prior steps").wait_for()
    page.locator("#seed input").fill("321")
    generate_and_wait(page)

    parameters = newest_parameters(app)
    values = parse_parameters(parameters)
    assert "Denoising strength: 0.5" in parameters
    assert values["denoise"] == 0.5 and values["seed"] == 321
    assert values["init_image_note"].startswith("start.png sha256:")
    captions = page.locator("#gallery .grid-container .caption-label, #gallery .preview .caption-label")
    assert any(text.startswith("seed 321") for text in captions.all_inner_texts())

    # Removing the image is text to image again: the next image records no denoise.
    page.locator("#init_image").get_by_role("button", name="Remove Image").click()
    page.locator("#init_note").filter(has_text="image to image").wait_for(state="detached")
    page.locator("#seed input").fill("322")
    generate_and_wait(page)
    parameters = newest_parameters(app)
    assert "Seed: 322" in parameters and "Denoising strength" not in parameters


def test_send_to_image_to_image_fills_the_panel_with_the_selected_image(page):
    small_settings(page, prior_steps=2, decoder_steps=1)
    page.locator("#seed input").fill("654")
    generate_and_wait(page)
    page.locator("#to_img2img").click()
    page.locator("#image_note").filter(has_text="seed 654 is the start image of image to image").wait_for()
    # The panel opens with the image in it, and says how the 256x256 image meets the size.
    page.locator("#init_image img").wait_for(state="visible")
    page.locator("#init_note").filter(has_text="the 256x256 start image is cropped to fill 256x256").wait_for()
    page.locator("#init_preview img").wait_for()


def test_the_size_line_shows_the_hi_res_fix_final_size(page):
    pick(page, "resolution", "1024 x 1536  (2:3 portrait, card default)")
    line = page.locator("#final_size")
    line.filter(has_text="Final size: 1024x1536").wait_for()
    page.locator("#hires_on input").check()
    line.filter(has_text="Final size: 1536x2304").wait_for()  # the card's size times the default 1.5
    set_number(page, "Upscale by", 1.25)
    # 1024 x 1.25 = 1280 and 1536 x 1.25 = 1920: both already multiples of 128.
    line.filter(has_text="Final size: 1280x1920").wait_for()
    pick(page, "resolution", "1024 x 1024  (1:1 square)")
    set_number(page, "Upscale by", 1.3)
    # 1024 x 1.3 = 1331.2 snaps to 1280.
    line.filter(has_text="Final size: 1280x1280 (hi-res fix: first pass 1024x1024, upscaled x1.3)").wait_for()
    page.locator("#hires_on input").uncheck()
    line.filter(has_text="Final size: 1024x1024").wait_for()
    assert "hi-res" not in line.inner_text()


def test_samplers_and_shift_come_back_through_a_preset(page):
    page.get_by_text("Advanced", exact=True).click()
    pick(page, "prior_sampler", "DPM++ 2M (SGM uniform)")
    pick(page, "decoder_sampler", "Euler a")
    set_number(page, "Prior shift", 2)
    page.locator("#hires_on input").check()
    page.get_by_text("Presets", exact=True).click()
    page.locator("#preset_name textarea, #preset_name input").first.fill("refine-look")
    page.locator("#save_preset").click()
    page.locator("#preset_status").filter(has_text="saved preset refine-look").wait_for()

    # Back to the defaults, then the preset brings every refine setting back.
    pick(page, "prior_sampler", "DDPM (default)")
    pick(page, "decoder_sampler", "DDPM (default)")
    set_number(page, "Prior shift", 1)
    page.locator("#hires_on input").uncheck()
    page.locator("#final_size").filter(has_text="hi-res").wait_for(state="detached")
    pick(page, "preset", "refine-look")
    page.locator("#load_preset").click()
    page.locator("#preset_status").filter(has_text="loaded preset refine-look").wait_for()
    expect_dropdown(page, "prior_sampler", "DPM++ 2M (SGM uniform)")
    expect_dropdown(page, "decoder_sampler", "Euler a")
    assert page.get_by_label("number input for Prior shift", exact=True).input_value() == "2"
    page.locator("#final_size").filter(has_text="hi-res fix").wait_for()
    assert page.locator("#hires_on input").is_checked()
    assert dropdown_text(page, "prior_sampler") == "DPM++ 2M (SGM uniform)"


def test_png_info_sends_the_samplers_denoise_and_hi_res_fix_to_generate(page, tmp_path):
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text("parameters", "1girl, solo\nNegative prompt: lowres\nSteps: 20, Sampler: DPM++ 2M, "
                                "Schedule type: SGM Uniform, CFG scale: 7, Seed: 78, Size: 512x768, "
                                "Decoder sampler: LCM, Prior shift: 2, Denoising strength: 0.35, Resize mode: fit, "
                                "Init image: cat.png sha256:abc123, Hires upscale: 1.5, Hires steps: 12, "
                                "Hires denoising strength: 0.45")
    path = tmp_path / "refined.png"
    Image.new("RGB", (64, 64), "white").save(path, pnginfo=info)
    page.get_by_role("tab", name="PNG info").click()
    page.locator("#png_upload input[type=file]").set_input_files(str(path))
    expect_value(page.locator("#png_raw textarea"), "Hires upscale: 1.5")
    page.locator("#send_to_generate").click()
    note = page.locator("#image_note")
    note.filter(has_text="applied the settings read from the image").wait_for()
    # The start image itself is not in the PNG: the note names it, the panel stays empty.
    assert "its start image was 'cat.png'" in note.inner_text()
    page.get_by_text("Advanced", exact=True).click()
    open_panel(page)
    expect_dropdown(page, "prior_sampler", "DPM++ 2M (SGM uniform)")
    expect_dropdown(page, "decoder_sampler", "LCM")
    page.locator("#final_size").filter(has_text="Final size: 768x1152 (hi-res fix: first pass 512x768").wait_for()
    assert page.locator("#hires_on input").is_checked()
    for label, value in (("Denoise", "0.35"), ("Hi-res denoise", "0.45"), ("Prior shift", "2"),
                         ("Hi-res steps", "12")):
        assert page.get_by_label(f"number input for {label}", exact=True).input_value() == value, label
    assert page.locator("#resize_mode input[value=fit]").is_checked()
    assert page.locator("#init_image img").count() == 0


def test_the_outputs_tab_sends_an_image_to_image_to_image(page, app):
    shots, _ = app.studio.generate({**SMALL, "prior_steps": 2, "decoder_steps": 1, "seed": 811})
    page.get_by_role("tab", name="Outputs").click()
    page.locator("#outputs_gallery .grid-container .thumbnail-item").first.wait_for()
    page.locator("#outputs_gallery .grid-container .thumbnail-item").first.click()
    page.locator("#outputs_info").filter(has_text="selected: seed 811").wait_for()
    page.locator("#outputs_to_img2img").click()
    # Generate opens with the panel open and the image in it.
    page.locator("#init_image img").wait_for(state="visible")
    assert page.locator("#init_image img").first.get_attribute("src").endswith(Path(shots[0].path).name)
    page.locator("#init_note").filter(has_text="the 256x256 start image is cropped to fill").wait_for()
