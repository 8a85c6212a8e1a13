"""Prompt tools through the API and the CLI: /suggest_tags and wildcards in /generate and the CLI.

A live server on the tiny random-weight pair (CPU, fp32), driven with gradio_client and plain HTTP
(the page's script calls /gradio_api/run/suggest_tags). The user folder (wildcards, history) is a
temporary SOTE_STUDIO_HOME.
"""

from __future__ import annotations

import os
import socket

import httpx
import pytest
from gradio_client import Client
from PIL import Image

from sote_ui.cli import main
from sote_ui.core import wildcards
from sote_ui.core.metadata import parse_parameters, read_parameters

SMALL = {"width": 128, "height": 128, "prior_steps": 2, "decoder_steps": 1}
TEMPLATE = "1girl, {red|blue|green|silver} hair, __mood__"
MOODS = ("smile", "frown", "crying", "laughing", "sleepy")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    """A private SOTE_STUDIO_HOME with a user wildcard file ``mood.txt``."""
    folder = tmp_path_factory.mktemp("studio-home")
    (folder / "wildcards").mkdir()
    (folder / "wildcards" / "mood.txt").write_text("\n".join(MOODS) + "\n", encoding="utf-8")
    old = os.environ.get("SOTE_STUDIO_HOME")
    os.environ["SOTE_STUDIO_HOME"] = str(folder)
    yield folder
    if old is None:
        os.environ.pop("SOTE_STUDIO_HOME", None)
    else:
        os.environ["SOTE_STUDIO_HOME"] = old


@pytest.fixture(scope="module")
def app(tiny_pair, home):
    from sote_ui.service.studio import Studio, StudioConfig
    from sote_ui.ui.app import build_demo

    prior, decoder = tiny_pair
    studio = Studio(StudioConfig(prior=str(prior), decoder=str(decoder), device="cpu", mode="fp32",
                                 outputs=str(home / "outputs"), presets_dir=str(home / "presets")))
    demo = build_demo(studio)
    demo.queue(max_size=8, default_concurrency_limit=1)
    studio.start_loading()
    _, url, _ = demo.launch(prevent_thread_lock=True, server_name="127.0.0.1", server_port=free_port(),
                            quiet=True, show_error=True)
    assert studio.wait_loaded(300), studio.status()
    try:
        yield url
    finally:
        demo.close()


@pytest.fixture(scope="module")
def client(app):
    c = Client(app, verbose=False)
    yield c
    c.close()


def prompt_of(path) -> str:
    with Image.open(path) as image:
        return parse_parameters(read_parameters(image))["prompt"]


# 1. Tag suggestions ---------------------------------------------------------------------


def test_suggest_tags_ranks_tags_with_category_and_count(client):
    results = client.predict("long h", "", api_name="/suggest_tags")
    first = results[0]
    assert first["text"] == "long hair, " and first["tag"] == "long_hair"
    assert first["category"] == "general" and first["count"] > 1_000_000
    assert [r["text"] for r in client.predict("/lh", "", api_name="/suggest_tags")] == ["long hair, "]
    cosplay = client.predict("1girl, kanzaki ranko (cos", "", api_name="/suggest_tags")
    assert cosplay[0]["text"] == "kanzaki ranko \\(cosplay\\), "


def test_suggest_tags_for_the_artist_field(client):
    results = client.predict("wlo", "artist", api_name="/suggest_tags")
    assert results and all(r["category"] == "artist" for r in results)
    assert results[0]["text"] == "wlop"


def test_typing_a_wildcard_suggests_wildcard_files(client):
    results = client.predict("1girl, __", "", api_name="/suggest_tags")
    names = [r["tag"] for r in results]
    assert {"mood", "hair_color", "eye_color", "outfit"} <= set(names)  # the user's and the shipped ones
    (mood,) = client.predict("1girl, __mo", "", api_name="/suggest_tags")
    assert (mood["text"], mood["category"], mood["count"]) == ("__mood__, ", "wildcard", len(MOODS))


def test_suggest_tags_over_plain_http_as_the_page_calls_it(app):
    reply = httpx.post(app.rstrip("/") + "/gradio_api/run/suggest_tags", json={"data": ["best", ""]}, timeout=30)
    assert reply.status_code == 200
    first = reply.json()["data"][0][0]
    assert (first["text"], first["category"]) == ("best quality, ", "quality")


def test_suggest_tags_refuses_an_unknown_category(app):
    reply = httpx.post(app.rstrip("/") + "/gradio_api/run/suggest_tags", json={"data": ["a", "nope"]}, timeout=30)
    assert reply.status_code == 500
    assert "category must be" in reply.text


# 2. Wildcards in /generate --------------------------------------------------------------


def test_each_image_gets_its_own_seeded_choices_in_metadata_and_caption(client, home):
    images, _summary, report, _, _ = client.predict(**SMALL, prompt=TEMPLATE, seed=700, count=3,
                                                    api_name="/generate")
    assert report["seeds"] == [700, 701, 702]
    expected = [wildcards.resolve(TEMPLATE, seed) for seed in (700, 701, 702)]
    assert all("{" not in p and "__" not in p for p in expected)
    for seed, path, text in zip(report["seeds"], report["files"], expected):
        assert prompt_of(path) == text, seed
        assert text.split(", ")[2] in MOODS
    # this job's images in seed order, each captioned with its own prompt
    assert [item["caption"] for item in images] == [f"seed {s} · {t}" for s, t in zip(report["seeds"], expected)]
    # the same seed gives the same prompt again
    _, _, again, _, _ = client.predict(**SMALL, prompt=TEMPLATE, seed=701, count=1, api_name="/generate")
    assert prompt_of(again["files"][0]) == expected[1]


@pytest.mark.parametrize("prompt, message", [
    ("1girl, __no_such_list__", "wildcard __no_such_list__ not found: no no_such_list.txt in"),
    ("1girl, {red|blue hair", "prompt: '{' at character 8 is never closed with '}'"),
])
def test_bad_templates_are_one_line_errors(client, prompt, message):
    with pytest.raises(Exception) as info:
        client.predict(**SMALL, prompt=prompt, seed=720, count=1, api_name="/generate")
    assert message in str(info.value)


# 3. The CLI ----------------------------------------------------------------------------------


def test_cli_resolves_wildcards_per_image(tiny_pair, home, tmp_path, capsys):
    prior, decoder = tiny_pair
    out = tmp_path / "out"
    code = main(["generate", "--prompt", TEMPLATE, "--seed", "740", "--count", "2", "--out", str(out),
                 "--width", "128", "--height", "128", "--prior-steps", "2", "--decoder-steps", "1", "--quiet",
                 "--prior", str(prior), "--decoder", str(decoder), "--mode", "fp32", "--device", "cpu"])
    printed = capsys.readouterr().out.split()
    assert code == 0
    assert [prompt_of(path) for path in printed] == [wildcards.resolve(TEMPLATE, s) for s in (740, 741)]


def test_cli_names_a_missing_wildcard(tiny_pair, home, capsys):
    prior, decoder = tiny_pair
    code = main(["generate", "--prompt", "__no_such_list__", "--prior", str(prior), "--decoder", str(decoder)])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("error: wildcard __no_such_list__ not found") and len(err.strip().splitlines()) == 1


def test_without_a_user_folder_the_history_lives_in_the_browser_state():
    from sote_ui.core import history
    from sote_ui.service.studio import Studio, StudioConfig
    from sote_ui.ui.generate.history_panel import HistoryStore

    store = HistoryStore(Studio(StudioConfig(presets_dir=None, outputs=None)))
    assert store.file is None
    stored = store.change([], lambda old: history.add(old, {"prompt": "1girl", "negative_prompt": ""}))
    stored = store.change(stored, lambda old: history.add(old, {"prompt": "1boy", "negative_prompt": ""}))
    assert [e["settings"]["prompt"] for e in store.entries(stored)] == ["1boy", "1girl"]
    assert store.entries("garbage from another version") == []
