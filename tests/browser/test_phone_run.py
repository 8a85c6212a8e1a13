"""A run on a phone: after tapping the sticky Generate the results are on screen, and the progress shows
in the sticky bar while the run goes on."""

from __future__ import annotations

from support import PHONE, small_settings


def on_screen(box) -> bool:
    return box is not None and box["y"] < PHONE["height"] and box["y"] + box["height"] > 0


def test_tapping_generate_on_a_phone_shows_the_results_and_the_progress(phone):
    phone.get_by_text("Size, steps, CFG and seed").click()  # folded on a phone
    small_settings(phone, prior_steps=30, decoder_steps=2)
    phone.locator("#prompt textarea").scroll_into_view_if_needed()
    assert not on_screen(phone.locator("#gallery").bounding_box())  # the results are far below the form
    phone.locator("#generate").click()
    # While it runs: the progress is in the sticky bar, on screen wherever the page is scrolled.
    phone.locator("#status").filter(has_text="step").wait_for(timeout=120_000)
    status = phone.locator("#status").bounding_box()
    assert on_screen(status) and status["y"] > PHONE["height"] / 2
    phone.wait_for_function("() => document.querySelectorAll('#gallery .grid-container .thumbnail-item').length >= 1",
                            timeout=180_000)
    assert on_screen(phone.locator("#gallery").bounding_box())  # scrolled to the results
