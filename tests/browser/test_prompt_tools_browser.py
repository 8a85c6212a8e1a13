"""Prompt tools in a real browser: tag suggestions, weights, Ctrl+Enter and the prompt history.

Same setup as test_ui_browser.py (the app served in-process in demo mode, Debian's chromium through
Playwright; fixtures in conftest.py). With UPDATE_SCREENSHOT=1 the suggestion list is saved to docs/suggestions.png, cropped to
the prompt area.
"""

from __future__ import annotations

import os

import httpx
import pytest
from support import ROOT, pick, set_number, toast

SUGGESTIONS_SHOT = ROOT / "docs" / "suggestions.png"


@pytest.fixture
def fresh(page, app):
    """The page, freshly loaded, with page errors collected."""
    url = app.url
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(url, wait_until="domcontentloaded")
    page.locator("#prompt textarea").wait_for()
    yield page, errors
    assert errors == []


def test_typing_long_h_suggests_long_hair_and_tab_inserts_it(fresh, tmp_path):
    page, _ = fresh
    prompt = page.locator("#prompt textarea")
    prompt.click()
    prompt.press_sequentially("long h", delay=30)
    first = page.locator("#tag_suggestions .sote-suggestion").first
    first.wait_for(state="visible")
    assert first.locator(".sote-suggestion-text").inner_text() == "long hair"
    assert first.locator(".sote-suggestion-category").inner_text() == "general"
    assert first.locator(".sote-suggestion-count").inner_text() == "4.4M"
    assert first.get_attribute("aria-selected") == "true"

    if os.environ.get("UPDATE_SCREENSHOT") == "1":
        box, listing = page.locator("#prompt").bounding_box(), page.locator("#tag_suggestions").bounding_box()
        top, left = box["y"] - 8, box["x"] - 8
        clip = {"x": left, "y": top, "width": max(box["x"] + box["width"], listing["x"] + listing["width"]) - left + 8,
                "height": listing["y"] + listing["height"] - top + 8}
        page.screenshot(path=str(SUGGESTIONS_SHOT), clip=clip)
        assert SUGGESTIONS_SHOT.stat().st_size > 5_000

    prompt.press("Tab")
    assert prompt.input_value() == "long hair, "
    assert not page.locator("#tag_suggestions").is_visible()

    # Arrows move, Enter inserts; the alias /lh finds long hair; Esc closes.
    prompt.press_sequentially("kanzaki ranko (cos", delay=20)
    page.locator("#tag_suggestions .sote-suggestion-text").first.filter(
        has_text="kanzaki ranko \\(cosplay\\)").wait_for()
    prompt.press("Enter")
    assert prompt.input_value() == "long hair, kanzaki ranko \\(cosplay\\), "
    prompt.press_sequentially("smi", delay=30)
    page.locator("#tag_suggestions").wait_for(state="visible")
    prompt.press("Escape")
    assert not page.locator("#tag_suggestions").is_visible()
    assert prompt.input_value() == "long hair, kanzaki ranko \\(cosplay\\), smi"


def test_clicking_a_suggestion_and_the_artist_field(fresh):
    page, _ = fresh
    negative = page.locator("#negative_prompt textarea")
    negative.fill("")
    negative.press_sequentially("/lh", delay=30)
    option = page.locator("#tag_suggestions .sote-suggestion").first
    option.wait_for(state="visible")
    assert "/lh" in option.inner_text()
    option.click()
    assert negative.input_value() == "long hair, "

    artist = page.locator("#artist textarea, #artist input").first
    artist.press_sequentially("wlo", delay=30)
    first = page.locator("#tag_suggestions .sote-suggestion").first
    first.wait_for(state="visible")
    assert first.locator(".sote-suggestion-category").inner_text() == "artist"
    artist.press("Tab")
    assert artist.input_value() == "wlop"


def test_ctrl_up_and_down_change_the_weight_of_the_tag_at_the_cursor(fresh):
    page, _ = fresh
    prompt = page.locator("#prompt textarea")
    prompt.fill("1girl, long hair, smile")
    prompt.evaluate("el => el.setSelectionRange(10, 10)")  # inside "long hair"
    prompt.press("Control+ArrowUp")
    assert prompt.input_value() == "1girl, (long hair:1.1), smile"
    prompt.press("Control+ArrowUp")
    assert prompt.input_value() == "1girl, (long hair:1.2), smile"
    prompt.press("Control+ArrowDown")
    prompt.press("Control+ArrowDown")
    assert prompt.input_value() == "1girl, long hair, smile"
    prompt.press("Control+ArrowDown")
    assert prompt.input_value() == "1girl, (long hair:0.9), smile"
    # a selection is weighted as a whole
    prompt.fill("1girl, smile")
    prompt.evaluate("el => el.setSelectionRange(0, 12)")
    prompt.press("Control+ArrowUp")
    assert prompt.input_value() == "(1girl, smile:1.1)"
    # the preview of the prompt sent follows the edit
    page.locator("#composed code").filter(has_text="(1girl, smile:1.1)").wait_for()


def test_ctrl_enter_generates_with_wildcards_and_the_prompt_lands_in_history(fresh, app):
    page, _ = fresh
    url = app.url
    pick(page, "resolution", "custom")
    for label, value in (("Width", 128), ("Height", 128), ("Prior steps (stage C)", 2),
                         ("Decoder steps (stage B)", 1)):
        set_number(page, label, value)
    prompt = page.locator("#prompt textarea")
    template = "1girl, {red|blue} hair, __eye_color__"
    prompt.fill(template)
    prompt.press("Control+Enter")
    page.locator("#gallery img").first.wait_for(state="visible", timeout=180_000)
    page.locator("#summary").filter(has_text="1 image in").wait_for()
    page.locator("#report_box > button").click()  # the full report is folded away
    page.locator("#report").filter(has_text="decoder_steps_run").wait_for()
    report = page.locator("#report").inner_text()
    assert "{red|blue}" in report  # the report shows the template; each image its own pick
    shown = page.locator("#gallery").inner_text()
    eye_colours = [line for line in (ROOT / "wildcards" / "eye_color.txt").read_text().splitlines()
                   if line and not line.startswith("#")]
    assert ("red hair" in shown or "blue hair" in shown) and "{" not in shown and "__" not in shown, shown
    assert any(colour in shown for colour in eye_colours), shown  # a line of the wildcard file, whichever
    assert prompt.input_value() == template  # the box keeps the template for the next run

    # The history, opened from the button by the prompt box, lists the template; one click on it puts it
    # back after the box was changed (with a toast, the focus on the prompt); one click on its ☆ stars it.
    prompt.fill("something else")
    page.locator("#open_history").click()
    entry = page.locator("#history_list .virtual-row .body-cell", has_text="{red|blue} hair").first
    entry.wait_for()
    entry.click()
    page.wait_for_function("t => document.querySelector('#prompt textarea').value === t", arg=template)
    toast(page, "the prompt from the history is in the prompt box").wait_for()
    page.wait_for_function("() => document.activeElement === document.querySelector('#prompt textarea')")
    row = page.locator("#history_list .virtual-row", has_text="{red|blue} hair").first
    row.locator(".body-cell").first.click()  # on its ☆
    page.locator("#history_list .virtual-row", has_text="{red|blue} hair").locator(".body-cell", has_text="★").first.wait_for()
    stored = httpx.post(url.rstrip("/") + "/gradio_api/run/prompt_history", json={"data": ["red|blue"]}).json()
    (entry_data,) = stored["data"][0]
    assert entry_data["settings"]["prompt"] == template and entry_data["starred"] is True


def test_tags_past_the_third_chunk_are_named_under_the_prompt(fresh):
    page, _ = fresh
    # the model is loaded (the page waited for it); the counts are the encoder's own split
    parts = [f"{word} {i}" for i, word in enumerate(["long hair", "blue eyes", "school uniform", "smile"] * 20)]
    prompt = page.locator("#prompt textarea")
    prompt.fill(", ".join(parts))
    marked = page.locator("#composed", has_text="Past the third chunk")
    marked.wait_for()
    text = marked.inner_text()
    assert "chunks (" in text and "tokens)" in text
    # the named tags are the prompt's tail: "(N tags, weaker): first, second, ... and M more"
    named = text.split("Past the third chunk (")[1]
    count = int(named.split(" tags")[0])
    first = named.split("weaker): ")[1].split(", ")[0]
    assert parts.index(first) == len(parts) - count > 0
    prompt.fill("1girl, smile")
    page.locator("#composed", has_text="1 of 3 chunks").wait_for()
    assert "Past the third chunk" not in page.locator("#composed").inner_text()


def test_ctrl_enter_in_the_compare_tab_runs_the_comparison(fresh):
    page, _ = fresh
    page.get_by_role("tab", name="Compare").click()
    box = page.locator("#compare_prompt textarea")
    box.wait_for()
    compare_id = page.evaluate(
        "() => window.gradio_config.components.find(c => c.props && c.props.elem_id === 'compare').id")

    def triggered_by_compare(request) -> bool:
        return "queue/join" in request.url and (request.post_data_json or {}).get("trigger_id") == compare_id

    # See that the page asks for the comparison, without running a full-size one on the tiny model.
    page.route("**/queue/join*", lambda route: route.abort())
    try:
        box.fill("1girl, smile")
        with page.expect_request(triggered_by_compare, timeout=10_000) as asked:
            box.press("Control+Enter")
    finally:
        page.unroute("**/queue/join*")
    assert asked.value.post_data_json["data"]  # the comparison's inputs went with it
