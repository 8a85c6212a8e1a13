"""The gallery in Chromium: every action acts on the image a person sees selected, and a new run
selects its first image."""

from __future__ import annotations

from support import click_thumbnail, expect_value, generate_and_wait, set_number, small_settings


def shown_seeds(page) -> tuple[str, str]:
    """The seed in the caption of the image the gallery shows large, and in its selected thumbnail."""
    large = page.locator("#gallery caption.caption").inner_text()
    thumb = page.locator("#gallery .grid-container .thumbnail-item.selected .caption-label").inner_text()
    return large.split(" · ")[0], thumb.split(" · ")[0]


def test_a_new_run_selects_its_first_image_and_the_actions_follow_it(page):
    small_settings(page, prior_steps=2, decoder_steps=1)
    page.locator("#seed input").fill("520")
    generate_and_wait(page)
    click_thumbnail(page, 0)
    page.locator("#image_note").filter(has_text="selected: seed 520").wait_for()

    page.locator("#prompt textarea").fill("1girl, solo, frown, school uniform")
    page.locator("#seed input").fill("530")
    generate_and_wait(page)
    # The note, the prompt box of the selected image and the gallery's own selection all name seed 530.
    page.locator("#image_note").filter(has_text="selected: seed 530").wait_for()
    assert "frown, school uniform" in page.locator("#selected_prompt textarea").input_value()
    assert shown_seeds(page) == ("seed 530", "seed 530")
    page.locator("#reuse_settings").click()
    page.locator("#image_note").filter(has_text="applied the settings of seed 530").wait_for()
    expect_value(page.locator("#seed input"), "530")


def test_portrait_thumbnails_show_the_whole_image(page):
    small_settings(page, prior_steps=2, decoder_steps=1)
    set_number(page, "Width", 256)
    set_number(page, "Height", 384)  # 2:3, the usual anime portrait
    page.locator("#seed input").fill("540")
    generate_and_wait(page)
    thumb = page.locator("#gallery .grid-container .thumbnail-item img").first
    assert thumb.evaluate("img => img.naturalHeight / img.naturalWidth") == 1.5  # a portrait...
    assert thumb.evaluate("img => getComputedStyle(img).objectFit") == "contain"  # ...shown whole, not cropped


def test_drafts_rewrite_the_status_line_and_summary_left_by_an_earlier_failure(page):
    small_settings(page, prior_steps=2, decoder_steps=1)
    good = page.locator("#prompt textarea").input_value()
    page.locator("#prompt textarea").fill("smile, " * 1200)  # past the prompt's character limit
    page.locator("#generate").click()
    page.locator("#status").filter(has_text="⚠️").wait_for(timeout=60_000)
    page.locator("#prompt textarea").fill(good)
    page.locator("#drafts_box").get_by_text("Live previews and drafts").click()
    page.locator("#draft").click()
    page.locator("#drafts_note").filter(has_text="1 drafts").wait_for(timeout=180_000)
    page.locator("#status").filter(has_text="1 drafts in").wait_for(timeout=10_000)
    assert "⚠️" not in page.locator("#status").inner_text()
    assert "1 drafts in" in page.locator("#summary").inner_text()
