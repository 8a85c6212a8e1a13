"""The real page in a real browser: the app served in-process as app.py --demo serves it, driven by Debian's
chromium through Playwright (app.py itself is started in tests/app/test_entry.py).

One server for the module; each test opens its own page (its own session) at
1400x1000, or 390x844 for the phone layout, and asserts what a person sees:
visible text, control values, counts. Images are 256x256 with 2-3 steps.
The first test saves a full-page screenshot: to docs/screenshot.png (the
README's) when UPDATE_SCREENSHOT=1 is set, else into its temporary folder.
"""

from __future__ import annotations

import json
import os
import re
import time

import httpx
import pytest
from PIL import Image
from support import (
    DESKTOP,
    PHONE,
    ROOT,
    click_thumbnail,
    dropdown_text,
    expect_dropdown,
    expect_number,
    expect_value,
    generate_and_wait,
    no_error_badges,
    number,
    open_page,
    pick,
    set_number,
    small_settings,
    toast,
)

SCREENSHOT = ROOT / "docs" / "screenshot.png"


# 0. The whole flow, and the README's screenshot -------------------------------------------


def test_generate_in_the_browser(page, app, tmp_path):
    outputs = app.outputs
    assert "Demo mode" in page.locator("#demo_banner").inner_text()
    page.locator("#prompt textarea").fill("1girl, solo, smile, hoodie")
    pick(page, "rating", "general")
    pick(page, "resolution", "custom")
    for label, value in (("Width", 256), ("Height", 256), ("Prior steps (stage C)", 3),
                         ("Decoder steps (stage B)", 2)):
        set_number(page, label, value)
        assert number(page, label) == str(value)

    # The preview shows the prompt as sent: picked tags in the dataset's order, then the user's.
    expected = "very aesthetic, best quality, newest, general, 1girl, solo, smile, hoodie"
    composed = page.locator("#composed code")
    composed.filter(has_text=expected).wait_for()
    assert composed.inner_text().strip() == expected

    generate_and_wait(page)
    image = page.locator("#gallery img").first
    page.wait_for_function("() => { const img = document.querySelector('#gallery img');"
                           " return img && img.complete && img.naturalWidth > 0; }")
    assert image.evaluate("img => [img.naturalWidth, img.naturalHeight]") == [256, 256]
    assert "seed" in page.locator("#gallery").inner_text()
    saved = list(outputs.glob("sote-*.png"))
    assert saved

    # One line about the run; the full report waits in a closed accordion.
    summary = page.locator("#summary").inner_text()
    assert summary.startswith("1 image in ") and "fp32" in summary
    assert not page.locator("#report").is_visible()
    page.locator("#report_box > button").click()
    page.locator("#report").filter(has_text="decoder_steps_run").wait_for()
    assert expected in page.locator("#report").inner_text().replace("\n", "")

    target = SCREENSHOT if os.environ.get("UPDATE_SCREENSHOT") == "1" else tmp_path / "screenshot.png"
    target.parent.mkdir(parents=True, exist_ok=True)
    started = time.time()
    page.locator("#report_box > button").click()  # fold the JSON again for the picture
    page.screenshot(path=str(target), full_page=True)
    # This run's picture: written just now, a real page-sized image.
    assert target.stat().st_mtime >= started - 1
    with Image.open(target) as shot:
        assert shot.width == DESKTOP["width"] and shot.height >= DESKTOP["height"] // 2
        assert len(set(shot.convert("L").resize((64, 64)).getdata())) > 8  # not a blank page


# 1. Errors reach the screen as text, never as badges over the form ------------------------


def test_failing_actions_show_their_message_and_no_error_badges(page, tmp_path):
    page.locator("#reuse_settings").click()
    toast(page, "no image yet: generate one first").first.wait_for()
    page.locator("#image_note").filter(has_text="no image yet: generate one first").wait_for()

    page.locator("#reuse_seed").click()
    page.locator("#status").filter(has_text="no seed yet: generate an image first").wait_for()

    page.locator("#to_compare_a").click()
    toast(page, "no image yet").first.wait_for()

    page.get_by_text("Presets", exact=True).click()
    page.locator("#load_preset").click()
    page.locator("#preset_status").filter(has_text="pick a preset first").wait_for()

    pick(page, "preset", "fast")
    page.locator("#delete_preset").click()
    page.locator("#preset_status").filter(has_text="'fast' is a shipped preset and can't be deleted").wait_for()

    page.locator("#preset_name textarea, #preset_name input").first.fill("fast")
    page.locator("#save_preset").click()
    page.locator("#preset_status").filter(has_text="'fast'").filter(has_text="shipped").wait_for()
    assert no_error_badges(page)

    page.get_by_role("tab", name="PNG info").click()
    page.locator("#send_to_generate").click()
    page.locator("#png_note").filter(has_text="drop an image with stored settings first").wait_for()
    plain = tmp_path / "plain.png"
    Image.new("RGB", (32, 32), "white").save(plain)
    page.locator("#png_upload input[type=file]").set_input_files(str(plain))
    page.locator("#png_note").filter(has_text="carries no generation settings").wait_for()
    toast(page, "carries no generation settings").first.wait_for()
    assert no_error_badges(page)


# 2. The seed box: -1 is random, the last run's seed is shown and can be reused --------------


def test_seed_box_dice_and_recycle(page):
    seed_box = page.locator("#seed input")
    assert seed_box.input_value() == "-1"
    small_settings(page)
    generate_and_wait(page)
    page.locator("#seed").filter(has_text="last run:").wait_for()  # written once the run's reply is in
    label = page.locator("#seed").inner_text()
    last = int(label.split("last run:")[1].split()[0])
    assert seed_box.input_value() == "-1"  # still random for the next run
    assert f"seed {last}" in page.locator("#gallery").inner_text()
    page.locator("#reuse_seed").click()
    page.wait_for_function(f"() => document.querySelector('#seed input').value === '{last}'")
    page.locator("#random_seed").click()
    page.wait_for_function("() => document.querySelector('#seed input').value === '-1'")


# 3. Controls stay consistent with the state they show --------------------------------------


def test_reuse_settings_moves_the_resolution_picker_and_modes_offered_are_runnable(page):
    small_settings(page)
    generate_and_wait(page)
    pick(page, "resolution", "1024 x 1536  (2:3 portrait, card default)")
    expect_number(page, "Height", 1536)
    click_thumbnail(page, 0)
    page.locator("#reuse_settings").click()
    page.locator("#image_note").filter(has_text="applied the settings of seed").wait_for()
    expect_number(page, "Width", 256)
    expect_number(page, "Height", 256)
    expect_dropdown(page, "resolution", "custom")
    expect_number(page, "Prior steps (stage C)", 3)

    # The memory picker offers only what this device runs; the panel names the rest once.
    page.get_by_text("Memory mode", exact=True).first.click()
    page.locator("#mode input[role=combobox]").click()
    options = [o.split("\n")[-1].strip() for o in page.get_by_role("option").all_inner_texts()]
    page.keyboard.press("Escape")
    assert any(o.startswith("fp32") for o in options), options
    assert not any(o.startswith("offload-bf16") or o.startswith("sequential") for o in options)
    panel = page.locator("#device_info").inner_text()
    assert panel.count("Not on this device") == 1 and "offload-bf16" in panel


# 4. Live feedback where the eye is -----------------------------------------------------------


def test_token_count_sits_at_the_prompt_and_status_under_generate(page):
    page.locator("#prompt textarea").fill("1girl, solo")
    page.locator("#composed").filter(has_text="of 3 chunks").wait_for()
    box = {k: page.locator(f"#{k}").bounding_box() for k in ("prompt", "composed", "aesthetic", "generate",
                                                                "status", "gallery")}
    assert box["prompt"]["y"] < box["composed"]["y"] < box["aesthetic"]["y"]
    assert box["generate"]["y"] < box["status"]["y"] < box["gallery"]["y"]
    assert "ready on CPU" in page.locator("#status").inner_text()
    assert page.locator("#generate").inner_text().strip() == "Generate"
    assert page.locator("#stop").is_disabled()  # nothing runs


# 8. Gallery actions ----------------------------------------------------------------------------


def test_gallery_actions_on_the_selected_image(page):
    small_settings(page, prior_steps=2, decoder_steps=2)
    set_number(page, "Images", 2)
    page.locator("#seed input").fill("500")
    generate_and_wait(page, images=2)
    captions = page.locator("#gallery .grid-container .caption-label").all_inner_texts()
    assert [c.split(" · ")[0] for c in captions[:2]] == ["seed 500", "seed 501"]  # a batch in seed order

    click_thumbnail(page, 1)
    page.locator("#image_note").filter(has_text="selected: seed 501").wait_for()
    assert "1girl, solo, smile, hoodie" in page.locator("#selected_prompt textarea").input_value()

    page.locator("#to_compare_b").click()
    page.locator("#compare_prompt").wait_for(state="visible")
    assert dropdown_text(page, "preset_b") == "(image sent as B)"
    assert page.locator("#compare_seed input").input_value() == "501"

    page.get_by_role("tab", name="Generate").click()
    page.locator("#to_png_info").click()
    expect_value(page.locator("#png_raw textarea"), "Seed: 501")

    page.get_by_role("tab", name="Generate").click()
    page.locator("#remove_image").click()
    page.locator("#image_note").filter(has_text="removed seed 501").wait_for()
    assert [c.split(" · ")[0] for c in page.locator("#gallery .grid-container .caption-label").all_inner_texts()] == ["seed 500"]


# 9. Sizes snap to multiples of 128; A1111-only syntax is flagged ---------------------------------


def test_typed_sizes_snap_and_lora_tags_are_flagged(page):
    pick(page, "resolution", "custom")
    set_number(page, "Width", 300)
    page.get_by_label("number input for Width", exact=True).dispatch_event("change")
    page.locator("#width input[type=range]").dispatch_event("pointerup")
    page.locator("#size_note").filter(has_text="width 300 snapped to 256").wait_for()
    expect_number(page, "Width", 256)
    expect_dropdown(page, "resolution", "custom")

    page.locator("#prompt textarea").fill("1girl, <lora:style:0.8>, smile")
    page.locator("#composed").filter(has_text="LoRA").wait_for()
    assert "<lora:style:0.8>" in page.locator("#composed").inner_text()


def test_imported_a1111_size_snaps_when_sent_to_generate(page, tmp_path):
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text("parameters", "1girl, solo\nNegative prompt: lowres\nSteps: 20, Sampler: Euler a, CFG scale: 7, "
                                "Seed: 77, Size: 832x1216, Model: other, Hires upscale: 2, Clip skip: 2")
    path = tmp_path / "a1111.png"
    Image.new("RGB", (64, 64), "white").save(path, pnginfo=info)
    page.get_by_role("tab", name="PNG info").click()
    page.locator("#png_upload input[type=file]").set_input_files(str(path))
    expect_value(page.locator("#png_raw textarea"), "Size: 832x1216")
    page.locator("#send_to_generate").click()
    page.locator("#image_note").filter(has_text="832x1216 snapped to 896x1280").wait_for()
    # What this model has no setting for is named, not dropped without a word.
    assert "not applied (no such setting here): Clip skip 2" in \
        page.locator("#image_note").inner_text()
    expect_number(page, "Width", 896)
    expect_number(page, "Height", 1280)
    expect_dropdown(page, "resolution", "custom")
    assert page.locator("#seed input").input_value() == "77"


# 10. Compare on one screen -------------------------------------------------------------------------


def test_compare_fits_one_screen_and_applies_a_side(page):
    page.get_by_role("tab", name="Compare").click()
    page.locator("#preset_descriptions").filter(has_text="A:").wait_for()
    assert "CFG" in page.locator("#preset_descriptions").inner_text() or \
        "card" in page.locator("#preset_descriptions").inner_text().lower()
    page.locator("#compare_prompt textarea").fill("1girl, solo")
    for elem_id, value in (("compare_width", 256), ("compare_height", 256), ("compare_prior_steps", 2),
                           ("compare_decoder_steps", 2)):
        page.locator(f"#{elem_id} input").fill(str(value))
    page.locator("#compare_seed input").fill("900")
    page.locator("#compare").click()
    page.locator("#compare_summary").filter(has_text="seed 900").wait_for(timeout=180_000)
    assert page.locator("#compare_thumbs .thumbnail-item").count() == 2
    diff = page.locator("#compare_diff").inner_text()
    assert "decoder_cfg" in diff and "seconds" in diff
    assert page.locator("#compare_slider img").count() >= 2
    layout = page.locator("#compare_layout").bounding_box()
    assert layout["height"] <= DESKTOP["height"]  # one screen, not 3,450 px

    page.locator("#use_b").click()
    page.locator("#image_note").filter(has_text="applied B's settings").wait_for()
    expect_number(page, "Width", 256)
    expect_dropdown(page, "resolution", "custom")
    expect_number(page, "Prior steps (stage C)", 2)

    # The same preset on both sides is refused with a readable reason.
    page.get_by_role("tab", name="Compare").click()
    pick(page, "preset_b", "card-recommended")
    page.locator("#compare").click()
    page.locator("#compare_summary").filter(has_text="have the same settings").wait_for()
    assert no_error_badges(page)


def test_a_preset_saved_in_generate_appears_in_compare_at_once(page):
    page.get_by_text("Presets", exact=True).click()
    page.locator("#preset_name textarea, #preset_name input").first.fill("browser-look")
    page.locator("#save_preset").click()
    page.locator("#preset_status").filter(has_text="saved preset browser-look").wait_for()
    page.get_by_role("tab", name="Compare").click()
    page.locator("#preset_a input[role=combobox]").click()
    assert "browser-look" in page.get_by_role("option").all_inner_texts()
    page.keyboard.press("Escape")


# 12, 13. Phone layout; dropdown text never cut -------------------------------------------------------


def test_phone_keeps_generate_on_screen_and_folds_the_sliders(phone):
    generate = phone.locator("#generate").bounding_box()
    assert 0 <= generate["y"] and generate["y"] + generate["height"] <= PHONE["height"]
    assert phone.locator("#prompt").bounding_box()["y"] < PHONE["height"]
    phone.mouse.wheel(0, 1500)
    time.sleep(0.3)
    generate = phone.locator("#generate").bounding_box()
    assert 0 <= generate["y"] and generate["y"] + generate["height"] <= PHONE["height"]
    phone.wait_for_function("() => !document.querySelector('#width') || "
                            "document.querySelector('#width').offsetParent === null")
    assert not phone.get_by_label("number input for Width", exact=True).is_visible()


@pytest.mark.parametrize("viewport", [DESKTOP, PHONE], ids=["desktop", "phone"])
def test_dropdown_choices_are_shown_whole(browser, app, viewport):
    page = open_page(browser, app.url, viewport)
    try:
        pick(page, "date", "newest (2022-2024)")
        pick(page, "aesthetic", "extremely aesthetic")
        clipped = page.evaluate("""() => [...document.querySelectorAll('input[role=combobox]')]
            .filter(el => el.offsetParent !== null && el.scrollWidth > el.clientWidth + 1)
            .map(el => el.value)""")
        assert clipped == []
        assert dropdown_text(page, "date") == "newest (2022-2024)"
    finally:
        page.context.close()


def test_the_page_has_no_api_entries_for_page_only_events(app):
    info = httpx.get(app.url + "gradio_api/info", timeout=30).json()
    names = set(info["named_endpoints"])
    assert {"/generate", "/stop", "/compare", "/grid", "/png_info", "/status"} <= names
    assert not names & {"/new_session", "/no_pairs", "/reuse_seed", "/reuse_settings", "/use_a", "/apply_png_info"}
    assert json.dumps(info).count("randomize_seed") == 0


# 5. Progress with time left; Stop only while something runs ------------------------------------------


def test_progress_shows_time_left_and_stop_says_what_was_freed(page):
    small_settings(page, prior_steps=40, decoder_steps=20)
    pick(page, "resolution", "custom")
    set_number(page, "Width", 512)
    set_number(page, "Height", 512)
    set_number(page, "Images", 8)  # a long run: Stop lands in it even when the page lags on a busy machine
    assert page.locator("#stop").is_disabled()
    page.locator("#generate").click()
    # Read the line in the page the moment it shows the progress (a streamed preview briefly redraws it).
    pattern = r"image [1-8]/8 · (prior|decoder) step \d+/\d+ · (\d+ min )?[\d.]+ s elapsed, ~(\d+ min )?[\d.]+ s left"
    text = page.wait_for_function(
        "pattern => { const t = document.querySelector('#status').innerText;"
        " return new RegExp(pattern).test(t) ? t : null; }", arg=pattern, timeout=120_000).json_value()
    assert re.search(pattern, text), text
    assert page.locator("#stop").is_enabled()
    page.locator("#stop").click()
    from playwright.sync_api import expect

    expect(page.locator("#status")).to_contain_text("stopped", timeout=120_000)
    assert "the CPU is free" in page.locator("#status").inner_text()
    expect(page.locator("#stop")).to_be_disabled(timeout=10_000)


# 11. The X/Y grid tab ------------------------------------------------------------------------------------


def test_grid_tab_starts_from_generate_and_labels_axes_for_people(page):
    page.locator("#prompt textarea").fill("1girl, smile")
    page.get_by_role("tab", name="X/Y grid").click()
    expect_value(page.locator("#grid_prompt textarea"), "1girl, smile")
    for label, value in (("Width", 128), ("Height", 128), ("Prior steps", 2), ("Decoder steps", 1)):
        box = page.locator("#grid_layout").get_by_label(f"number input for {label}", exact=True)
        box.fill(str(value))
        box.press("Enter")
    pick(page, "grid_x", "Prompt S/R")
    x_values = page.locator("#grid_x_values input, #grid_x_values textarea").first
    expect_value(x_values, "first: the text to find")  # the axis's example shows first
    x_values.fill("smile, frown")
    pick(page, "grid_y", "Prior CFG")
    y_values = page.locator("#grid_y_values input, #grid_y_values textarea").first
    expect_value(y_values, "4, 6, 8, 10")
    y_values.fill("4, 6")
    page.locator("#grid_run").click()
    page.locator("#grid_summary").filter(has_text="cells").wait_for(timeout=180_000)
    summary = page.locator("#grid_summary").inner_text()
    assert summary.startswith("4 cells in ") and "prior run 4 times" in summary
    assert page.locator("#grid img").count() == 1
    assert page.locator("#grid button[aria-label]").count() == 0  # no toolbar (Download, Fullscreen) over the labels
    assert page.locator("#grid_download").inner_text().startswith("Download the full-size sheet")
    # Each cell is on the page, captioned; clicking one takes its settings to Generate.
    cells = page.locator("#grid_cells .thumbnail-item")
    cells.first.wait_for()
    assert cells.count() == 4
    captions = page.locator("#grid_cells .caption-label").all_inner_texts()
    assert captions == ["Prompt S/R smile · Prior CFG 4", "Prompt S/R frown · Prior CFG 4",
                        "Prompt S/R smile · Prior CFG 6", "Prompt S/R frown · Prior CFG 6"]
    cells.nth(3).click()
    page.locator("#image_note").filter(has_text="applied the settings of grid cell 4").wait_for()
    expect_value(page.locator("#prompt textarea"), "frown")
    from playwright.sync_api import expect

    expect(page.locator("#generate_layout").get_by_label("number input for Prior CFG", exact=True)).to_have_value("6")


def test_reuse_settings_gives_the_prompt_each_image_really_got(page):
    from sote_ui.core import wildcards

    small_settings(page, prior_steps=2, decoder_steps=1)
    template = "{cat ears|dog ears}, __eye_color__"
    page.locator("#prompt textarea").fill(template)
    page.locator("#seed input").fill("710")
    generate_and_wait(page)
    click_thumbnail(page, 0)
    page.locator("#image_note").filter(has_text="selected: seed 710").wait_for()
    page.locator("#reuse_settings").click()
    page.locator("#image_note").filter(has_text="applied the settings of seed 710").wait_for()
    expect_value(page.locator("#prompt textarea"), wildcards.resolve(template, 710))


# Drafts: priors only, then finish the picked seeds -----------------------------------------------


def test_drafts_show_compositions_and_finish_only_the_picked_seeds(page):
    small_settings(page, prior_steps=2, decoder_steps=2)
    set_number(page, "Images", 3)
    page.locator("#seed input").fill("900")
    before = page.locator("#gallery .grid-container .thumbnail-item").count()
    page.locator("#drafts_box").get_by_text("Live previews and drafts").click()
    page.locator("#draft").click()
    page.locator("#drafts_note").filter(has_text="3 drafts").wait_for(timeout=180_000)
    assert "no decoder step run" in page.locator("#drafts_note").inner_text()
    captions = page.locator("#drafts .caption-label").all_inner_texts()
    assert captions == ["seed 900", "seed 901", "seed 902"]
    # A draft is picked by clicking its thumbnail (clicking again unpicks it); the seeds list follows.
    drafts = page.locator("#drafts .thumbnail-item")
    drafts.nth(1).click()
    drafts.nth(2).click()
    drafts.nth(1).click()
    page.wait_for_function("() => [...document.querySelectorAll('#picked input:checked')].length === 1")
    assert page.locator("#picked").get_by_label("902").is_checked()
    assert not page.locator("#picked").get_by_label("901").is_checked()
    if os.environ.get("UPDATE_SCREENSHOT") == "1":
        page.locator("#drafts_box").screenshot(path=str(ROOT / "docs" / "drafts.png"))
    page.locator("#finish").click()
    page.locator("#drafts_note").filter(has_text="finished 1 drafts").wait_for(timeout=180_000)
    assert "(1 reused their prior)" in page.locator("#drafts_note").inner_text()
    page.wait_for_function(f"() => document.querySelectorAll('#gallery .grid-container .thumbnail-item').length == {before + 1}")
    assert page.locator("#gallery .grid-container .caption-label").first.inner_text().startswith("seed 902")
