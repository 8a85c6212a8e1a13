"""Keyboard shortcuts: the page's script (``keyboard.js``) and the list a person can open to read them."""

from __future__ import annotations

from html import escape
from pathlib import Path

SCRIPT = Path(__file__).with_name("keyboard.js")

SHORTCUTS = (
    ("Ctrl+Enter", "Generate (from the prompt boxes)"),
    ("Esc", "Stop the running job (after closing an open list)"),
    ("Alt+G", "Jump to the gallery's selected image"),
    ("Ctrl+Up / Ctrl+Down", "Raise or lower the weight of the tag at the cursor"),
    ("Tab / Enter", "Take the highlighted tag suggestion"),
)


def keyboard_head() -> str:
    """The ``<script>`` for ``launch(head=...)``."""
    return f"<script>\n{SCRIPT.read_text(encoding='utf-8')}\n</script>"


def shortcuts_html() -> str:
    """A folded list of the shortcuts (a <details> popover)."""
    rows = "".join(f"<tr><td><kbd>{escape(keys)}</kbd></td><td>{escape(what)}</td></tr>" for keys, what in SHORTCUTS)
    return f"<details><summary>⌨ Keyboard shortcuts</summary><table>{rows}</table></details>"
