"""The prompt fixer on the shipped tag list: each kind of finding, its fix, Fix all and the A1111 rewrite."""

from __future__ import annotations

import pytest

from sote_ui.core import fixer
from sote_ui.core.request import build_request


def kinds(text: str, **options) -> list[tuple[str, str, str | None]]:
    return [(f.kind, f.tag, f.fix) for f in fixer.analyze(text, **options)]


def fake_counts(text: str) -> list[int]:
    """One token per character, cut into 75-token chunks (a stand-in for the encoder's split)."""
    n = len(text)
    return [75] * (n // 75) + ([n % 75] if n % 75 or not n else [])


# 1. Unknown tags and their nearest known ones -----------------------------------------------------


@pytest.mark.parametrize("typed,nearest", [
    ("lnog hair", "long hair"),  # two letters swapped
    ("blurry backgrond", "blurry background"),  # a letter left out
    ("hair long", "long hair"),  # the same words reordered
    ("head phones", "headphones"),  # a space too many
])
def test_an_unknown_tag_gets_the_nearest_known_one(typed, nearest):
    (finding,) = fixer.analyze(f"1girl, {typed}, smile")
    assert (finding.kind, finding.tag, finding.fix) == ("unknown", typed, nearest)
    assert finding.options[0] == nearest and finding.piece == 1
    assert f"did you mean `{nearest}`" in finding.message
    assert fixer.fix_all(f"1girl, {typed}, smile") == f"1girl, {nearest}, smile"


def test_underscores_and_aliases_become_the_tag_the_model_was_trained_with():
    assert kinds("long_hair, longhair, kanzaki_ranko_(cosplay)") == [
        ("spelling", "long_hair", "long hair"),
        ("duplicate", "longhair", ""),  # the alias of the tag before it
        ("spelling", "kanzaki_ranko_(cosplay)", "kanzaki ranko \\(cosplay\\)"),
    ]
    assert kinds("1girls, smile") == [("alias", "1girls", "1girl")]
    assert fixer.fix_all("long_hair, kanzaki_ranko_(cosplay)") == "long hair, kanzaki ranko \\(cosplay\\)"


def test_an_unknown_tag_with_nothing_close_is_flagged_but_left_as_written():
    (finding,) = fixer.analyze("1girl, a girl standing in the rain")
    assert (finding.kind, finding.fix, finding.action) == ("unknown", None, "none")
    assert "none is close" in finding.message
    assert fixer.fix_all("1girl, a girl standing in the rain") == "1girl, a girl standing in the rain"


def test_known_tags_wildcards_break_and_artists_are_not_flagged():
    text = "very aesthetic, best quality, newest, 1girl, {red|blue} hair, __mood__, art by someone BREAK smile"
    assert fixer.analyze(text) == []


def test_the_tag_being_typed_is_not_unknown_while_it_starts_a_known_one():
    assert fixer.analyze("1girl, long ha", typing=True) == []
    assert kinds("1girl, long ha") == [("unknown", "long ha", "long hair")]
    assert kinds("1girl, lnog ha", typing=True)[0][:2] == ("unknown", "lnog ha")
    assert kinds("1girl, long ha,", typing=True)[0][:2] == ("unknown", "long ha")  # finished with a comma
    assert kinds("1girl, volumetric") == [("unknown", "volumetric", None)]  # a word, not "volumetric lighting" cut


# 2. Duplicates ----------------------------------------------------------------------------------


def test_a_repeated_tag_is_dropped_in_any_spelling():
    assert kinds("1girl, solo, 1girl, Solo") == [("duplicate", "1girl", ""), ("duplicate", "Solo", "")]
    assert fixer.fix_all("1girl, solo, 1girl, Solo") == "1girl, solo"
    assert fixer.fix_all("long hair, smile, long_hair\nhat") == "long hair, smile\nhat"


def test_the_repeat_that_carries_emphasis_is_the_one_kept():
    assert kinds("smile, 1girl, (smile:1.3)") == [("duplicate", "smile", "")]
    assert fixer.fix_all("smile, 1girl, (smile:1.3)") == "1girl, (smile:1.3)"


# 3. Past the third chunk ------------------------------------------------------------------------


def test_tags_past_the_third_chunk_are_found_and_fix_all_drops_them():
    parts = [f"tag{i:02d}" for i in range(50)]
    text = ", ".join(parts)
    assert len(fake_counts(text)) == 5
    past = [f for f in fixer.analyze(text, fake_counts) if f.kind == "past_chunks"]
    assert past and [f.tag for f in past] == parts[len(parts) - len(past):]
    assert "past the third 75-token chunk" in past[0].message
    fixed = fixer.fix_all(text, fake_counts)
    assert fixed == ", ".join(parts[:len(parts) - len(past)])
    assert len(fake_counts(fixed)) == 3


# 4. Words the model was not trained with ----------------------------------------------------------


def test_quality_words_of_other_models_map_to_the_cards_or_go():
    text = "masterpiece, best quality, 8k, ultra detailed, highres, absurdres, year 2020, rating:explicit, 1girl"
    assert kinds(text) == [
        ("untrained", "masterpiece", "best quality"),
        ("duplicate", "best quality", ""),  # masterpiece already became best quality
        ("untrained", "8k", ""),
        ("untrained", "ultra detailed", ""),
        ("untrained", "highres", ""),  # Danbooru meta tags: the tagger writes none
        ("untrained", "absurdres", ""),
        ("untrained", "year 2020", "recent"),  # the card's date tag for 2019-2021
        ("untrained", "rating:explicit", "explicit nsfw"),
    ]
    assert fixer.fix_all(text) == "best quality, recent, explicit nsfw, 1girl"
    assert "meta tag" in fixer.analyze("1girl, absurdres")[0].message


def test_the_cards_own_tags_pass():
    assert fixer.analyze("extremely aesthetic, best quality, newest, sensitive, visual novel cg, 1girl") == []


# 5. One fix at a time, emphasis kept ------------------------------------------------------------


def test_one_fix_applies_alone_and_keeps_the_emphasis_around_the_tag():
    text = "(lnog_hair:1.2), ((masterpiece)), [8k], smile"
    findings = fixer.analyze(text)
    assert [f.kind for f in findings] == ["unknown", "untrained", "untrained"]
    assert fixer.apply(text, findings[:1]) == "(long hair:1.2), ((masterpiece)), [8k], smile"
    assert fixer.apply(text, findings[1:2]) == "(lnog_hair:1.2), ((best quality)), [8k], smile"
    assert fixer.apply(text, findings[2:]) == "(lnog_hair:1.2), ((masterpiece)), smile"


@pytest.mark.parametrize("text,fixed", [
    ("(8k, 1girl:1.2), solo", "(1girl:1.2), solo"),  # the group stays open for the next tag
    ("(1girl, 8k:1.2), solo", "(1girl:1.2), solo"),  # and closed after the one before
    ("1girl, solo, 8k", "1girl, solo"),
    ("1girl, solo, 8k,", "1girl, solo,"),
    ("8k, 1girl", "1girl"),
])
def test_dropping_a_tag_leaves_the_brackets_and_commas_whole(text, fixed):
    assert fixer.fix_all(text) == fixed


def test_a_fix_found_in_other_text_is_not_applied():
    finding = fixer.analyze("1girl, 8k")[0]
    assert fixer.apply("1girl, smile", [finding]) == "1girl, smile"


# 6. An A1111 prompt rewritten for this model ------------------------------------------------------


def test_an_a1111_prompt_is_rewritten_with_its_emphasis_kept():
    a1111 = ("(masterpiece:1.2), best_quality, absurdres, 1girl, (long_hair:1.1), blue_eyes, <lora:add_detail:0.8>, "
             "ultra-detailed, [smile]")
    text, notes = fixer.rewrite_a1111(a1111)
    assert text == "(best quality:1.2), 1girl, (long hair:1.1), blue eyes, [smile]"
    assert "`masterpiece` → `best quality`" in notes
    assert "dropped `<lora:add_detail:0.8>` (no such LoRA here)" in notes
    build_request({"prompt": text})  # what it writes is a valid prompt


def test_the_flags_line_names_unknown_and_repeated_tags():
    line = fixer.flags_markdown(fixer.analyze("1girl, lnog hair, 1girl"))
    assert line == "**Check**: unknown `lnog hair` → `long hair` · repeat `1girl`"
    assert fixer.flags_markdown([]) == ""


def test_fix_prompt_answers_the_fixed_text_and_the_findings():
    fixed, findings = fixer.fix_prompt("1girl, lnog hair, 1girl")
    assert fixed == "1girl, long hair"
    assert [(f["kind"], f["tag"], f["fix"], f["action"]) for f in findings] == [
        ("unknown", "lnog hair", "long hair", "replace"), ("duplicate", "1girl", "", "drop")]
