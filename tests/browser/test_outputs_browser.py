"""The Outputs tab in Chromium: the folder newest first in pages of 24, an image's settings on select,
Reuse settings to Generate, and delete to the trash with Undo (the file checked on disk)."""

from __future__ import annotations

import os
import shutil
import time

import pytest
from support import SMALL, expect_value


@pytest.fixture(scope="module")
def filled(live_app):
    """The outputs folder: 25 older copies and then two real images, seeds 701 and then 702."""
    studio = live_app.studio
    first, _ = studio.generate({**SMALL, "prior_steps": 2, "decoder_steps": 1, "seed": 701})
    folder = live_app.outputs
    past = time.time() - 3600
    for i in range(25):
        copy = folder / f"older-{i:02d}.png"
        shutil.copyfile(first[0].path, copy)
        os.utime(copy, (past + i, past + i))
    time.sleep(1.1)  # the newer file is newer by the clock of any file system
    second, _ = studio.generate({**SMALL, "prompt": "1girl, solo, frown", "prior_steps": 2, "decoder_steps": 1,
                                 "seed": 702})
    return first[0].path, second[0].path


def open_outputs(page) -> None:
    page.get_by_role("tab", name="Outputs").click()
    page.locator("#outputs_page").filter(has_text="page 1 of 2").wait_for()


def captions(page) -> list[str]:
    return page.locator("#outputs_gallery .grid-container .thumbnail-item .caption-label").all_inner_texts()


def test_newest_first_in_pages(page, filled):
    open_outputs(page)
    assert "27 images" in page.locator("#outputs_page").inner_text()
    names = captions(page)
    assert len(names) == 24
    assert names[:2] == [os.path.basename(filled[1]), os.path.basename(filled[0])]
    assert names[2:5] == ["older-24.png", "older-23.png", "older-22.png"]
    page.locator("#outputs_older").click()
    page.locator("#outputs_page").filter(has_text="page 2 of 2").wait_for()
    page.wait_for_function("() => document.querySelectorAll('#outputs_gallery .grid-container .thumbnail-item')"
                           ".length === 3")
    assert captions(page) == ["older-02.png", "older-01.png", "older-00.png"]
    page.locator("#outputs_newer").click()
    page.locator("#outputs_page").filter(has_text="page 1 of 2").wait_for()


def test_select_shows_the_settings_and_reuse_sets_the_seed(page, filled):
    open_outputs(page)
    page.locator("#outputs_gallery .grid-container .thumbnail-item").first.click()
    page.locator("#outputs_info").filter(has_text="selected: seed 702, 256x256").wait_for()
    expect_value(page.locator("#outputs_prompt textarea"), "1girl, solo, frown")
    page.locator("#outputs_reuse").click()
    page.locator("#image_note").filter(has_text="applied the settings of").wait_for()
    expect_value(page.locator("#seed input"), "702")
    expect_value(page.locator("#prompt textarea"), "1girl, solo, frown")


def test_delete_then_undo_brings_the_file_back(page, app, filled):
    newest = filled[1]
    data = open(newest, "rb").read()
    open_outputs(page)
    page.locator("#outputs_gallery .grid-container .thumbnail-item").first.click()
    page.locator("#outputs_info").filter(has_text="seed 702").wait_for()
    page.locator("#outputs_delete").click()
    page.locator("#outputs_note").filter(has_text="moved").wait_for()
    assert not os.path.exists(newest)
    trashed = list((app.outputs / ".trash").iterdir())
    assert [p.name.split("~", 1)[1] for p in trashed] == [os.path.basename(newest)]
    page.locator("#outputs_page").filter(has_text="26 images").wait_for()
    assert os.path.basename(newest) not in captions(page)

    page.locator("#outputs_undo").click()
    page.locator("#outputs_note").filter(has_text="brought").wait_for()
    assert open(newest, "rb").read() == data
    assert list((app.outputs / ".trash").iterdir()) == []
    page.locator("#outputs_page").filter(has_text="27 images").wait_for()
    assert captions(page)[0] == os.path.basename(newest)
