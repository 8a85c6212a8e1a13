"""Prompt help from the tag list: tag and wildcard suggestions, and which tags fall past the trained chunks.

Pure Python: the tag index (:mod:`.tagindex`), the wildcard files
(:mod:`.wildcards`) and a chunk counter handed in by the caller.

Example::

    suggest_tags("1girl, long h")[0]["text"]          # 'long hair, '
    tags_past_trained(prompt, engine.chunk_counts)    # the tags past the third 75-token chunk
"""

from __future__ import annotations

import re
import threading
from typing import Any, Callable

from . import loras, tagindex, tags, wildcards
from .errors import InputError


def suggest_tags(text: str, category: str | None = "") -> list[dict[str, Any]]:
    """Ranked Danbooru tags for what was typed of the current tag (wildcard names after ``__``).

    ``text`` may be the whole prompt up to the cursor: the tag after its last
    comma is what is looked up. Each suggestion has ``text`` (what to insert,
    spaces for underscores, literal brackets escaped, then ", "), ``tag``
    (Danbooru's spelling), ``category``, ``count`` (Danbooru posts) and
    ``alias`` (the alias that matched, if any). ``category="artist"`` looks up
    artist names only, inserted bare (for the Pixiv artist field); None is ``""``.
    """
    if category is None:  # JSON's null, as API clients send a parameter left out: every category
        category = ""
    if category not in ("", "artist"):
        raise InputError(f"category must be '' (all tags) or 'artist', got {str(category)[:20]!r}")
    text = str(text or "")[-500:]
    lora = _LORA_TYPED.search(re.split(r"[,\n|{]", text)[-1]) if category == "" else None
    if lora is not None:
        return lora_suggestions(lora.group(1) or "")
    typed = wildcards.typed_name(text) if category == "" else None
    if typed is not None:
        found = wildcard_suggestions(typed)
        if found or " " not in typed:  # "o__o long h": no name has a space there, so it is a tag being typed
            return found
    query = tagindex.query_of(text) if category == "" else tagindex.normalize(text)
    group = tagindex.ARTIST if category == "artist" else None
    return [s.to_dict() for s in tagindex.suggest(query, category=group)]


# ``<lora``, ``<lora:`` or ``<lora:na`` at the end of the tag being typed
_LORA_TYPED = re.compile(r"<\s*lora(?:\s*:\s*([^:<>]*))?\Z", re.IGNORECASE)


def lora_suggestions(typed: str, limit: int = tagindex.DEFAULT_LIMIT) -> list[dict[str, Any]]:
    """LoRAs of the loras folder whose name starts with (then contains) ``typed``, inserted as ``<lora:name:1>, ``."""
    typed = typed.strip().lower()
    names = loras.names()
    ranked = [n for n in names if n.lower().startswith(typed)] + [n for n in names if typed in n.lower()
                                                                   and not n.lower().startswith(typed)]
    return [{"text": f"<lora:{name}:1>, ", "tag": name, "category": "lora", "count": 0, "alias": ""}
            for name in ranked[:limit]]


def wildcard_suggestions(typed: str, limit: int = tagindex.DEFAULT_LIMIT) -> list[dict[str, Any]]:
    """Wildcard files whose name starts with ``typed`` (after ``__``), inserted as ``__name__, ``."""
    store = wildcards.default_store()
    found = []
    for name in store.names():
        if name.lower().startswith(typed.lower()):
            try:
                options = len(store.lines(name))
            except InputError:  # an empty or unreadable file: shown, so the user finds it
                options = 0
            found.append({"text": f"__{name}__, ", "tag": name, "category": "wildcard", "count": options,
                          "alias": ""})
    return found[:limit]


def warm_up() -> None:
    """Index the tag list in the background so the first keystroke finds it ready (about a second)."""
    threading.Thread(target=tagindex.index, name="sote-tag-index", daemon=True).start()




def tags_past_trained(text: str, chunk_counts: Callable[[str], list[int] | None]) -> list[str]:
    """The tags of ``text`` that the encoder puts past the third 75-token chunk.

    ``chunk_counts`` is the encoder's own split (tokens per chunk). Chunks are
    cut greedily from the start at a comma, so a tag is past the third chunk
    exactly when the prompt up to and including it needs more than three
    chunks; the first such tag is found by bisection (a few tokenizer calls).
    """
    full = chunk_counts(text)
    if full is None or len(full) <= tags.TRAINED_CHUNKS:
        return []
    parts = tags.split_tags(text)
    lo, hi = 0, len(parts) - 1  # the first tag whose prefix needs more than the trained chunks
    while lo < hi:
        mid = (lo + hi) // 2
        if len(chunk_counts(", ".join(parts[:mid + 1])) or []) > tags.TRAINED_CHUNKS:
            hi = mid
        else:
            lo = mid + 1
    return parts[lo:]


__all__ = ["suggest_tags", "tags_past_trained", "warm_up", "wildcard_suggestions"]
