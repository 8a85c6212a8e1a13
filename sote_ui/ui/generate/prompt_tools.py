"""Prompt tools for the Generate tab: tag suggestions as you type, keyboard habits, and the prompt history.

- ``GET /sote_api/suggest_tags?text=...&category=`` returns ranked Danbooru tag suggestions as JSON; the
  page's script (``prompt_tools.js``, loaded into the page's head) calls it as you type. It is a plain
  route beside the app (:func:`suggest_routes`, passed to ``launch(app_kwargs=...)``), answered without
  Gradio's queue and event processing, so the popup keeps up with typing while a run is going.
- ``/suggest_tags`` (``text``, optional ``category`` "artist"), the same lookup as a Gradio API endpoint
  for scripts.
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
from fastapi import Request
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute

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


ROUTE = "/sote_api/suggest_tags"


def _signed_in(request: Request) -> bool:
    """Whether the page's visitor may use the app: always without ``--auth``, else with Gradio's login cookie."""
    app = request.app
    if getattr(app, "auth", None) is None and getattr(app, "auth_dependency", None) is None:
        return True
    if app.auth_dependency is not None:
        return app.auth_dependency(request) is not None
    cookie = getattr(app, "cookie_id", "")
    token = request.cookies.get(f"access-token-{cookie}") or request.cookies.get(f"access-token-unsecure-{cookie}")
    return app.tokens.get(token) is not None


def suggest_route(request: Request, text: str = "", category: str = "") -> JSONResponse:
    """``GET /sote_api/suggest_tags``: what :func:`suggest_tags` returns, as JSON (400 with a one-line
    ``error`` for a bad category, 401 while a password-protected app is not signed in)."""
    if not _signed_in(request):
        return JSONResponse({"error": "Not authenticated"}, status_code=401)
    try:
        return JSONResponse(suggestions.suggest_tags(text, category))
    except InputError as exc:
        return JSONResponse({"error": str(exc)}, status_code=400)


def suggest_routes() -> list[APIRoute]:
    """The plain routes to serve beside the app: ``launch(app_kwargs={"routes": suggest_routes()})``.

    A plain (sync) FastAPI route runs in the server's thread pool as soon as
    it arrives: no queue, no session and no pre- or postprocessing, which is
    what makes Gradio's ``/run`` route cost tens of milliseconds per lookup.
    """
    return [APIRoute(ROUTE, suggest_route, methods=["GET"], include_in_schema=False)]


def flags_line(prompt: str) -> str:
    """Unknown, repeated and untrained tags of ``prompt`` as one line ('' when none, or while the tag lookups
    are still being built: typing never waits for them). The tag still being typed is left alone."""
    if not fixer.ready():
        return ""
    # LoRA tags have their own note on that line (ui/form.py)
    return fixer.flags_markdown([f for f in fixer.analyze(str(prompt or ""), typing=True) if f.kind != "lora"])


def attach_prompt_tools(studio: Studio, inputs: list, generated: list,
                        history_opener: gr.Button | None = None) -> HistoryPanel:
    """Add the suggestion endpoint and the history panel to the Generate tab being built.

    ``inputs`` are the request controls in field order; ``generated`` the
    events that generate (the button, the prompt box's submit): each prompt
    they generate goes into the history. The suggestions, weights and
    Ctrl+Enter live in the page's script, loaded through ``script_head()``.
    """
    gr.api(suggest_tags, api_name="suggest_tags", queue=False)
    suggestions.warm_up()
    return build_history(studio, inputs, generated, history_opener)


__all__ = ["ROUTE", "attach_prompt_tools", "flags_line", "script_head", "suggest_routes", "suggest_tags"]
