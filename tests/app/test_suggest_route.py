"""The plain suggestion route beside the app: GET /sote_api/suggest_tags, served without Gradio's queue.

A live server on the tiny pair (CPU, fp32); plain HTTP as the page's script calls it. The /suggest_tags
API endpoint stays for scripts and answers the same.
"""

from __future__ import annotations

import httpx
import pytest
from support import make_studio, serve_app

ROUTE = "/sote_api/suggest_tags"


def get(app, text: str, category: str | None = None, **kwargs):
    params = {"text": text} if category is None else {"text": text, "category": category}
    return httpx.get(app.url.rstrip("/") + ROUTE, params=params, timeout=30, **kwargs)


def test_the_route_answers_as_the_api_endpoint_does(app, client):
    reply = get(app, "1girl, long h")
    assert reply.status_code == 200
    found = reply.json()
    assert found[0]["text"] == "long hair, " and found[0]["category"] == "general"
    assert found == client.predict("1girl, long h", "", api_name="/suggest_tags")
    cosplay = get(app, "kanzaki ranko (cos").json()
    assert cosplay[0]["text"] == "kanzaki ranko \\(cosplay\\), "


def test_the_artist_field_and_a_bad_category(app):
    artists = get(app, "wlo", "artist").json()
    assert artists[0]["text"] == "wlop" and {a["category"] for a in artists} == {"artist"}
    reply = get(app, "wlo", "painter")
    assert reply.status_code == 400
    assert reply.json() == {"error": "category must be '' (all tags) or 'artist', got 'painter'"}


def test_nothing_typed_gives_no_suggestions(app):
    assert get(app, "").json() == []
    assert get(app, "1girl, ").json() == []


@pytest.fixture(scope="module")
def guarded(tiny_pair, tmp_path_factory):
    """The app behind a password, as ``--auth user:secret`` serves it."""
    studio = make_studio(tiny_pair, tmp_path_factory.mktemp("guarded"))
    with serve_app(studio, auth=("user", "secret")) as served:
        yield served


def test_behind_a_password_the_route_wants_the_login_too(guarded):
    assert get(guarded, "long h").status_code == 401
    with httpx.Client(base_url=guarded.url.rstrip("/"), timeout=30) as browser:
        assert browser.post("/login", data={"username": "user", "password": "secret"}).status_code == 200
        reply = browser.get(ROUTE, params={"text": "long h"})
    assert reply.status_code == 200 and reply.json()[0]["text"] == "long hair, "
