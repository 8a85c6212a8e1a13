"""Prompt tools given odd input, on a live server: /suggest_tags with a null or a number for its category,
and the prompt history panel's events as the page sends them (refused runs, entries gone from the list).

The page's own events are private (no API name): they are called here the way the page calls them, by
their index, with a session of their own. The user folder is a temporary SOTE_STUDIO_HOME.
"""

from __future__ import annotations

import uuid

import httpx
import pytest

from sote_ui.core import history
from sote_ui.core.history import HistoryFile

PANEL = "sote_ui.ui.generate.history_panel"


def suggest(app, data: list) -> httpx.Response:
    return httpx.post(app.url.rstrip("/") + "/gradio_api/run/suggest_tags", json={"data": data}, timeout=30)


def page_event(app, name: str, session: str, values: dict | None = None, event_data: dict | None = None):
    """Call the history panel's event function ``name`` as the page does; inputs are the components' own
    values unless ``values`` (by elem_id, or by kind: "state") says otherwise. Returns (status, reply)."""
    index, fn = next((i, f) for i, f in app.demo.fns.items()
                     if f.name == name and getattr(f.fn, "__module__", "") == PANEL)
    values = values or {}
    data = []
    for block in fn.inputs:
        key = block.elem_id or ("state" if block.stateful else type(block).__name__)
        data.append(values.get(key, None if block.stateful else getattr(block, "value", None)))
    body = {"data": data, "fn_index": index, "session_hash": session, "event_data": event_data}
    reply = httpx.post(app.url.rstrip("/") + "/gradio_api/run/predict", json=body, timeout=60)
    return reply.status_code, reply.json()


def history_file(app) -> HistoryFile:
    return HistoryFile(app.presets.parent / "history.json")


# 1. /suggest_tags ---------------------------------------------------------------------------


def test_a_null_category_is_every_category(app):
    plain, null = suggest(app, ["long h", ""]), suggest(app, ["long h", None])
    assert null.status_code == 200, null.text
    assert null.json()["data"] == plain.json()["data"]
    assert null.json()["data"][0][0]["tag"] == "long_hair"


@pytest.mark.parametrize("category, shown", [(5, "'5'"), ([1], "'[1]'"), ("nope", "'nope'")])
def test_another_category_is_a_one_line_input_error(app, category, shown):
    reply = suggest(app, ["long h", category])
    assert reply.status_code == 500
    assert reply.json()["error"] == f"category must be '' (all tags) or 'artist', got {shown}"


# 2. The history panel ----------------------------------------------------------------------------


def test_a_refused_run_is_not_recorded_and_an_accepted_one_is(app):
    session = uuid.uuid4().hex
    refused = "1girl, " + "x" * 9000  # past the 8,000 characters a prompt may hold
    status, _ = page_event(app, "record", session, {"prompt": refused})
    assert status == 200
    assert all(not e["settings"]["prompt"].startswith("1girl, xxx") for e in history_file(app).load())
    status, _ = page_event(app, "record", session, {"prompt": "1girl, accepted run"})
    assert status == 200
    assert history_file(app).load()[0]["settings"]["prompt"] == "1girl, accepted run"


def test_starring_an_entry_no_longer_listed_is_a_one_line_message_with_no_ids(app):
    file = history_file(app)
    file.save(history.add(file.load(), {"prompt": "a prompt soon pushed out", "negative_prompt": ""}))
    session = uuid.uuid4().hex
    page_event(app, "refresh", session)  # the list as this visitor's page shows it: that prompt on top
    file.save(history.add([e for e in file.load() if e["settings"]["prompt"] != "a prompt soon pushed out"],
                          {"prompt": "another visitor's prompt", "negative_prompt": ""}))
    others = [e["id"] for e in file.load()]
    status, reply = page_event(app, "clicked", session, event_data={"index": [0, 0], "value": "☆"})
    assert status == 500
    assert reply["error"] == "that prompt is no longer in the history: pick one in the list"
    assert not any(key in str(reply) for key in others)
