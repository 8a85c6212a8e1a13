"""The model card's tag tables and the prompt composer (pure logic)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sote_ui.core import tags
from sote_ui.core.tags import NONE, check_choice, compose_prompt, decompose_prompt, split_tags


def test_tables_hold_the_card_values():
    assert tags.AESTHETIC[0] == "extremely aesthetic" and tags.AESTHETIC[-1] == "very displeasing"
    assert tags.QUALITY[0] == "best quality" and tags.QUALITY[-1] == "worst quality"
    assert list(tags.DATE) == ["newest", "recent", "mid", "early", "oldest"]
    assert tags.TOKEN_BUDGET == 225
    # no tag belongs to two categories, or decompose_prompt could not tell them apart
    assert len(set(tags.ALL_KNOWN_TAGS)) == len(tags.ALL_KNOWN_TAGS)
    for category in ("aesthetic", "quality", "date", "custom", "rating"):
        assert check_choice(category, tags.DEFAULT_TAGS[category]) == tags.DEFAULT_TAGS[category]


def test_compose_in_dataset_order():
    text = compose_prompt("1girl, solo", aesthetic="very aesthetic", quality="best quality", date="newest",
                          custom="anime wallpaper", rating="general", artist=" someone ")
    assert text == "very aesthetic, best quality, newest, art by someone, anime wallpaper, general, 1girl, solo"


def test_compose_with_nothing_picked_is_the_users_tags():
    assert compose_prompt(" 1girl ,solo,, \nsmile ") == "1girl, solo, smile"
    assert compose_prompt("") == ""
    assert compose_prompt("", quality="none", aesthetic=None) == ""


def test_compose_does_not_repeat_a_picked_tag_already_typed():
    text = compose_prompt("1girl, Best Quality", aesthetic="very aesthetic", quality="best quality")
    assert text == "very aesthetic, 1girl, Best Quality"
    assert text.lower().count("best quality") == 1


def test_check_choice():
    assert check_choice("aesthetic", "  Very Aesthetic ") == "very aesthetic"
    assert check_choice("date", None) == NONE
    assert check_choice("date", "") == NONE
    assert check_choice("rating", "None") == NONE
    with pytest.raises(ValueError) as info:
        check_choice("quality", "masterpiece")
    assert "quality" in str(info.value) and "best quality" in str(info.value)


def test_split_tags():
    assert split_tags("a, b\nc,, ,d ") == ["a", "b", "c", "d"]
    assert split_tags(" ") == []


def test_decompose_our_own_prompt():
    text = compose_prompt("1girl, solo", aesthetic="aesthetic", quality="high quality", date="mid",
                          custom="visual novel cg", rating="sensitive", artist="Some Artist")
    parts = decompose_prompt(text)
    assert parts == {"aesthetic": "aesthetic", "quality": "high quality", "date": "mid",
                     "custom": "visual novel cg", "rating": "sensitive", "artist": "Some Artist",
                     "prompt": "1girl, solo"}


def test_decompose_another_tools_prompt_keeps_it_whole():
    parts = decompose_prompt("masterpiece, 1girl, smile")
    assert parts["prompt"] == "masterpiece, 1girl, smile"
    assert all(parts[k] == NONE for k in ("aesthetic", "quality", "date", "custom", "rating"))
    assert parts["artist"] == ""


def test_decompose_keeps_a_picker_tag_the_user_typed_mid_prompt():
    # The user typed "best quality" themselves, so compose_prompt kept it in place;
    # reading it back must give a request that composes the very same prompt.
    text = compose_prompt("1girl, best quality, solo", aesthetic="very aesthetic", quality="best quality",
                          date="newest")
    assert text == "very aesthetic, newest, 1girl, best quality, solo"
    parts = decompose_prompt(text)
    assert compose_prompt(parts.pop("prompt"), **parts) == text


_USER_TAG = st.one_of(
    st.sampled_from(["1girl", "solo", "smile", "long hair", "masterpiece", "Best Quality", "art by x",
                     "(smile:1.2)", "hat"]),
    st.sampled_from(tags.ALL_KNOWN_TAGS),
)
_PICK = {c: st.sampled_from((NONE,) + values) for c, values in tags.CATEGORIES.items()}


@settings(max_examples=400, deadline=None)
@given(user=st.lists(_USER_TAG, max_size=6), artist=st.sampled_from(["", "someone", "Two Words"]), **_PICK)
def test_decompose_inverts_compose(user, artist, aesthetic, quality, date, custom, rating):
    """Whatever compose_prompt writes, decompose_prompt reads back into pickers that write it again."""
    text = compose_prompt(", ".join(user), aesthetic=aesthetic, quality=quality, date=date, custom=custom,
                          rating=rating, artist=artist)
    parts = decompose_prompt(text)
    assert set(parts) == {"aesthetic", "quality", "date", "custom", "rating", "artist", "prompt"}
    again = compose_prompt(parts.pop("prompt"), **parts)
    assert again == text
