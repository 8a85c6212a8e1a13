"""Re-decode in Chromium: a finished image, a new decoder seed and steps, and a new version joins the gallery,
selected, while the status says the prior did not run again."""

from __future__ import annotations

from playwright.sync_api import expect
from support import generate_and_wait, small_settings

THUMBS = "#gallery .grid-container .thumbnail-item"


def test_redecode_the_selected_image(page, app):
    small_settings(page)
    page.locator("#seed input").fill("515")
    generate_and_wait(page)
    runs = app.studio.engine.counters.prior_runs
    page.locator("#redecode_box > button").click()
    page.locator("#redecode_seed textarea, #redecode_seed input").first.fill("77")
    page.locator("#redecode_steps textarea, #redecode_steps input").first.fill("3")
    page.locator("#redecode").click()
    expect(page.locator("#status")).to_contain_text(
        "re-decoded seed 515 with decoder seed 77: 3 decoder steps at CFG 1", timeout=120_000)
    expect(page.locator("#status")).to_contain_text("the prior did not run again")
    expect(page.locator(THUMBS)).to_have_count(2)
    # The new version is the one selected, and the line about it says so.
    expect(page.locator("#image_note")).to_contain_text("selected: seed 515, 256x256, prior 3 steps at CFG 8, "
                                                        "decoder 3 steps at CFG 1")
    assert app.studio.engine.counters.prior_runs == runs

    # A bad value is one line, and the gallery keeps its two images.
    page.locator("#redecode_steps textarea, #redecode_steps input").first.fill("many")
    page.locator("#redecode").click()
    expect(page.locator("#status")).to_contain_text("decoder steps must be a whole number or empty, got 'many'")
    expect(page.locator(THUMBS)).to_have_count(2)
