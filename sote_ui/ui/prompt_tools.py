"""Prompt tools for the Generate tab: tag suggestions, the chunk budget, keyboard habits, prompt history.

- ``/suggest_tags`` (``text``, optional ``category`` "artist") returns ranked Danbooru tag suggestions;
  the page's script (``prompt_tools.js``, loaded into the page's head) calls it as you type.
- Ctrl+Enter / Cmd+Enter generates; Ctrl+Up / Ctrl+Down change the weight of the tag at the cursor.
- Every generated prompt goes into a searchable history (a file next to the presets folder, or the
  browser's own storage where the server keeps no user folder, as on Spaces).

Example::

    with gr.Blocks() as demo:
        generate = build_generate_tab(studio)     # calls attach_prompt_tools at its end
    demo.launch(head=script_head())
"""

from __future__ import annotations

import re
import threading
from pathlib import Path
from typing import Any, Callable

import gradio as gr

from ..core import history, tagindex, tags, wildcards
from ..core.errors import InputError
from ..core.request import FIELD_NAMES
from ..service.studio import Studio

SCRIPT = Path(__file__).with_name("prompt_tools.js")
HISTORY_KEY = "sote-studio-history"
# BrowserState encrypts what it stores with this; fixed so a restarted Space still reads its visitors' history.
HISTORY_SECRET = "sote-studio-prompt-history-v1"
HISTORY_SHOWN = 30


def script_head() -> str:
    """The ``<script>`` for ``launch(head=...)``: suggestions, weights and Ctrl+Enter in the page."""
    return f"<script>\n{SCRIPT.read_text(encoding='utf-8')}\n</script>"


def suggest_tags(text: str, category: str = "") -> list[dict[str, Any]]:
    """Ranked Danbooru tags for what was typed of the current tag.

    ``text`` may be the whole prompt up to the cursor: the tag after its last
    comma is what is looked up. Each suggestion has ``text`` (what to insert,
    spaces for underscores, literal brackets escaped, then ", "), ``tag``
    (Danbooru's spelling), ``category``, ``count`` (Danbooru posts) and
    ``alias`` (the alias that matched, if any). ``category="artist"`` looks up
    artist names only, inserted bare (for the Pixiv artist field).
    """
    if category not in ("", "artist"):
        raise gr.Error(f"category must be '' or 'artist', got {category[:20]!r}", print_exception=False)
    text = str(text or "")[-500:]
    typed_wildcard = re.search(r"__([A-Za-z0-9_\-/]*)$", text)
    if category == "" and typed_wildcard:
        return wildcard_suggestions(typed_wildcard.group(1))
    query = tagindex.query_of(text) if category == "" else tagindex.normalize(text)
    group = tagindex.ARTIST if category == "artist" else None
    return [s.to_dict() for s in tagindex.suggest(query, category=group)]


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


# 1. The chunk budget: which tags fall past the chunks the model was trained on ------------------


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


def past_chunks_markdown(text: str, chunk_counts: Callable[[str], list[int] | None], shown: int = 20) -> str:
    """A line naming the tags past the third chunk (empty when every tag fits)."""
    past = tags_past_trained(text, chunk_counts)
    if not past:
        return ""
    names = ", ".join(f"`{tag}`" for tag in past[:shown]) + (f" and {len(past) - shown} more" if len(past) > shown
                                                            else "")
    return f"  \n**Past the third chunk** ({len(past)} tags, weaker): {names}"


# 2. Prompt history ---------------------------------------------------------------------------


class HistoryStore:
    """The history of one server (a file) or, without a user folder, of each browser (BrowserState)."""

    def __init__(self, studio: Studio):
        folder = studio.config.presets_dir
        self.file = history.HistoryFile(Path(folder).expanduser().parent / "history.json") if folder else None
        self._lock = threading.Lock()

    def entries(self, stored: Any) -> list[dict]:
        return self.file.load() if self.file else history.clean(stored)

    def change(self, stored: Any, edit) -> list[dict]:
        with self._lock:
            entries = edit(self.entries(stored))
            if self.file:
                self.file.save(entries)
        return entries


def build_history(studio: Studio, inputs: list, generated: list) -> dict[str, Any]:
    store = HistoryStore(studio)
    stored = gr.BrowserState([], storage_key=HISTORY_KEY, secret=HISTORY_SECRET)
    where = f"kept in {store.file.path}" if store.file else "kept in this browser"
    with gr.Accordion("Prompt history", open=False, elem_id="history") as panel:
        gr.Markdown(f"Every prompt you generate, newest first ({where}). Starred prompts are never dropped.")
        with gr.Row():
            search = gr.Textbox(label="Search", placeholder="words from the prompt or negative prompt",
                                elem_id="history_search", scale=4)
            starred_only = gr.Checkbox(label="Starred only", value=False, elem_id="history_starred", scale=1)
        listing = gr.Radio([], label="Prompts", elem_id="history_list")
        with gr.Row():
            use = gr.Button("Use this prompt", size="sm", elem_id="history_use")
            star = gr.Button("Star / unstar", size="sm", elem_id="history_star")

    def shown(entries, query, only_starred, selected=None):
        found = history.search(entries, query or "", bool(only_starred))[:HISTORY_SHOWN]
        choices = [(history.label(e), e["id"]) for e in found]
        keep = selected if any(value == selected for _, value in choices) else None
        return gr.update(choices=choices, value=keep)

    def refresh(stored_value, query, only_starred, selected=None):
        return shown(store.entries(stored_value), query, only_starred, selected)

    def record(*args):
        values, stored_value, query, only_starred = dict(zip(FIELD_NAMES, args[:-3])), *args[-3:]
        entries = store.change(stored_value, lambda old: history.add(old, values))
        return (entries if store.file is None else stored_value), shown(entries, query, only_starred)

    def toggle(stored_value, selected, query, only_starred):
        if not selected:
            raise gr.Error("pick a prompt in the list first", print_exception=False)
        entries = store.change(stored_value, lambda old: history.star(old, selected))
        return (entries if store.file is None else stored_value), shown(entries, query, only_starred, selected)

    def reuse(stored_value, selected):
        entry = history.find(store.entries(stored_value), selected or "")
        if entry is None:
            raise gr.Error("pick a prompt in the list first", print_exception=False)
        settings = entry["settings"]
        return [gr.update(value=settings[name]) if name in settings else gr.update() for name in FIELD_NAMES]

    filters = [search, starred_only]
    for event in generated:
        event.success(record, inputs + [stored] + filters, [stored, listing], api_name=False, queue=False,
                      show_progress="hidden")
    for trigger in (panel.expand, search.change, starred_only.change):
        trigger(refresh, [stored] + filters, listing, api_name=False, queue=False, show_progress="hidden")
    # Queued: their "pick a prompt first" message shows as a toast only from a queued handler.
    star.click(toggle, [stored, listing] + filters, [stored, listing], api_name=False)
    use.click(reuse, [stored, listing], inputs, api_name=False)

    def prompt_history(query: str = "") -> list[dict]:
        """The server's prompt history (newest first) matching ``query``; empty where it is kept per browser."""
        return history.search(store.entries([]), query or "")

    gr.api(prompt_history, api_name="prompt_history", queue=False)
    return {"history_list": listing, "history_state": stored}


# 3. Wiring ---------------------------------------------------------------------------------------


def attach_prompt_tools(studio: Studio, inputs: list, generated: list) -> dict[str, Any]:
    """Add the suggestion endpoint and the history panel to the Generate tab being built.

    ``inputs`` are the request controls in field order; ``generated`` the
    events that generate (the button, the prompt box's submit): each prompt
    they generate goes into the history. The suggestions, weights and
    Ctrl+Enter live in the page's script, loaded through ``script_head()``.
    """
    gr.api(suggest_tags, api_name="suggest_tags", queue=False)
    warm_up()
    return build_history(studio, inputs, generated)


__all__ = ["attach_prompt_tools", "past_chunks_markdown", "script_head", "suggest_tags", "tags_past_trained"]
