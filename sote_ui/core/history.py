"""Prompt history: every prompt generated (with its negative and settings), most recent first.

Entries are plain dicts, so the same functions serve the server-side file
(``~/.sote-studio/history.json``, written atomically) and a list kept in the
browser (on Spaces, where the server's folder is shared by every visitor).
A prompt generated again moves to the top with its latest settings instead of
being listed twice. The list keeps the newest :data:`MAX_ENTRIES` unstarred
entries within :data:`MAX_FILE_BYTES`; starred ones are never dropped (starring
is refused past :data:`MAX_STARRED` instead), and a file that can't be read is
moved aside, never overwritten.

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

from .errors import InputError
from .files import atomic_write, user_home
from .request import FIELD_NAMES

MAX_ENTRIES = 200  # unstarred entries kept
MAX_STARRED = 500
MAX_ENTRY_BYTES = 64 * 1024  # one entry as stored; an accepted run's (prompts of 8,000 characters at most) fits
MAX_FILE_BYTES = 8 * 1024 * 1024  # read back at most this; saving trims unstarred entries to stay under it
MAX_STARRED_BYTES = 6 * 1024 * 1024  # starred entries alone, so they always fit in the file with room to spare
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


def encoded(entry: dict) -> bytes:
    """One entry as the file stores it (one a line)."""
    return json.dumps(entry, ensure_ascii=False).encode("utf-8")


def add(entries: list[dict], values: dict[str, Any], when: float | None = None) -> list[dict]:
    """A new list with ``values`` on top; an earlier entry of the same prompt is replaced (its star kept).

    An entry larger than :data:`MAX_ENTRY_BYTES` is not recorded: the list comes back as it was.
    """
    entry = make_entry(values, when)
    if len(encoded(entry)) > MAX_ENTRY_BYTES:
        return list(entries)
    rest = []
    for old in entries:
        if old.get("id") == entry["id"]:
            entry["starred"] = bool(old.get("starred"))
        else:
            rest.append(old)
    return bound([entry] + rest)


def bound(entries: list[dict], budget: int = MAX_FILE_BYTES) -> list[dict]:
    """Every starred entry and the newest MAX_ENTRIES others, in order, within ``budget`` bytes as stored.

    Only unstarred entries are ever dropped, oldest first.
    """
    kept, plain = [], 0
    for entry in entries:
        if not entry.get("starred"):
            plain += 1
            if plain > MAX_ENTRIES:
                continue
        kept.append(entry)
    sizes = [len(encoded(entry)) + 2 for entry in kept]  # with the comma and newline between entries
    total = sum(sizes) + 4
    for index in range(len(kept) - 1, -1, -1):
        if total <= budget:
            break
        if not kept[index].get("starred"):
            total -= sizes[index]
            kept[index] = None  # type: ignore[call-overload]
    return [entry for entry in kept if entry is not None]


def star(entries: list[dict], entry: str, starred: bool | None = None) -> list[dict]:
    """Star (or, if ``starred`` is False or it is starred already, unstar) one entry by id.

    Raises InputError when the entry is no longer there, or when starring it would pass
    :data:`MAX_STARRED` entries or :data:`MAX_STARRED_BYTES` (starred entries are never dropped, so
    their number is bounded here instead).
    """
    item = find(entries, entry)
    if item is None:
        raise InputError("that prompt is no longer in the history: pick one in the list")
    turn_on = (not item.get("starred")) if starred is None else bool(starred)
    if turn_on and not item.get("starred"):
        starred_now = [e for e in entries if e.get("starred")]
        if len(starred_now) >= MAX_STARRED:
            raise InputError(f"{MAX_STARRED} prompts are starred already: unstar one first")
        if sum(len(encoded(e)) for e in starred_now + [item]) > MAX_STARRED_BYTES:
            raise InputError("the starred prompts fill the history's room: unstar one first")
    return bound([{**e, "starred": turn_on} if e is item else e for e in entries])


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


def _entry_of(item: Any) -> dict | None:
    if (isinstance(item, dict) and isinstance(item.get("id"), str) and isinstance(item.get("settings"), dict)
            and isinstance(item.get("time"), (int, float))):
        settings = {k: v for k, v in item["settings"].items() if k in FIELD_NAMES}
        return {"id": item["id"], "time": item["time"], "starred": bool(item.get("starred")), "settings": settings}
    return None


def clean(data: Any) -> list[dict]:
    """Entries from stored data (a file or the browser), dropping anything malformed."""
    if not isinstance(data, list):
        return []
    return bound([entry for entry in map(_entry_of, data) if entry is not None])


class HistoryFile:
    """The history kept in one JSON file (the local app's, next to the presets folder).

    A file that can't be read as history, wholly or in part, is moved aside
    (``history.unreadable-TIME.json``) before anything is saved in its place;
    if it can't be moved, nothing is saved over it.
    """

    def __init__(self, path: Path | None = None):
        self.path = Path(path) if path else default_path()
        self._stuck = False  # an unreadable file is still in the way: saving would overwrite it

    def load(self) -> list[dict]:
        """The stored entries (every readable one)."""
        try:
            if self.path.stat().st_size > MAX_FILE_BYTES:
                return self._set_aside([])
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            self._stuck = False
            return []
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            return self._set_aside([])
        if not isinstance(data, list):
            return self._set_aside([])
        entries = [entry for entry in map(_entry_of, data) if entry is not None]
        if len(entries) < len(data):
            return self._set_aside(bound(entries))
        self._stuck = False
        return bound(entries)

    def _set_aside(self, entries: list[dict]) -> list[dict]:
        stamp, number = int(time.time()), 0
        while True:  # a name of its own: two unreadable files in one second are both kept
            target = self.path.with_name(f"{self.path.stem}.unreadable-{stamp}{f'-{number}' if number else ''}.json")
            if not target.exists():
                break
            number += 1
        try:
            self.path.rename(target)
            self._stuck = False
        except FileNotFoundError:
            self._stuck = False
        except OSError:
            self._stuck = True
        return entries

    def save(self, entries: list[dict]) -> None:
        """Write ``entries`` (bounded) atomically; raise InputError rather than replace an unread file."""
        if self._stuck and self.path.exists():
            raise InputError(f"the prompt history file {self.path.name} can't be read nor moved aside, "
                             "so nothing was saved over it")
        kept = bound(entries)
        data = b"[\n" + b",\n".join(encoded(entry) for entry in kept) + b"\n]\n"
        if len(data) > MAX_FILE_BYTES:  # only starred entries left, more than a file holds (edited by hand)
            raise InputError("the starred prompts fill the history's room: unstar some, nothing was saved")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(self.path, data, overwrite=True)


__all__ = ["HistoryFile", "MAX_ENTRIES", "MAX_ENTRY_BYTES", "MAX_FILE_BYTES", "MAX_STARRED", "add", "bound", "clean",
           "default_path", "encoded", "entry_id", "find", "label", "make_entry", "search", "star"]
