"""Tag suggestions in Chromium come from the plain route beside the app, also while a run is going.

The page's script asks GET /sote_api/suggest_tags (not Gradio's queued /run route); the popup shows the
expected tag, and it still does while the GPU job runs.
"""

from __future__ import annotations

from playwright.sync_api import expect
from support import set_number, small_settings


def asked(page) -> list[str]:
    """The suggestion requests the page made, as paths."""
    return [url.split("?")[0].split("/", 3)[-1] for url in page.suggest_requests]


def watch(page) -> None:
    page.suggest_requests = []
    page.on("request", lambda r: page.suggest_requests.append(r.url) if "suggest" in r.url else None)


def test_typing_shows_the_popup_from_the_plain_route(page):
    watch(page)
    prompt = page.locator("#prompt textarea")
    prompt.fill("1girl, ")
    prompt.press("End")
    prompt.press_sequentially("long h", delay=30)
    first = page.locator("#tag_suggestions .sote-suggestion").first
    expect(first.locator(".sote-suggestion-text")).to_have_text("long hair")
    expect(first.locator(".sote-suggestion-count")).to_have_text("4.4M")
    assert asked(page) and set(asked(page)) == {"sote_api/suggest_tags"}
    prompt.press("Tab")
    assert prompt.input_value() == "1girl, long hair, "

    # The artist field asks for artists only, through the same route.
    artist = page.locator("#artist textarea, #artist input").first
    artist.press_sequentially("wlo", delay=30)
    expect(page.locator("#tag_suggestions .sote-suggestion-text").first).to_have_text("wlop")
    expect(page.locator("#tag_suggestions .sote-suggestion-category").first).to_have_text("artist")


def test_suggestions_show_while_a_run_is_going(page):
    watch(page)
    small_settings(page, prior_steps=60, decoder_steps=2)
    set_number(page, "Width", 640)
    set_number(page, "Height", 640)
    set_number(page, "Images", 6)  # a run that outlasts the check on a quiet machine too; Stop ends it
    page.locator("#generate").click()
    expect(page.locator("#stop")).to_be_enabled(timeout=30_000)
    negative = page.locator("#negative_prompt textarea")
    negative.fill("")
    negative.press_sequentially("blurr", delay=30)
    # A long wait allowed: a machine shared with other work can be slow, and this checks what shows, not how fast.
    expect(page.locator("#tag_suggestions .sote-suggestion-text").first).to_have_text("blurry", timeout=30_000)
    # The suggestion came while the run still went: Stop is still enabled.
    expect(page.locator("#stop")).to_be_enabled()
    assert set(asked(page)) == {"sote_api/suggest_tags"}
    page.locator("#stop").click()
    expect(page.locator("#stop")).to_be_disabled(timeout=120_000)
