"""Wildcards: parsing, seeded resolution (per image), wildcard files, and clear errors."""

from __future__ import annotations

from dataclasses import replace

import pytest
from support import wildcard_chain

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


# Work bounds: files named by many lines are read and parsed once, whatever the number of paths to them.


def chain(folder, levels: int, lines: int = 30, refs_a_line: int = 1):
    return WildcardStore([wildcard_chain(folder, levels, lines, refs_a_line)])


@pytest.fixture
def parses(monkeypatch):
    """Counts calls of ``wildcards.parse``; past 5,000 it stops the test (the unbounded check took minutes)."""
    calls = []
    real = wildcards.parse

    def counted(text, where="prompt"):
        calls.append(text)
        if len(calls) > 5000:
            raise RuntimeError("more than 5,000 templates parsed")
        return real(text, where)

    monkeypatch.setattr(wildcards, "parse", counted)
    return calls


@pytest.fixture
def reads(monkeypatch):
    """The wildcard files read from disk, in order."""
    names = []
    real = wildcards.Path.read_text

    def counted(self, *args, **kwargs):
        names.append(self.name)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(wildcards.Path, "read_text", counted)
    return names


def test_a_deep_chain_is_checked_reading_and_parsing_each_file_once(tmp_path, parses, reads):
    store = chain(tmp_path, levels=4)
    store.check("1girl, __l0__, {__l1__|__l2__}")
    assert sorted(reads) == ["l0.txt", "l1.txt", "l2.txt", "l3.txt"]
    assert len(parses) == 1 + 4 * 30  # the template, then every line of every file once
    parses.clear()
    store.check("1girl, __l0__")  # unchanged files: only the new template is parsed
    assert parses == ["1girl, __l0__"] and len(reads) == 4


def test_resolving_each_image_reparses_nothing_but_its_template(tmp_path, parses):
    store = chain(tmp_path, levels=4)
    request = GenerationRequest(prompt="1girl, __l0__", seed=50)
    store.check(request.prompt)
    parses.clear()
    jobs = [store.resolve_request(replace(request, seed=50 + i)) for i in range(3)]
    assert len(parses) == 3  # one template a image, not the files' 30^4 paths
    for job in jobs:
        assert job.prompt.startswith("1girl, pick 0-") and "pick 3-" in job.prompt and "__" not in job.prompt


def test_a_template_that_could_grow_without_bound_is_refused_up_front(tmp_path, parses):
    store = chain(tmp_path, levels=5, lines=3, refs_a_line=30)  # 30^4 copies of the last file at worst
    with pytest.raises(InputError) as info:
        store.check("__l0__")
    assert str(info.value).startswith("prompt: __l0__ can grow to more than 10,000 pieces")
    assert len(parses) == 1 + 5 * 3


def test_a_cycle_and_too_deep_a_chain_are_found_through_the_memo(tmp_path):
    store = chain(tmp_path, levels=12, lines=2)
    with pytest.raises(InputError, match=r"^wildcard __l2__: wildcards nest more than 10 deep"):
        store.check("{__l2__|x} __l1__")  # __l2__ is measured first; __l1__ then reuses it, one deeper
    with pytest.raises(InputError, match=r"^wildcard __l11__: wildcards nest more than 10 deep"):
        store.check("__l1__")  # l1 .. l10 are ten files; l11 would be the eleventh
    (tmp_path / "l3.txt").write_text("back to __l1__\n", encoding="utf-8")
    with pytest.raises(InputError) as info:
        store.check("__l0__")
    assert str(info.value) == "wildcard __l1__ refers to itself (through __l1__ -> __l2__ -> __l3__ -> __l1__)"


def test_a_thousand_nested_braces_are_an_input_error_not_a_recursion_error(tmp_path, monkeypatch):
    monkeypatch.setenv("SOTE_STUDIO_HOME", str(tmp_path))
    deep = "{" * 1000 + "smile" + "}" * 1000
    with pytest.raises(InputError) as info:
        build_request({"prompt": deep})
    assert str(info.value) == f"prompt: braces nest more than {wildcards.MAX_NESTING} deep at character 21"
    fine = "{" * wildcards.MAX_NESTING + "smile" + "}" * wildcards.MAX_NESTING
    assert wildcards.resolve(fine, 3) == "smile"


def test_names_in_any_language_with_spaces_and_dots_resolve(tmp_path):
    (tmp_path / "ünï.txt").write_text("ünï line\n", encoding="utf-8")
    (tmp_path / "my colors.txt").write_text("teal\n", encoding="utf-8")
    (tmp_path / "v1.2.txt").write_text("version two\n", encoding="utf-8")
    (tmp_path / "hair.txt").write_text("long hair\n", encoding="utf-8")
    store = WildcardStore([tmp_path])
    assert store.resolve("__ünï__, __my colors__, __v1.2__", 1) == "ünï line, teal, version two"
    for name in store.names():  # what suggestions offer is what resolves
        assert parse(f"__{name}__") == (Ref(name),)
    # double underscores that are not a name stay text
    assert store.resolve("o__o __hair__, ^_^, a__ b__", 1) == "o__o long hair, ^_^, a__ b__"


def test_messages_name_the_file_not_the_server_folder(tmp_path):
    user, shipped = tmp_path / "user", tmp_path / "shipped"
    (user / "sub").mkdir(parents=True)
    shipped.mkdir()
    (user / "sub" / "blank.txt").write_text("# only a comment\n", encoding="utf-8")
    (user / "latin1.txt").write_bytes("caf\xe9\n".encode("latin-1"))
    store = WildcardStore([user, shipped])
    messages = []
    for text in ("__gone__", "__sub/blank__", "__latin1__", "__sub/../latin1__"):
        with pytest.raises(InputError) as info:
            store.check(text)
        messages.append(str(info.value))
    assert all(str(tmp_path) not in m and "\n" not in m for m in messages), messages
    assert messages[0] == "wildcard __gone__ not found: no gone.txt in your wildcards folder or the shipped ones"
    assert messages[1] == "wildcard __sub/blank__: sub/blank.txt has no options (one a line)"
    assert messages[2] == "wildcard __latin1__: latin1.txt can't be read (it is not UTF-8 text)"
    assert messages[3].startswith("wildcard __sub/../latin1__ not found")


NO_TAGS = {"aesthetic": "none", "quality": "none", "date": "none"}


@pytest.mark.parametrize("prompt", ["{|}", "{|smile}", ", {|} ,", "__blank_line__"])
def test_a_prompt_that_can_come_out_empty_is_refused_when_no_tags_are_picked(tmp_path, monkeypatch, prompt):
    monkeypatch.setenv("SOTE_STUDIO_HOME", str(tmp_path))
    (tmp_path / "wildcards").mkdir()
    (tmp_path / "wildcards" / "blank_line.txt").write_text("smile\n{|}\n", encoding="utf-8")
    with pytest.raises(InputError) as info:
        build_request({"prompt": prompt, **NO_TAGS})
    assert str(info.value).startswith("the prompt can come out empty")
    # with picked tags, an empty pick leaves the tags: still a prompt
    request = build_request({"prompt": prompt, "seed": 1})
    assert all(wildcards.resolve_request(replace(request, seed=s)).composed_prompt() for s in range(1, 20))


def test_typing_any_wildcard_name_suggests_it_and_the_suggestion_resolves(tmp_path, monkeypatch):
    from sote_ui.core.suggestions import suggest_tags

    monkeypatch.setenv("SOTE_STUDIO_HOME", str(tmp_path))
    (tmp_path / "wildcards").mkdir()
    for name, line in (("ünï", "ünï line"), ("my colors", "teal"), ("v1.2", "version two")):
        (tmp_path / "wildcards" / f"{name}.txt").write_text(line + "\n", encoding="utf-8")
    for typed, name in (("1girl, __ün", "ünï"), ("1girl, __my c", "my colors"), ("__v1.", "v1.2")):
        (found,) = suggest_tags(typed)
        assert (found["tag"], found["category"], found["count"]) == (name, "wildcard", 1)
        assert wildcards.resolve(found["text"], 1) == {"ünï": "ünï line", "my colors": "teal",
                                                       "v1.2": "version two"}[name] + ", "
    # double underscores earlier in a tag leave the tag suggestions
    assert suggest_tags("o__o, long h")[0]["tag"] == "long_hair"
    assert suggest_tags("o__o, __my")[0]["tag"] == "my colors"


def test_a_file_changed_after_the_check_still_resolves_within_the_bounds(tmp_path):
    (tmp_path / "a.txt").write_text("smile\n", encoding="utf-8")
    store = WildcardStore([tmp_path])
    request = GenerationRequest(prompt="__a__", seed=1, **NO_TAGS)
    store.check_request(request)
    (tmp_path / "a.txt").write_text("again __a__\n", encoding="utf-8")
    with pytest.raises(InputError) as info:
        store.resolve_request(request)
    assert str(info.value) == "wildcard __a__ refers to itself (through __a__ -> __a__)"
    (tmp_path / "a.txt").write_text("{|}, \n", encoding="utf-8")
    with pytest.raises(InputError) as info:
        store.resolve_request(request)
    assert str(info.value) == "the prompt came out empty for seed 1: give every choice a tag"
    (tmp_path / "b.txt").write_text("x" * 60_000 + "\n", encoding="utf-8")
    (tmp_path / "a.txt").write_text("__b__ __b__\n", encoding="utf-8")
    with pytest.raises(InputError) as info:
        store.resolve_request(request)
    assert str(info.value).startswith("the wildcards grew past 10,000 pieces or 100,000 characters of text")
    with pytest.raises(InputError, match=r"^prompt: __a__ can grow to more than 100,000 characters of text"):
        store.check_request(request)
