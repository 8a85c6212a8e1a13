"""Prompt history: every prompt generated (with its negative and settings), most recent first.

Entries are plain dicts, so the same functions serve the server-side file
(``~/.sote-studio/history.json``, written atomically) and a list kept in the
browser (on Spaces, where the server's folder is shared by every visitor).
A prompt generated again moves to the top with its latest settings instead of
being listed twice. The list keeps the newest :data:`MAX_ENTRIES` unstarred
entries; starred ones are kept whatever their age.

Pure data and logic: no torch, no gradio.

Example::

    entries = add([], {"prompt": "1girl, solo", "negative_prompt": "worst quality", "prior_cfg": 8.0})
    entries = star(entries, entries[0]["id"])
    search(entries, "solo")[0]["prompt"]      # '1girl, solo'
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

from .files import atomic_write, user_home
from .request import FIELD_NAMES

MAX_ENTRIES = 200  # unstarred entries kept
MAX_STARRED = 500
MAX_FILE_BYTES = 4 * 1024 * 1024
SKIPPED = ("seed", "count")  # a history entry is a prompt with its look, not one particular run


def default_path() -> Path:
    return user_home() / "history.json"


def entry_id(prompt: str, negative_prompt: str) -> str:
    """Entries are the same prompt when prompt and negative prompt are the same text."""
    return hashlib.sha1(f"{prompt}\x00{negative_prompt}".encode("utf-8")).hexdigest()[:12]


def make_entry(values: dict[str, Any], when: float | None = None) -> dict[str, Any]:
    settings = {k: v for k, v in values.items() if k in FIELD_NAMES and k not in SKIPPED}
    prompt, negative = str(settings.get("prompt", "")), str(settings.get("negative_prompt", ""))
    return {"id": entry_id(prompt, negative), "time": time.time() if when is None else when, "starred": False,
            "settings": settings}


def add(entries: list[dict], values: dict[str, Any], when: float | None = None) -> list[dict]:
    """A new list with ``values`` on top; an earlier entry of the same prompt is replaced (its star kept)."""
    entry = make_entry(values, when)
    rest = []
    for old in entries:
        if old.get("id") == entry["id"]:
            entry["starred"] = bool(old.get("starred"))
        else:
            rest.append(old)
    return bound([entry] + rest)


def bound(entries: list[dict]) -> list[dict]:
    """Keep every starred entry (up to MAX_STARRED) and the newest MAX_ENTRIES others, in order."""
    kept, plain, starred = [], 0, 0
    for entry in entries:
        if entry.get("starred"):
            starred += 1
            if starred > MAX_STARRED:
                continue
        else:
            plain += 1
            if plain > MAX_ENTRIES:
                continue
        kept.append(entry)
    return kept


def star(entries: list[dict], entry: str, starred: bool | None = None) -> list[dict]:
    """Star (or, if ``starred`` is False or it is starred already, unstar) one entry by id."""
    out = []
    for item in entries:
        if item.get("id") == entry:
            item = {**item, "starred": (not item.get("starred")) if starred is None else bool(starred)}
        out.append(item)
    return bound(out)


def search(entries: list[dict], query: str = "", starred_only: bool = False) -> list[dict]:
    """Entries whose prompt or negative prompt holds every word of ``query`` (any case), newest first."""
    words = query.lower().split()
    found = []
    for entry in entries:
        if starred_only and not entry.get("starred"):
            continue
        settings = entry.get("settings", {})
        text = f"{settings.get('prompt', '')}\n{settings.get('negative_prompt', '')}".lower()
        if all(word in text for word in words):
            found.append(entry)
    return found


def find(entries: list[dict], entry: str) -> dict | None:
    return next((item for item in entries if item.get("id") == entry), None)


def label(entry: dict, width: int = 110) -> str:
    """One line for a list: a star, the prompt, and a short negative."""
    settings = entry.get("settings", {})
    text = settings.get("prompt", "") or "(no prompt of your own)"
    picks = [settings.get(k) for k in ("aesthetic", "quality", "date", "rating", "custom")]
    picks = [p for p in picks if p and p != "none"]
    if picks:
        text += "  [" + ", ".join(picks) + "]"
    text = " ".join(text.split())
    if len(text) > width:
        text = text[:width - 1] + "…"
    return ("★ " if entry.get("starred") else "") + text


def clean(data: Any) -> list[dict]:
    """Entries from stored data (a file or the browser), dropping anything malformed."""
    if not isinstance(data, list):
        return []
    entries = []
    for item in data:
        if (isinstance(item, dict) and isinstance(item.get("id"), str) and isinstance(item.get("settings"), dict)
                and isinstance(item.get("time"), (int, float))):
            settings = {k: v for k, v in item["settings"].items() if k in FIELD_NAMES}
            entries.append({"id": item["id"], "time": item["time"], "starred": bool(item.get("starred")),
                            "settings": settings})
    return bound(entries)


class HistoryFile:
    """The history kept in one JSON file (the local app's, next to the presets folder)."""

    def __init__(self, path: Path | None = None):
        self.path = Path(path) if path else default_path()

    def load(self) -> list[dict]:
        """The stored entries. A file that can't be read as history is moved aside (never overwritten)."""
        try:
            if self.path.stat().st_size <= MAX_FILE_BYTES:
                return clean(json.loads(self.path.read_text(encoding="utf-8")))
        except FileNotFoundError:
            return []
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            pass
        try:
            self.path.replace(self.path.with_name(f"{self.path.stem}.unreadable-{int(time.time())}.json"))
        except OSError:
            pass
        return []

    def save(self, entries: list[dict]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        data = json.dumps(bound(entries), ensure_ascii=False, indent=1) + "\n"
        atomic_write(self.path, data.encode("utf-8"), overwrite=True)


__all__ = ["HistoryFile", "MAX_ENTRIES", "add", "bound", "clean", "default_path", "entry_id", "find", "label",
           "make_entry", "search", "star"]
