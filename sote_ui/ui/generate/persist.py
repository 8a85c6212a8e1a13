"""Nothing lost on reload: the form is kept in the browser's own storage, and a reloaded page finds the images
its browser made (also those of a run that was still going when the page left).

Two ``gr.BrowserState`` values live in the browser's localStorage: the form's values, written on every
change, and an id of the browser, made on its first visit. The studio keeps the latest 48 images per
browser id for a day, so the page that loads next shows them again.
"""

from __future__ import annotations

import re
import time
import uuid
from dataclasses import dataclass, replace
from typing import Any

import gradio as gr

from ...core.errors import InputError
from ...core.request import FIELD_NAMES, build_request
from ...service.studio import Shot, Studio
from ..form import FILE_FIELDS, RESOLUTION_VALUES
from ..session import SessionState
from ..wiring import session_id
from .controls import Controls
from .gallery import Gallery, shown

# Fixed names so the values outlive a server restart; the secret only obscures (the page holds it anyway).
FORM_KEY = "sote-studio-form"
BROWSER_KEY = "sote-studio-browser"
SECRET = "sote-studio-local"
TEXT_FIELDS = {"prompt", "negative_prompt", "artist"}
MAX_TEXT = 20_000
STILL_RUNNING = "a run from before the reload is still going: its images show here when it ends"
FINISHED = "the run from before the reload has finished: its images are in the gallery"
ENDED = "the run from before the reload has ended without new images"
SAVE_GRACE = 30.0  # seconds a finished job's images may take to be saved
_BROWSER_ID = re.compile(r"^[0-9a-f]{32}$")


@dataclass
class Persistence:
    """The browser's stored form and id, and the timer that waits for a run from before a reload."""

    form: gr.BrowserState
    browser: gr.BrowserState
    timer: gr.Timer


@dataclass
class EarlierRun:
    """A run of an earlier page of this browser, still going when this page loaded."""

    newest: str | None  # the browser's newest image when the page loaded
    idle_since: float | None = None  # when the job was first seen off the GPU


def form_values(*values) -> dict[str, Any]:
    """What the browser keeps of the form: every request control, then the Resolution picker."""
    return {**dict(zip(FIELD_NAMES, values)), "resolution": values[len(FIELD_NAMES)]}


def restorable(stored: Any, limits) -> dict[str, Any]:
    """The stored values the form can take back: each field alone must be one a request accepts.

    The browser's storage is the visitor's own to edit, so nothing in it is trusted; a value that does
    not fit its control is left at its default rather than failing the page.
    """
    if not isinstance(stored, dict):
        return {}
    kept = {}
    for name in FIELD_NAMES:
        value = stored.get(name)
        if value is None or name in FILE_FIELDS:  # a path in the visitor's storage must not name a server file
            continue
        if name in TEXT_FIELDS:
            if isinstance(value, str) and len(value) <= MAX_TEXT:
                kept[name] = value
            continue
        try:
            build_request({name: value}, limits=limits)
        except (InputError, TypeError, ValueError):
            continue
        kept[name] = value
    if stored.get("resolution") in RESOLUTION_VALUES:
        kept["resolution"] = stored["resolution"]
    return kept


def form_restore(values: dict[str, Any]) -> list:
    """gr.update per request control, then the Resolution picker (absent keys untouched)."""
    updates = [gr.update(value=values[name]) if name in values else gr.update() for name in FIELD_NAMES]
    updates.append(gr.update(value=values["resolution"]) if "resolution" in values else gr.update())
    return updates


def add_earlier_shots(session: SessionState, shots: list[Shot]) -> int:
    """Add the browser's shots the session lacks, each earlier run as a run of its own; how many were added.

    As after a run, the newest run's first image (lowest seed) is selected and its seed is the last seed.
    """
    have = {shot.path for shot in session.shots}
    added = 0
    previous = None
    for shot in shots:
        if shot.path in have:
            continue
        if shot.job != previous:  # runs of earlier pages keep their grouping (and their seed order)
            session.jobs += 1
            previous = shot.job
        session.shots.append(replace(shot, job=session.jobs))
        added += 1
    if added:
        newest = [i for i, shot in enumerate(session.shots) if shot.job == session.jobs]
        session.selected = min(newest, key=lambda i: session.shots[i].request.seed)
        session.last_seed = session.shots[session.selected].request.seed
    return added


def attach_persistence(studio: Studio, page: gr.Blocks, controls: Controls, state: gr.State, gallery: Gallery,
                       status: gr.Markdown) -> Persistence:
    """Keep the form in the browser and bring back, on each page load, the form and the browser's images."""
    form_store = gr.BrowserState(None, storage_key=FORM_KEY, secret=SECRET)
    browser_store = gr.BrowserState(None, storage_key=BROWSER_KEY, secret=SECRET)
    timer = gr.Timer(2.0, active=False)
    form = controls.form()

    gr.on([control.change for control in form], form_values, form, form_store, api_visibility="private",
          queue=False, show_progress="hidden", trigger_mode="always_last")

    # What the page saw of the earlier run: the newest image then, and since when the job has been idle.
    waiting = gr.State(None)

    def restore(stored, browser, session, request: gr.Request):
        browser = browser if isinstance(browser, str) and _BROWSER_ID.match(browser) else uuid.uuid4().hex
        sid = session_id(request)
        studio.attach_browser(sid, browser)
        session = session or SessionState()
        shots = studio.browser_shots(browser)
        add_earlier_shots(session, shots)
        running = studio.browser_running(browser, sid)
        earlier = EarlierRun(shots[-1].path if shots else None) if running else None
        return (*form_restore(restorable(stored, studio.config.limits)), browser, session, *shown(session),
                STILL_RUNNING if running else gr.update(), gr.Timer(active=running), earlier)

    page.load(restore, [form_store, browser_store, state],
              form + [browser_store, state, gallery.gallery, gallery.selected_prompt, gallery.image_note, status,
                      timer, waiting], api_visibility="private", queue=False, show_progress="hidden")

    def wait_for_earlier_run(browser, session, earlier, request: gr.Request):
        keep_waiting = (gr.update(), *[gr.update()] * 3, STILL_RUNNING, gr.Timer(active=True), earlier)
        if not isinstance(browser, str) or earlier is None:
            return (*keep_waiting[:4], gr.update(), gr.Timer(active=False), None)
        if studio.browser_running(browser, session_id(request)):
            earlier.idle_since = None
            # Said again on each tick: the page's load-time polling may have written over it.
            return keep_waiting
        shots = studio.browser_shots(browser)
        newest = shots[-1].path if shots else None
        if newest == earlier.newest:
            # The job has left the GPU but its images may still be being saved: wait a little for them.
            now = time.monotonic()
            earlier.idle_since = earlier.idle_since or now
            if now - earlier.idle_since < SAVE_GRACE:
                return keep_waiting
        session = session or SessionState()
        added = add_earlier_shots(session, shots)
        return session, *shown(session), FINISHED if added else ENDED, gr.Timer(active=False), None

    timer.tick(wait_for_earlier_run, [browser_store, state, waiting],
               [state, gallery.gallery, gallery.selected_prompt, gallery.image_note, status, timer, waiting],
               api_visibility="private", queue=False, show_progress="hidden")
    return Persistence(form_store, browser_store, timer)


__all__ = ["ENDED", "FINISHED", "STILL_RUNNING", "Persistence", "add_earlier_shots", "attach_persistence", "restorable"]
