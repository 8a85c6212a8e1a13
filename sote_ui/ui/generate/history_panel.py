"""The prompt history panel: every prompt generated, searchable, starred ones never dropped.

Kept in a file next to the presets folder, or in the browser's own storage
where the server keeps no user folder (as on Spaces).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr

from ...core import history
from ...core.errors import InputError
from ...core.request import FIELD_NAMES
from ...service.studio import Studio

HISTORY_KEY = "sote-studio-history"
# BrowserState encrypts what it stores with this; fixed so a restarted Space still reads its visitors' history.
HISTORY_SECRET = "sote-studio-prompt-history-v1"
HISTORY_SHOWN = 30


class HistoryStore:
    """The history of one server (a file) or, without a user folder, of each browser (BrowserState)."""

    def __init__(self, studio: Studio):
        self.studio = studio
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

    def record(self, stored: Any, values: dict[str, Any]) -> list[dict] | None:
        """Add a run's prompt and settings, or None (nothing recorded) if the studio refuses them.

        The page's Generate reports a refused run in the page and still counts
        as done, so the values are checked here again: only what would run is kept.
        """
        try:
            self.studio.request_from(values)
        except InputError:
            return None
        return self.change(stored, lambda old: history.add(old, values))


@dataclass
class HistoryPanel:
    listing: gr.Dataframe  # the prompts shown: a star and the prompt on each row
    stored: gr.BrowserState  # the browser's own copy, where the server keeps no file


# Put the focus (and the view) on the prompt box after a prompt was taken from the history.
FOCUS_PROMPT = """(action) => {
  if (action !== "use") return;
  const box = document.querySelector('#prompt textarea');
  if (box) { box.scrollIntoView({block: 'center'}); box.focus(); }
}"""
# The "History" button by the prompt box: open the panel and bring it into view.
OPEN_HISTORY = """() => {
  const panel = document.querySelector('#history');
  if (!panel) return;
  const header = panel.querySelector('button.label-wrap');
  if (header && !header.classList.contains('open')) header.click();
  setTimeout(() => panel.scrollIntoView({behavior: 'smooth', block: 'start'}), 50);
}"""


def rows_of(entries: list[dict]) -> list[list[str]]:
    """One row per entry: its star (★ starred, ☆ not) and its one-line label."""
    return [["★" if e.get("starred") else "☆", history.label({**e, "starred": False})] for e in entries]


def build_history(studio: Studio, inputs: list, generated: list, opener: gr.Button | None = None) -> HistoryPanel:
    store = HistoryStore(studio)
    stored = gr.BrowserState([], storage_key=HISTORY_KEY, secret=HISTORY_SECRET)
    where = "kept on this server, beside the presets" if store.file else "kept in this browser"
    with gr.Accordion("Prompt history", open=False, elem_id="history") as panel:
        gr.Markdown(f"Every prompt you generate, newest first ({where}). Click a prompt to use it, its ☆ to "
                    "star it; starred prompts are never dropped.")
        with gr.Row():
            search = gr.Textbox(label="Search", placeholder="words from the prompt or negative prompt",
                                elem_id="history_search", scale=4)
            starred_only = gr.Checkbox(label="Starred only", value=False, elem_id="history_starred", scale=1)
        listing = gr.Dataframe(headers=["★", "Prompt"], datatype=["str", "str"], value=[], interactive=False,
                               elem_id="history_list", wrap=True, max_height=420, column_widths=["56px", "auto"])
        action = gr.Textbox(visible=False, elem_id="history_action")  # "use" or "star": what the click did
    # The ids of the rows shown, in order. The list never sends ids back: a click names a row of this page.
    shown_ids = gr.State([])

    def shown(entries, query, only_starred):
        found = history.search(entries, query or "", bool(only_starred))[:HISTORY_SHOWN]
        return rows_of(found), [e["id"] for e in found]

    def refresh(stored_value, query, only_starred):
        return shown(store.entries(stored_value), query, only_starred)

    def record(*args):
        values, stored_value, query, only_starred = dict(zip(FIELD_NAMES, args[:-3])), *args[-3:]
        try:
            entries = store.record(stored_value, values)
        except InputError as exc:  # the file can't be written: the run itself went well
            gr.Warning(str(exc))
            entries = None
        if entries is None:
            return gr.update(), gr.update(), gr.update()
        return (entries if store.file is None else stored_value), *shown(entries, query, only_starred)

    def toggle(stored_value, selected, query, only_starred):
        if not selected:
            raise gr.Error("pick a prompt in the list first", print_exception=False)
        try:
            entries = store.change(stored_value, lambda old: history.star(old, selected))
        except InputError as exc:
            raise gr.Error(str(exc), print_exception=False) from None
        return (entries if store.file is None else stored_value), *shown(entries, query, only_starred)

    def reuse(stored_value, selected):
        if not selected:
            raise gr.Error("pick a prompt in the list first", print_exception=False)
        entry = history.find(store.entries(stored_value), selected)
        if entry is None:
            raise gr.Error("that prompt is no longer in the history: pick one in the list", print_exception=False)
        settings = entry["settings"]
        return [gr.update(value=settings[name]) if name in settings else gr.update() for name in FIELD_NAMES]

    def clicked(stored_value, ids, query, only_starred, event: gr.SelectData):
        index = event.index if isinstance(event.index, (list, tuple)) else [event.index, 1]
        row, column = (int(index[0]), int(index[1])) if len(index) == 2 else (int(index[0]), 1)
        selected = ids[row] if ids and 0 <= row < len(ids) else None
        if column == 0:
            stored_out, rows, new_ids = toggle(stored_value, selected, query, only_starred)
            return (stored_out, rows, new_ids, "star", *[gr.update()] * len(FIELD_NAMES))
        settings = reuse(stored_value, selected)
        gr.Info("the prompt from the history is in the prompt box")
        return (gr.update(), gr.update(), gr.update(), "use", *settings)

    filters = [search, starred_only]
    for event in generated:
        event.success(record, inputs + [stored] + filters, [stored, listing, shown_ids], api_name=False, queue=False,
                      show_progress="hidden")
    for trigger in (panel.expand, search.change, starred_only.change):
        trigger(refresh, [stored] + filters, [listing, shown_ids], api_name=False, queue=False,
                show_progress="hidden")
    # Queued: a "no longer in the history" message shows as a toast only from a queued handler.
    listing.select(clicked, [stored, shown_ids] + filters, [stored, listing, shown_ids, action] + inputs,
                   api_name=False).then(None, action, None, js=FOCUS_PROMPT, api_name=False)
    if opener is not None:
        opener.click(None, None, None, js=OPEN_HISTORY, api_name=False)

    def prompt_history(query: str = "") -> list[dict]:
        """The server's prompt history (newest first) matching ``query``; empty where it is kept per browser."""
        return history.search(store.entries([]), query or "")

    gr.api(prompt_history, api_name="prompt_history", queue=False)
    return HistoryPanel(listing, stored)
