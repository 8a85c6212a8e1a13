"""Prompt tools for the Generate tab: tag suggestions as you type, keyboard habits, and the prompt history.

- ``/suggest_tags`` (``text``, optional ``category`` "artist") returns ranked Danbooru tag suggestions;
  the page's script (``prompt_tools.js``, loaded into the page's head) calls it as you type.
- Ctrl+Enter / Cmd+Enter generates; Ctrl+Up / Ctrl+Down change the weight of the tag at the cursor.
- Every generated prompt goes into a searchable history (:mod:`.history_panel`).
- The line under the prompt box flags unknown, repeated and untrained tags as you type (:func:`flags_line`).

Example::

    with gr.Blocks() as demo:
        generate = build_generate_tab(studio)     # calls attach_prompt_tools at its end
    demo.launch(head=script_head())
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gradio as gr

from ...core import fixer, suggestions
from ...core.errors import InputError
from ...service.studio import Studio
from .history_panel import HistoryPanel, build_history

SCRIPT = Path(__file__).with_name("prompt_tools.js")


def script_head() -> str:
    """The ``<script>`` for ``launch(head=...)``: suggestions, weights and Ctrl+Enter in the page."""
    return f"<script>\n{SCRIPT.read_text(encoding='utf-8')}\n</script>"


def suggest_tags(text: str, category: str = "") -> list[dict[str, Any]]:
    """Ranked Danbooru tags for what was typed of the current tag (see :func:`sote_ui.core.suggestions.suggest_tags`).

    ``text`` may be the whole prompt up to the cursor; ``category="artist"``
    looks up artist names only. Each suggestion has ``text`` (what to insert),
    ``tag``, ``category``, ``count`` and ``alias``.
    """
    try:
        return suggestions.suggest_tags(text, category)
    except InputError as exc:
        raise gr.Error(str(exc), print_exception=False) from None


def flags_line(prompt: str) -> str:
    """Unknown, repeated and untrained tags of ``prompt`` as one line ('' when none, or while the tag lookups
    are still being built: typing never waits for them). The tag still being typed is left alone."""
    if not fixer.ready():
        return ""
    # LoRA tags have their own note on that line (ui/form.py)
    return fixer.flags_markdown([f for f in fixer.analyze(str(prompt or ""), typing=True) if f.kind != "lora"])


def attach_prompt_tools(studio: Studio, inputs: list, generated: list) -> HistoryPanel:
    """Add the suggestion endpoint and the history panel to the Generate tab being built.

    ``inputs`` are the request controls in field order; ``generated`` the
    events that generate (the button, the prompt box's submit): each prompt
    they generate goes into the history. The suggestions, weights and
    Ctrl+Enter live in the page's script, loaded through ``script_head()``.
    """
    gr.api(suggest_tags, api_name="suggest_tags", queue=False)
    suggestions.warm_up()
    return build_history(studio, inputs, generated)


__all__ = ["attach_prompt_tools", "flags_line", "script_head", "suggest_tags"]
