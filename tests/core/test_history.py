"""Prompt history: newest first, de-duplicated, bounded, starred entries kept, searchable, stored atomically."""

from __future__ import annotations

import json

import pytest
from support import ROOT

from sote_ui.core import history
from sote_ui.core.errors import InputError
from sote_ui.core.history import HistoryFile, add, clean, find, label, search, star


def values(prompt, negative="worst quality", **more):
    return {"prompt": prompt, "negative_prompt": negative, "prior_cfg": 8.0, "seed": 5, "count": 2, **more}


def test_newest_first_and_deduplicated_with_latest_settings():
    entries = add([], values("1girl, solo"), when=1)
    entries = add(entries, values("1boy"), when=2)
    entries = add(entries, values("1girl, solo", prior_cfg=6.0), when=3)
    assert [e["settings"]["prompt"] for e in entries] == ["1girl, solo", "1boy"]
    assert entries[0]["settings"]["prior_cfg"] == 6.0 and entries[0]["time"] == 3
    assert "seed" not in entries[0]["settings"] and "count" not in entries[0]["settings"]
    # another negative prompt is another entry
    assert len(add(entries, values("1boy", negative="lowres"))) == 3


def test_bounded_but_starred_entries_stay():
    entries = add([], values("keep me"), when=0)
    entries = star(entries, entries[0]["id"])
    for i in range(history.MAX_ENTRIES + 30):
        entries = add(entries, values(f"prompt {i}"), when=i + 1)
    assert len(entries) == history.MAX_ENTRIES + 1
    assert entries[-1]["settings"]["prompt"] == "keep me" and entries[-1]["starred"]
    assert entries[0]["settings"]["prompt"] == f"prompt {history.MAX_ENTRIES + 29}"
    assert find(entries, history.entry_id("prompt 0", "worst quality")) is None


def test_star_toggles_and_survives_a_repeat():
    entries = add([], values("a"))
    key = entries[0]["id"]
    entries = star(entries, key)
    assert entries[0]["starred"] and label(entries[0]).startswith("★ a")
    entries = add(entries, values("a", prior_cfg=5.0))
    assert entries[0]["starred"]
    assert not star(entries, key)[0]["starred"]


def test_search_matches_all_words_in_prompt_or_negative():
    entries = add([], values("1girl, long hair, smile"))
    entries = add(entries, values("1boy, short hair", negative="lowres"))
    assert [e["settings"]["prompt"] for e in search(entries, "HAIR")] == ["1boy, short hair", "1girl, long hair, smile"]
    assert [e["settings"]["prompt"] for e in search(entries, "hair smile")] == ["1girl, long hair, smile"]
    assert [e["settings"]["prompt"] for e in search(entries, "lowres")] == ["1boy, short hair"]
    assert search(entries, "", starred_only=True) == []


def test_file_roundtrip_is_atomic_and_a_corrupt_file_is_kept_aside(tmp_path):
    store = HistoryFile(tmp_path / "home" / "history.json")
    assert store.load() == []
    entries = add([], values("1girl"))
    store.save(entries)
    assert store.load() == entries
    assert [p.name for p in store.path.parent.iterdir()] == ["history.json"]  # no temporary file left
    store.path.write_text("{not json", encoding="utf-8")
    assert store.load() == []
    aside = list(store.path.parent.glob("history.unreadable-*.json"))
    assert len(aside) == 1 and aside[0].read_text(encoding="utf-8") == "{not json"


def test_clean_drops_malformed_items():
    good = add([], values("ok"))[0]
    data = [good, {"id": 3}, "text", {"id": "x", "time": 1, "settings": {"prompt": "p", "evil": 1}}]
    cleaned = clean(data)
    assert [e["id"] for e in cleaned] == [good["id"], "x"]
    assert cleaned[1]["settings"] == {"prompt": "p"}
    assert clean({"not": "a list"}) == []
    assert json.loads(json.dumps(cleaned)) == cleaned


def test_the_prompt_modules_import_neither_torch_nor_gradio():
    import subprocess
    import sys

    code = ("import sys\nimport sote_ui.core.tagindex, sote_ui.core.wildcards, sote_ui.core.history\n"
            "sote_ui.core.tagindex.suggest('long h')\n"
            "print(sorted(m for m in ('torch', 'gradio', 'diffusers') if m in sys.modules))\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


# Bounds and the file: what the user starred is never lost, and a file that can't be read is kept aside.


def big(prompt_start: str, chars: int = 7_000) -> dict:
    """Values of an accepted run with long prompts (three UTF-8 bytes a character): about 42 KB an entry."""
    return values(prompt_start + "猫" * chars, negative="犬" * chars)


def test_an_entry_past_the_entry_bound_is_not_recorded():
    entries = star(add([], values("keep me")), history.entry_id("keep me", "worst quality"))
    huge = values("x" * 4_300_000)  # 4.3 MB: never a request the app accepts
    assert add(entries, huge) == entries
    assert len(json.dumps(add(entries, big("long, ")), ensure_ascii=False).encode()) < history.MAX_FILE_BYTES


def test_the_file_stays_readable_however_large_the_entries_and_keeps_every_star(tmp_path):
    store = HistoryFile(tmp_path / "history.json")
    entries = []
    for i in range(10):
        entries = add(entries, big(f"starred {i}, "), when=i)
        entries = star(entries, entries[0]["id"])
    for i in range(history.MAX_ENTRIES):
        entries = add(entries, big(f"plain {i}, "), when=100 + i)
    store.save(entries)
    assert store.path.stat().st_size <= history.MAX_FILE_BYTES
    loaded = store.load()
    assert sorted(e["settings"]["prompt"][:10] for e in loaded if e["starred"]) == [f"starred {i}," for i in range(10)]
    plain = [e["settings"]["prompt"] for e in loaded if not e["starred"]]
    assert plain and plain[0].startswith(f"plain {history.MAX_ENTRIES - 1}, ")  # the newest kept, the oldest trimmed
    assert list(tmp_path.iterdir()) == [store.path]  # nothing moved aside


def test_eviction_never_drops_a_star_and_starring_past_the_bound_is_refused():
    entries = clean([{**history.make_entry(values(f"s{i}"), when=i), "starred": True}
                     for i in reversed(range(history.MAX_STARRED))])
    for i in range(history.MAX_ENTRIES + 5):  # pushes unstarred entries out, never a starred one
        entries = add(entries, values(f"plain {i}"), when=1000 + i)
    assert sum(e["starred"] for e in entries) == history.MAX_STARRED
    entries = add(entries, values("one more"), when=10_000)
    with pytest.raises(InputError) as info:
        star(entries, entries[0]["id"])
    assert str(info.value) == f"{history.MAX_STARRED} prompts are starred already: unstar one first"
    assert sum(e["starred"] for e in entries) == history.MAX_STARRED
    assert find(entries, history.entry_id("s0", "worst quality"))["starred"]


def test_starring_an_entry_no_longer_in_the_history_is_a_one_line_error():
    entries = add([], values("a"))
    with pytest.raises(InputError) as info:
        star(entries, "0123456789ab")
    assert str(info.value) == "that prompt is no longer in the history: pick one in the list"


@pytest.mark.parametrize("text", ['{"entries": []}', '"a string"', "[1, 2]", "null"])
def test_valid_json_of_another_shape_is_moved_aside_never_overwritten(tmp_path, text):
    store = HistoryFile(tmp_path / "history.json")
    store.path.write_text(text, encoding="utf-8")
    assert store.load() == []
    store.save(add([], values("new")))
    (aside,) = tmp_path.glob("history.unreadable-*.json")
    assert aside.read_text(encoding="utf-8") == text
    assert [e["settings"]["prompt"] for e in store.load()] == ["new"]


def test_a_partly_readable_file_keeps_its_good_entries_and_the_original_aside(tmp_path):
    store = HistoryFile(tmp_path / "history.json")
    good = star(add([], values("starred one")), history.entry_id("starred one", "worst quality"))
    text = json.dumps(good + [{"id": 5, "what": "from another version"}])
    store.path.write_text(text, encoding="utf-8")
    assert store.load() == good
    (aside,) = tmp_path.glob("history.unreadable-*.json")
    assert aside.read_text(encoding="utf-8") == text


def test_two_unreadable_files_in_one_second_are_both_kept(tmp_path, monkeypatch):
    monkeypatch.setattr(history.time, "time", lambda: 1_700_000_000.0)
    store = HistoryFile(tmp_path / "history.json")
    for text in ("{first", "{second"):
        store.path.write_text(text, encoding="utf-8")
        assert store.load() == []
    assert sorted(p.read_text(encoding="utf-8") for p in tmp_path.glob("history.unreadable-*.json")) == \
        ["{first", "{second"]


def test_a_file_that_cannot_be_moved_aside_is_never_overwritten(tmp_path, monkeypatch):
    store = HistoryFile(tmp_path / "history.json")
    store.path.write_text("{not json", encoding="utf-8")

    def refuse(self, target):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(history.Path, "replace", refuse)
    monkeypatch.setattr(history.Path, "rename", refuse)
    assert store.load() == []
    with pytest.raises(InputError) as info:
        store.save(add([], values("new")))
    assert str(info.value) == ("the prompt history file history.json can't be read nor moved aside, "
                               "so nothing was saved over it")
    assert store.path.read_text(encoding="utf-8") == "{not json"
