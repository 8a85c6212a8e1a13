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


def test_on_a_phone_the_tag_buttons_wrap_and_a_click_runs_the_a_b(phone):
    phone.locator("#prompt textarea").fill("1girl, solo, cat ears, school uniform, looking at viewer")
    chips = phone.locator("#ab_tags .sote-ab-tag")
    expect(chips.filter(has_text="cat ears")).to_have_count(1)
    width = phone.evaluate("() => { const r = document.getElementById('ab_tags'); "
                           "return [r.scrollWidth, r.clientWidth, r.getBoundingClientRect().right]; }")
    assert width[0] <= width[1] and width[2] <= 390  # no button runs off the screen
    phone.locator("#size_steps > button").click()  # folded on a phone
    phone.get_by_label("number input for Width", exact=True).wait_for()
    for elem_id, value in (("Width", 128), ("Height", 128), ("Prior steps (stage C)", 2),
                           ("Decoder steps (stage B)", 1)):
        box = phone.get_by_label(f"number input for {elem_id}", exact=True)
        box.fill(str(value))
        box.press("Enter")
    phone.locator("#seed input").fill("31")
    chips.filter(has_text="cat ears").click()
    expect(phone.locator("#compare_summary")).to_contain_text("seed 31", timeout=180_000)
    assert dropdown_text(phone, "preset_b") == "(without cat ears)"
