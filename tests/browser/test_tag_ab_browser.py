"""Tag-level A/B in Chromium: the tags of the prompt as sent are buttons under the prompt box; clicking one fills
Compare with the image as it is (A) and without that tag (B) at the same seed, and runs it."""

from __future__ import annotations

from playwright.sync_api import expect
from support import dropdown_text, generate_and_wait, small_settings


def test_clicking_a_tag_compares_with_and_without_it_at_the_same_seed(page, app):
    small_settings(page)
    page.locator("#seed input").fill("900")
    generate_and_wait(page)
    runs = app.studio.engine.counters.prior_runs
    chips = page.locator("#ab_tags .sote-ab-tag")
    expect(chips.filter(has_text="hoodie")).to_have_count(1)
    assert "very aesthetic" in chips.all_inner_texts()  # a picker's value is a tag too
    chips.filter(has_text="smile").click()

    expect(page.locator("#compare_summary")).to_contain_text("seed 900", timeout=180_000)
    assert dropdown_text(page, "preset_a") == "(with smile)"
    assert dropdown_text(page, "preset_b") == "(without smile)"
    expect(page.locator("#compare_slider").get_by_text("seed 900").first).to_be_visible()
    diff = page.locator("#compare_diff")
    expect(diff).to_contain_text("1girl, solo, smile, hoodie")
    expect(diff).to_contain_text("1girl, solo, hoodie")
    # A is the image just made: its prior came from the cache; only B's prior ran.
    assert app.studio.engine.counters.prior_runs == runs + 1
    assert page.locator("#compare_thumbs .thumbnail-item").count() == 2
