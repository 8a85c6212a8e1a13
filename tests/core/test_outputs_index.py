"""The outputs folder as a list: newest first in pages, trash with undo, old trash emptied, names outside
the folder refused, and the bounded per-browser list of latest images."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from PIL import Image

from sote_ui.core.errors import InputError
from sote_ui.core.outputs_index import (
    TRASH,
    RecentByKey,
    empty_trash,
    list_outputs,
    move_to_trash,
    output_path,
    restore_from_trash,
)


def make_images(folder: Path, count: int, start: float = 1_700_000_000) -> list[str]:
    """``count`` PNGs, the i-th modified ``i`` minutes after ``start``; their names, oldest first."""
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for i in range(count):
        path = folder / f"sote-{i:03d}.png"
        Image.new("RGB", (8, 8), (i, 0, 0)).save(path)
        os.utime(path, (start + 60 * i, start + 60 * i))
        names.append(path.name)
    return names


def test_newest_first_in_pages_of_24(tmp_path):
    names = make_images(tmp_path, 50)
    (tmp_path / ".sote-051.png.x1.tmp").write_bytes(b"partial")  # a write in progress is no image yet
    (tmp_path / "notes.txt").write_text("not an image")
    first = list_outputs(tmp_path, 1)
    assert (first.total, first.pages, first.page) == (50, 3, 1)
    assert [f.name for f in first.files] == names[::-1][:24]
    third = list_outputs(tmp_path, 3)
    assert [f.name for f in third.files] == ["sote-001.png", "sote-000.png"]
    assert list_outputs(tmp_path, 99).page == 3  # past the end: the last page
    assert list_outputs(tmp_path, 0).page == 1
    assert list_outputs(tmp_path / "missing").total == 0


def test_trash_then_undo_brings_the_same_file_back(tmp_path):
    make_images(tmp_path, 3)
    data = (tmp_path / "sote-001.png").read_bytes()
    token = move_to_trash(tmp_path, "sote-001.png")
    assert not (tmp_path / "sote-001.png").exists()
    assert (tmp_path / TRASH / token).read_bytes() == data
    assert [f.name for f in list_outputs(tmp_path).files] == ["sote-002.png", "sote-000.png"]  # trash not listed
    assert restore_from_trash(tmp_path, token) == "sote-001.png"
    assert (tmp_path / "sote-001.png").read_bytes() == data
    assert list(os.scandir(tmp_path / TRASH)) == []
    with pytest.raises(InputError, match="no longer in the trash"):
        restore_from_trash(tmp_path, token)


def test_undo_never_replaces_a_file_that_took_the_name(tmp_path):
    make_images(tmp_path, 1)
    token = move_to_trash(tmp_path, "sote-000.png")
    Image.new("RGB", (4, 4)).save(tmp_path / "sote-000.png")
    newer = (tmp_path / "sote-000.png").read_bytes()
    assert restore_from_trash(tmp_path, token) == "sote-000-1.png"
    assert (tmp_path / "sote-000.png").read_bytes() == newer


@pytest.mark.parametrize("name", ["../secret.png", "/etc/passwd", "sub/x.png", "..", ".trash", "", "link.png",
                                  "notes.txt", "gone.png"])
def test_names_outside_the_folder_or_not_images_are_refused_in_one_line(tmp_path, name):
    folder = tmp_path / "outputs"
    make_images(folder, 1)
    (tmp_path / "secret.png").write_bytes(b"keep me")
    (folder / "notes.txt").write_text("x")
    (folder / "link.png").symlink_to(tmp_path / "secret.png")
    with pytest.raises(InputError) as caught:
        move_to_trash(folder, name)
    message = str(caught.value)
    assert "\n" not in message and str(tmp_path) not in message
    assert (tmp_path / "secret.png").read_bytes() == b"keep me"
    assert (folder / "link.png").is_symlink() and (folder / "notes.txt").exists()


def test_tokens_that_lead_outside_the_trash_are_refused(tmp_path):
    make_images(tmp_path / "outputs", 1)
    (tmp_path / "outputs" / TRASH).mkdir()
    (tmp_path / "1~x.png").write_bytes(b"outside")
    for token in ("../../1~x.png", "1~../x.png", "no-stamp.png", "1~"):
        with pytest.raises(InputError):
            restore_from_trash(tmp_path / "outputs", token)
    assert (tmp_path / "1~x.png").read_bytes() == b"outside"
    assert output_path(tmp_path / "outputs", "sote-000.png").name == "sote-000.png"


def test_trash_older_than_seven_days_is_emptied_and_newer_is_kept(tmp_path):
    make_images(tmp_path, 3)
    day = 86400
    now = 1_800_000_000
    old = move_to_trash(tmp_path, "sote-000.png", now=now - 8 * day)
    recent = move_to_trash(tmp_path, "sote-001.png", now=now - 6 * day)
    assert empty_trash(tmp_path, now=now) == 1
    assert not (tmp_path / TRASH / old).exists()
    assert (tmp_path / TRASH / recent).exists()
    assert (tmp_path / "sote-002.png").exists()  # the outputs themselves are never touched


def test_recent_images_per_browser_are_bounded():
    now = [0.0]
    recent = RecentByKey(per_key=48, ttl=86400, max_keys=3, clock=lambda: now[0])
    recent.add("a", list(range(30)))
    recent.add("a", list(range(30, 60)))
    assert recent.get("a") == list(range(12, 60))  # the last 48
    recent.add("b", ["b1"])
    now[0] = 86400 + 1  # a day after "a" and "b" last changed
    recent.add("c", ["c1"])
    assert recent.get("a") == [] and recent.get("b") == [] and recent.get("c") == ["c1"]
    for key in "defg":
        recent.add(key, [key])
    assert recent.get("c") == [] and recent.get("d") == []  # at most 3 browsers: the oldest went
    assert recent.get("g") == ["g"]
