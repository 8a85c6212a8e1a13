"""A reload loses nothing: the form comes back as it was, and the gallery shows the images this browser made,
also those of a run that was still going when the page reloaded."""

from __future__ import annotations

from support import expect_dropdown, expect_number, expect_value, pick, set_number, small_settings


def reload(page) -> None:
    page.reload(wait_until="domcontentloaded")
    page.locator("#prompt textarea").wait_for()


def thumbnails(page):
    """The gallery's images in the strip under the large view (a restored gallery selects its newest)."""
    return page.locator("#gallery .preview .thumbnail-item")


def test_the_form_comes_back_after_a_reload(page):
    page.locator("#prompt textarea").fill("1girl, solo, umbrella, rain")
    page.locator("#negative_prompt textarea").fill("lowres, blurry")
    pick(page, "rating", "sensitive")
    pick(page, "resolution", "custom")
    set_number(page, "Width", 384)
    set_number(page, "Height", 640)
    set_number(page, "Prior steps (stage C)", 7)
    page.locator("#seed input").fill("4242")
    page.locator("#seed input").blur()
    page.locator("#artist input, #artist textarea").first.fill("someone")
    page.wait_for_timeout(1500)  # the last change reaches the browser's storage

    reload(page)
    expect_value(page.locator("#prompt textarea"), "1girl, solo, umbrella, rain")
    expect_value(page.locator("#negative_prompt textarea"), "lowres, blurry")
    expect_dropdown(page, "rating", "sensitive")
    expect_dropdown(page, "resolution", "custom")
    expect_number(page, "Width", 384)
    expect_number(page, "Height", 640)
    expect_number(page, "Prior steps (stage C)", 7)
    expect_value(page.locator("#seed input"), "4242")
    expect_value(page.locator("#artist input, #artist textarea").first, "someone")


def test_a_finished_image_is_in_the_gallery_after_a_reload(page):
    small_settings(page, prior_steps=2, decoder_steps=1)
    page.locator("#seed input").fill("610")
    page.locator("#generate").click()
    page.locator("#summary").filter(has_text="image").wait_for(timeout=180_000)
    reload(page)
    thumbnails(page).first.wait_for(timeout=30_000)
    assert thumbnails(page).count() == 1
    page.locator("#image_note").filter(has_text="selected: seed 610").wait_for()
    assert page.locator("#gallery caption.caption").inner_text().startswith("seed 610 · 1girl, solo, smile")


def test_a_run_still_going_at_the_reload_shows_its_image_when_it_ends(page, app):
    # Six images, long enough that the run outlasts the reload on a quiet machine too.
    small_settings(page, prior_steps=80, decoder_steps=20)
    set_number(page, "Width", 640)
    set_number(page, "Height", 640)
    set_number(page, "Images", 6)
    page.locator("#seed input").fill("620")
    page.locator("#generate").click()
    page.locator("#status").filter(has_text="image 1/6").wait_for(timeout=60_000)  # it runs
    reload(page)
    page.locator("#status").filter(has_text="a run from before the reload is still going").wait_for(timeout=20_000)
    page.locator("#status").filter(has_text="the run from before the reload has finished").wait_for(timeout=180_000)
    thumbnails(page).first.wait_for(timeout=10_000)
    page.locator("#image_note").filter(has_text="selected: seed 620").wait_for()
    assert sorted(p.name for p in app.outputs.glob("*-620.png"))  # the file the gallery shows was saved
