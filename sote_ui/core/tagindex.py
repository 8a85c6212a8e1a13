"""Danbooru tag suggestions: a prefix index over 140k tags and their aliases.

The tag list (``data/danbooru-tags.csv.gz``, see ``data/README.md``) is read
on first use and indexed once: every tag name and alias, spelled as a user
types it (lower case, spaces for underscores), goes into one sorted list, so
the tags starting with what was typed are one ``bisect`` away. Ranking is by
Danbooru post count; the tags SoteDiffusion was trained with (aesthetic,
quality, date, rating, source) come first when they match.

Pure data and logic: no torch, no gradio.

Example::

    >>> [s.text for s in suggest("long h", limit=2)]
    ['long hair, ', 'long hair between eyes, ']
    >>> escape_tag("kanzaki_ranko_(cosplay)")
    'kanzaki ranko \\\\(cosplay\\\\)'
"""

from __future__ import annotations

import bisect
import csv
import gzip
import heapq
import io
import re
import threading
from array import array
from dataclasses import asdict, dataclass
from pathlib import Path

from . import tags

DATA_FILE = Path(__file__).resolve().parent / "data" / "danbooru-tags.csv.gz"
CATEGORY_NAMES = {0: "general", 1: "artist", 3: "copyright", 4: "character", 5: "meta"}
ARTIST = 1
DEFAULT_LIMIT = 12
MAX_LIMIT = 50
ALIAS_PENALTY = 10
# Prefixes matching more keys than this are ranked once and the result kept (there are a few hundred).
CACHE_ABOVE = 2000

# Where the typed tag starts: after a separator, emphasis opener or wildcard brace.
_LEAD = re.compile(r"^[\s(\[{|]+")
# A weight being typed after the tag: "long hair:1.".
_TRAIL = re.compile(r":[\d.]*$")


@dataclass(frozen=True)
class Suggestion:
    text: str  # what to insert, as the model was trained on it, with the trailing ", "
    tag: str  # Danbooru's spelling (or the model's own tag)
    category: str  # general, artist, copyright, character, meta; or the model's: aesthetic, quality...
    count: int  # Danbooru post count (0 for the model's own tags)
    alias: str = ""  # the alias that matched, when it was not the name

    def to_dict(self) -> dict:
        return asdict(self)


def escape_tag(name: str) -> str:
    """A Danbooru tag as a prompt writes it: spaces for underscores, brackets escaped.

    Emoticon tags (``^_^``, ``o_o``) keep their underscores: there the
    underscore is part of the face, not a word separator.
    """
    text = name.replace("_", " ") if re.search(r"[^\W_]{2}", name) else name
    return re.sub(r"([\\()\[\]])", r"\\\1", text)


def unescape_tag(text: str) -> str:
    return re.sub(r"\\([\\()\[\]])", r"\1", text)


def normalize(text: str) -> str:
    """What was typed of a tag, as the index spells keys: lower case, spaces, no escapes."""
    text = unescape_tag(text).replace("_", " ").lower()
    return re.sub(r"\s+", " ", text).lstrip()


def query_of(text: str) -> str:
    """The tag being typed at the end of ``text`` (the part after the last comma or newline)."""
    part = re.split(r"[,\n|{]", text)[-1]
    part = _LEAD.sub("", part)
    part = _TRAIL.sub("", part)
    return normalize(part)


def _key(name: str) -> str:
    """:func:`normalize` for the index's own keys, fast for the common case (no escapes, single spaces)."""
    key = name.replace("_", " ").lower().lstrip()
    return normalize(key) if "\\" in key or "  " in key else key


class TagIndex:
    """Sorted keys (names and aliases) with bisect lookup; built from the CSV on first use.

    Tags and keys are kept in flat arrays: about 30 MB for the whole list, rather than an object per tag.
    """

    def __init__(self, rows: list[tuple[str, int, int, list[str]]]):
        self.names: list[str] = []
        self.categories = array("b")
        self.counts = array("q")
        entries: list[tuple[str, int, bool]] = []  # (key, tag number, is alias)
        for name, category, count, aliases in rows:
            number = len(self.names)
            self.names.append(name)
            self.categories.append(category)
            self.counts.append(count)
            entries.append((_key(name), number, False))
            for alias in aliases:
                key = _key(alias)
                if key:
                    entries.append((key, number, True))
        entries.sort()
        self.keys = [key for key, _, _ in entries]
        self.entry_tag = array("l", (number for _, number, _ in entries))
        self.entry_alias = bytearray(alias for _, _, alias in entries)
        # An alias match ranks below name matches of similar size: typing "s" should not open with 1girl
        # (alias "sole female"), yet "longh" still finds long hair (alias "longhair") above "longhorn".
        self.rank = array("q", (self.counts[n] // (ALIAS_PENALTY if alias else 1) for _, n, alias in entries))
        del entries
        self._cache: dict[tuple[str, int | None], list[int]] = {}
        for prefix in sorted({key[:length] for key in self.keys for length in (1, 2, 3)}):
            self._positions(prefix, None)  # rank the prefixes matching thousands of keys once, here

    @classmethod
    def from_csv(cls, path: Path = DATA_FILE) -> "TagIndex":
        opener = gzip.open if str(path).endswith(".gz") else open
        with opener(path, "rt", encoding="utf-8", newline="") as handle:
            return cls.from_text(handle)

    @classmethod
    def from_text(cls, handle: io.TextIOBase) -> "TagIndex":
        rows = []
        for record in csv.reader(handle):
            if len(record) < 3 or not record[0]:
                continue
            aliases = [a for a in record[3].split(",") if a] if len(record) > 3 else []
            rows.append((record[0], int(record[1]), int(record[2]), aliases))
        return cls(rows)

    def _positions(self, prefix: str, category: int | None) -> list[int]:
        """Entry positions whose key starts with ``prefix``, best first (at most ``2 * MAX_LIMIT``)."""
        cached = self._cache.get((prefix, category))
        if cached is not None:
            return cached
        lo = bisect.bisect_left(self.keys, prefix)
        hi = bisect.bisect_left(self.keys, prefix + "\U0010ffff", lo)
        positions = range(lo, hi)
        if category is not None:
            positions = [p for p in positions if self.categories[self.entry_tag[p]] == category]
        best = heapq.nlargest(MAX_LIMIT * 2, positions, key=self.rank.__getitem__)
        if hi - lo > CACHE_ABOVE:  # short prefixes match thousands of keys: rank those once
            self._cache[(prefix, category)] = best
        return best

    def suggest(self, typed: str, limit: int = DEFAULT_LIMIT, category: int | None = None) -> list[Suggestion]:
        """Tags starting with ``typed`` (name or alias), the model's own tags first, then by post count."""
        query = normalize(typed).rstrip() if typed.strip() else ""
        limit = max(1, min(int(limit), MAX_LIMIT))
        if not query:
            return []
        results: list[Suggestion] = []
        seen: set[str] = set()
        if category is None:
            for kind, values in _MODEL_TAGS:
                for value in values:
                    if value.startswith(query) and value not in seen:
                        seen.add(value)
                        results.append(Suggestion(escape_tag(value) + ", ", value, kind, 0))
        for position in self._positions(query, category):
            if len(results) >= limit:
                break
            number = self.entry_tag[position]
            name, kind = self.names[number], self.categories[number]
            if name in seen or normalize(name) in seen:
                continue
            seen.add(name)
            text = escape_tag(name) + ("" if category == ARTIST else ", ")
            results.append(Suggestion(text, name, CATEGORY_NAMES.get(kind, str(kind)), self.counts[number],
                                      self.keys[position] if self.entry_alias[position] else ""))
        return results[:limit]


_MODEL_TAGS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("aesthetic", tags.AESTHETIC),
    ("quality", tags.QUALITY),
    ("date", tuple(tags.DATE)),
    ("rating", tags.RATING),
    ("source", tags.CUSTOM),
)

_index: TagIndex | None = None
_lock = threading.Lock()


def index() -> TagIndex:
    """The shipped tag index, built on first call (about a second) and kept."""
    global _index
    if _index is None:
        with _lock:
            if _index is None:
                _index = TagIndex.from_csv()
    return _index


def suggest(typed: str, limit: int = DEFAULT_LIMIT, category: int | None = None) -> list[Suggestion]:
    """Suggestions for the tag being typed, from the shipped Danbooru list."""
    return index().suggest(typed, limit, category)


__all__ = ["CATEGORY_NAMES", "Suggestion", "TagIndex", "escape_tag", "index", "normalize", "query_of", "suggest",
           "unescape_tag"]
