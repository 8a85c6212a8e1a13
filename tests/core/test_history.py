"""Prompt history: newest first, de-duplicated, bounded, starred entries kept, searchable, stored atomically."""

from __future__ import annotations

import json

from support import ROOT

from sote_ui.core import history
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
