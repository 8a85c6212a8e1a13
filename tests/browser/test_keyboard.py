"""The keyboard in Chromium: few Tab stops from the prompt to the gallery, no dropdown list left open
behind the focus, Esc stops a run, Alt+G jumps to the gallery, and the shortcuts are listed."""

from __future__ import annotations

from support import generate_and_wait, set_number, small_settings


def focused_id(page) -> str:
    """The elem_id of the block holding the focus."""
    return page.evaluate("() => { const el = document.activeElement; const block = el && el.closest('[id]');"
                         " return block ? block.id : ''; }")


def test_slider_reset_buttons_are_not_tab_stops(page):
    resets = page.locator("#size_steps button.reset-button")
    assert resets.count() >= 4
    assert all(resets.nth(i).get_attribute("tabindex") == "-1" for i in range(resets.count()))


def test_tabbing_past_the_tag_pickers_leaves_no_list_open(page):
    page.locator("input[role=combobox]").first.focus()
    for _ in range(10):  # through the tag pickers, the prompt and the Resolution picker
        page.keyboard.press("Tab")
        page.wait_for_timeout(150)
    page.wait_for_timeout(300)
    # No "✓ value" list stays over the labels: any list still shown belongs to the dropdown with the focus.
    assert page.get_by_text("✓").filter(visible=True).count() == page.evaluate(
        "() => { const wrap = document.activeElement && document.activeElement.closest('.wrap');"
        " return wrap ? [...wrap.querySelectorAll('[role=option].selected')].filter(e => e.offsetParent).length : 0; }")


def test_alt_g_jumps_to_the_gallery_and_escape_stops_a_run(page):
    small_settings(page, prior_steps=2, decoder_steps=1)
    page.locator("#seed input").fill("560")
    generate_and_wait(page)
    page.locator("#prompt textarea").focus()
    page.keyboard.press("Alt+g")
    assert page.evaluate("() => !!document.activeElement.closest('#gallery')")

    small_settings(page, prior_steps=60, decoder_steps=2)
    set_number(page, "Images", 4)  # a run long enough that Esc lands while it goes, even on a busy machine
    page.locator("#generate").click()
    page.locator("#status").filter(has_text="step").wait_for(timeout=120_000)
    page.locator("#prompt textarea").focus()
    page.keyboard.press("Escape")
    page.locator("#status").filter(has_text="stopped").wait_for(timeout=120_000)


def test_the_shortcuts_are_listed_in_a_help_popover(page):
    page.locator("#shortcuts summary").click()
    text = page.locator("#shortcuts").inner_text()
    for line in ("Ctrl+Enter", "Esc", "Alt+G", "Ctrl+Up"):
        assert line in text
