"""Wildcards: parsing, seeded resolution (per image), wildcard files, and clear errors."""

from __future__ import annotations

from dataclasses import replace

import pytest

from sote_ui.core import wildcards
from sote_ui.core.errors import InputError
from sote_ui.core.request import GenerationRequest, build_request
from sote_ui.core.wildcards import Choice, Ref, WildcardStore, has_template, parse


@pytest.fixture
def store(tmp_path):
    user, shipped = tmp_path / "user", tmp_path / "shipped"
    user.mkdir()
    shipped.mkdir()
    (shipped / "color.txt").write_text("# colours\nred\n\nblue\ngreen\n", encoding="utf-8")
    (user / "color.txt").write_text("silver\ngold\n", encoding="utf-8")  # the user's file wins
    (shipped / "pose.txt").write_text("standing\nsitting, {smile|frown}\n", encoding="utf-8")
    (shipped / "a.txt").write_text("x __b__\n", encoding="utf-8")
    (shipped / "b.txt").write_text("y __a__\n", encoding="utf-8")
    (shipped / "empty.txt").write_text("# nothing here\n\n", encoding="utf-8")
    (shipped / "sub").mkdir()
    (shipped / "sub" / "hat.txt").write_text("beret\n", encoding="utf-8")
    return WildcardStore([user, shipped])


def test_parse_structure():
    assert parse("a {b|c{d|e}} __x__") == (
        "a ", Choice((("b",), ("c", Choice((("d",), ("e",)))))), " ", Ref("x"))
    assert parse("plain, (tag:1.2)") == ("plain, (tag:1.2)",)
    assert parse("\\{not\\|a choice\\} a|b") == ("{not|a choice} a|b",)
    assert parse("{|smile}") == (Choice(((), ("smile",))),)


@pytest.mark.parametrize("text, message", [
    ("1girl, {red|blue hair", "prompt: '{' at character 8 is never closed with '}'"),
    ("1girl, red}", "prompt: '}' at character 11 closes no '{'"),
])
def test_malformed_templates_name_the_place(text, message):
    with pytest.raises(InputError) as info:
        parse(text)
    assert str(info.value) == message


def test_same_seed_same_choices_other_seeds_vary(store):
    template = "{a|b|c|d|e|f|g|h}, __color__, {1|2|3|4|5|6|7|8}"
    first = [store.resolve(template, seed) for seed in range(40)]
    assert first == [store.resolve(template, seed) for seed in range(40)]
    assert len(set(first)) > 10
    for text in first:
        a, color, b = text.split(", ")
        assert a in "abcdefgh" and color in ("silver", "gold") and b in "12345678"


def test_every_option_is_reachable_and_each_occurrence_picks_on_its_own(store):
    seen = {store.resolve("{red|blue|green}", seed) for seed in range(60)}
    assert seen == {"red", "blue", "green"}
    pairs = {store.resolve("{x|y} {x|y}", seed) for seed in range(60)}
    assert "x y" in pairs and "y x" in pairs


def test_wildcard_files_user_first_nested_and_subfolders(store):
    assert {store.resolve("__color__", s) for s in range(30)} == {"silver", "gold"}
    poses = {store.resolve("__pose__", s) for s in range(60)}
    assert poses == {"standing", "sitting, smile", "sitting, frown"}
    assert store.resolve("__sub/hat__", 1) == "beret"
    assert store.names() == ["a", "b", "color", "empty", "pose", "sub/hat"]


def test_text_without_templates_is_unchanged(store):
    text = "1girl, (long hair:1.2), kanzaki ranko \\(cosplay\\), ^_^"
    assert not has_template(text)
    assert store.resolve(text, 5) == text


@pytest.mark.parametrize("text, message", [
    ("__missing__", "wildcard __missing__ not found: no missing.txt in "),
    ("__empty__", "wildcard __empty__: "),
    ("__a__", "wildcard __a__ refers to itself (through __a__ -> __b__ -> __a__)"),
    ("{ok|__missing__}", "wildcard __missing__ not found"),
])
def test_bad_wildcards_are_reported_by_name_before_resolving(store, text, message):
    with pytest.raises(InputError) as info:
        store.check(text)
    assert str(info.value).startswith(message)
    assert "\n" not in str(info.value)


def test_request_resolution_per_image_seed(store):
    request = GenerationRequest(prompt="{red|blue|green} hair, {smile|frown}", negative_prompt="{bad|worse}",
                                seed=100)
    jobs = [store.resolve_request(replace(request, seed=100 + i)) for i in range(12)]
    assert all(not has_template(job.prompt) and not has_template(job.negative_prompt) for job in jobs)
    assert len({job.prompt for job in jobs}) > 1  # each image draws its own
    assert jobs[3] == store.resolve_request(replace(request, seed=103))
    untouched = GenerationRequest(prompt="1girl", seed=1)
    assert store.resolve_request(untouched) is untouched


def test_build_request_refuses_bad_templates_up_front(tmp_path, monkeypatch):
    monkeypatch.setenv("SOTE_STUDIO_HOME", str(tmp_path))
    with pytest.raises(InputError, match=r"^prompt: '\{' at character 1 is never closed"):
        build_request({"prompt": "{red|blue"})
    with pytest.raises(InputError, match=r"^wildcard __nobody__ not found: no nobody.txt in "):
        build_request({"negative_prompt": "__nobody__"})
    (tmp_path / "wildcards").mkdir()
    (tmp_path / "wildcards" / "nobody.txt").write_text("lowres\n", encoding="utf-8")
    request = build_request({"negative_prompt": "__nobody__", "seed": 3})
    assert wildcards.resolve_request(request).negative_prompt == "lowres"


def test_shipped_examples_resolve():
    text = wildcards.resolve("__hair_color__, __eye_color__, __outfit__", 42)
    assert text == wildcards.resolve("__hair_color__, __eye_color__, __outfit__", 42)
    hair = text.split(", ")[0]
    assert hair.endswith("hair") and not has_template(text)


def test_a_weight_brought_by_a_wildcard_line_is_checked_after_picking(tmp_path):
    (tmp_path / "loud.txt").write_text("(smile:9)\n", encoding="utf-8")
    store = WildcardStore([tmp_path])
    with pytest.raises(InputError, match=r"^the prompt \(wildcards picked for seed 4\) has the weight 9"):
        store.resolve_request(GenerationRequest(prompt="__loud__", seed=4))
