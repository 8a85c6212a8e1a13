"""Compare in Chromium: it starts from the Generate tab's tags, says which seed the slider shows, takes
the settings of the pair a person picked, names its files A and B, and shows the sheet."""

from __future__ import annotations

from support import expect_value


def test_compare_follows_generate_and_the_picked_pair(page):
    page.locator("#prompt textarea").fill("1girl, solo, cat ears")
    page.get_by_role("tab", name="Compare").click()
    expect_value(page.locator("#compare_prompt textarea"), "1girl, solo, cat ears")  # prefilled from Generate

    for elem_id, value in (("compare_width", 128), ("compare_height", 128), ("compare_prior_steps", 2),
                           ("compare_decoder_steps", 1)):
        page.locator(f"#{elem_id} input").fill(str(value))
    page.locator("#compare_seed input").fill("42")
    page.locator("#compare_seeds input[type=number]").fill("2")
    page.locator("#compare_seeds input[type=number]").press("Enter")
    page.locator("#compare").click()
    page.locator("#compare_summary").filter(has_text="seeds 42").wait_for(timeout=180_000)
    assert page.locator("#compare_slider").get_by_text("seed 42").count() >= 1

    # The sheet is on the page, and the files say which side they are.
    page.get_by_text("Sheet: every seed's A and B").click()
    page.locator("#compare_sheet img").first.wait_for()
    assert page.locator("#compare_sheet").get_by_role("button", name="Download").count() == 1
    thumbs = page.locator("#compare_thumbs .thumbnail-item")
    assert thumbs.count() == 4
    titles = [thumbs.nth(i).locator("img").get_attribute("src") for i in range(4)]
    assert [t.rsplit("/", 1)[-1].split(".")[0][-2:] for t in titles] == ["-A", "-B", "-A", "-B"]

    # Pick seed 43's B, then take B's settings: the seed is 43, not the first pair's 42.
    thumbs.nth(3).click()
    page.locator("#compare_slider").get_by_text("seed 43").first.wait_for()
    page.locator("#use_b").click()
    page.locator("#image_note").filter(has_text="applied B's settings").wait_for()
    expect_value(page.locator("#seed input"), "43")
