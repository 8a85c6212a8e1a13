"""Runs in Chromium as an illustrator sees them: each image joins the gallery as it is done, the live
preview leads the gallery, Skip keeps the other images of the batch, Stop and finish still yields the
image in progress."""

from __future__ import annotations

import re

from playwright.sync_api import expect
from support import set_number, small_settings

CAPTIONS = "[...document.querySelectorAll('#gallery .grid-container .thumbnail-item .caption-label')]" \
           ".map(e => e.innerText)"


def start(page, seed: int, images: int) -> None:
    """A batch whose priors are long enough (80 steps at 768x768: seconds each, even on a busy machine)
    to act while one runs."""
    small_settings(page, prior_steps=80, decoder_steps=2)
    set_number(page, "Width", 768)
    set_number(page, "Height", 768)
    set_number(page, "Images", images)
    page.locator("#seed input").fill(str(seed))
    page.locator("#generate").click()


def while_running(page, condition: str) -> list[str]:
    """Wait for ``condition`` (JS over ``captions``) to hold while the run still goes (Stop enabled);
    returns the gallery's captions at that moment."""
    return page.wait_for_function(
        f"() => {{ const captions = {CAPTIONS}; const stop = document.querySelector('#stop button, button#stop');"
        f" return stop && !stop.disabled && ({condition}) ? captions : null; }}", timeout=120_000).json_value()


def captions(page) -> list[str]:
    return page.evaluate(f"() => {CAPTIONS}")


def test_each_image_joins_the_gallery_as_it_is_done_and_the_preview_leads_it(page):
    start(page, 600, 2)
    # The live preview is the gallery's first item, not a panel of its own.
    shown = while_running(page, "captions.length && /^live preview · step \\d+\\/80 · image 1\\/2$/.test(captions[0])")
    assert page.locator("#live_preview").is_hidden()
    assert not any(c.startswith("seed") for c in shown)
    # Image 1 is in the gallery while image 2 is still being made (its preview leads).
    shown = while_running(page, "captions.some(c => c.startsWith('seed 600')) && captions[0].includes('image 2/2')")
    assert [c.split(" · ")[0] for c in shown[1:]] == ["seed 600"]
    page.locator("#summary").filter(has_text="2 images").wait_for(timeout=120_000)
    expect(page.locator("#stop")).to_be_disabled()
    assert [c.split(" · ")[0] for c in captions(page)] == ["seed 600", "seed 601"]  # the preview is gone
    page.locator("#image_note").filter(has_text="selected: seed 600").wait_for()  # the run's first, as before


def test_skip_drops_the_image_in_progress_and_keeps_the_others(page):
    start(page, 610, 3)
    # Image 2 of 3 runs now, early in its prior: the click lands well before it ends, even on a busy machine.
    while_running(page, "captions.some(c => c.startsWith('seed 610')) && "
                        "/^live preview · step ([1-9]|[1-3]\\d|40)\\/80 · image 2\\/3$/.test(captions[0])")
    expect(page.locator("#skip")).to_be_enabled()
    page.locator("#skip").click()
    page.locator(".toast-body").filter(has_text="skipping the image in progress").wait_for()
    summary = page.locator("#summary").filter(has_text="skipped seed")
    summary.wait_for(timeout=120_000)
    # The image in progress when the click reached the server is dropped: 611, or 612 where a busy machine
    # delivered the click after 611 was done (then 611 is kept whole).
    found = re.search(r"skipped seed (61[12])$", summary.inner_text())
    assert found, summary.inner_text()
    kept = [seed for seed in (610, 611, 612) if seed != int(found.group(1))]
    assert [c.split(" · ")[0] for c in captions(page)] == [f"seed {seed}" for seed in kept]
    assert summary.inner_text().startswith("2 images in")
    expect(page.locator("#skip")).to_be_disabled()


def test_stop_and_finish_yields_the_image_in_progress(page):
    start(page, 620, 2)
    # Image 1's prior runs, early enough that the click lands before it ends.
    while_running(page, "captions.length && /^live preview · step ([1-9]|[1-3]\\d|40)\\/80 · image 1\\/2$/.test(captions[0])")
    page.locator("#stop_and_finish").click()
    expect(page.locator("#stop_and_finish")).to_have_text("Finishing…")
    summary = page.locator("#summary").filter(has_text="finished from its prior")
    summary.wait_for(timeout=120_000)
    # The image in progress when the click arrived is finished: 620, or 621 if a busy machine ended 620's
    # prior first (then 620 is finished whole and kept too).
    found = re.search(r"seed (62[01]) finished from its prior stopped at step (\d+)/80", summary.inner_text())
    assert found, summary.inner_text()
    seed, step = int(found.group(1)), int(found.group(2))
    assert 1 <= step < 80
    kept = list(range(620, seed + 1))
    assert f"stopped after {len(kept)} finished image" in page.locator("#status").inner_text()
    assert sorted(c.split(" · ")[0] for c in captions(page)) == [f"seed {s}" for s in kept]
    expect(page.locator("#stop_and_finish")).to_have_text("Stop and finish")
    expect(page.locator("#stop_and_finish")).to_be_disabled()


def test_on_a_phone_the_four_buttons_share_one_row_at_the_bottom(phone):
    boxes = [phone.locator(f"#{name}").bounding_box() for name in ("generate", "stop", "skip", "stop_and_finish")]
    assert len({round(box["y"]) for box in boxes}) == 1  # one row, not wrapped
    assert all(box["x"] >= 0 and box["x"] + box["width"] <= 390 for box in boxes)
    assert boxes[0]["y"] + boxes[0]["height"] <= 844 and boxes[0]["y"] > 844 - 72  # the bar's usual height
