"""One limit, one message: the budget line under the prompt and Generate's refusal name the same limit."""

from __future__ import annotations

import pytest
from support import SMALL

from sote_ui.core.errors import InputError
from sote_ui.core.request import DEFAULT_LIMITS, Limits, build_request
from sote_ui.core.tags import MAX_CHUNKS
from sote_ui.ui.generate.prompt_box import budget_line

WORDS_2000 = ", ".join(["long hair"] * 2000)  # 2,000 tags pasted: 21,998 characters, about 4,000 tokens


def refusal(values: dict, limits: Limits = DEFAULT_LIMITS) -> str:
    with pytest.raises(InputError) as caught:
        build_request({**SMALL, **values}, limits=limits)
    return str(caught.value)


def test_past_the_character_limit_both_say_the_character_limit():
    chunks = [75] * 54  # what the encoder would count: past the chunk limit too, but characters bind first
    line = budget_line(chunks, len(WORDS_2000), DEFAULT_LIMITS.max_prompt_chars)
    message = refusal({"prompt": WORDS_2000})
    assert "over the 8,000-character limit" in line and "over the 8,000-character limit" in message
    assert "chunk" not in line.split("⚠️")[1] and "21,998 characters" in line and "21,998 characters" in message


def test_a_hosted_limit_is_the_one_named():
    hosted = Limits(max_prompt_chars=4000)
    text = "1girl, " * 700  # 4,900 characters
    assert "over the 4,000-character limit" in budget_line([75] * 7, len(text), hosted.max_prompt_chars)
    assert "over the 4,000-character limit" in refusal({"prompt": text}, hosted)


def test_within_the_characters_but_past_the_chunks_the_line_names_the_chunk_limit():
    line = budget_line([75] * (MAX_CHUNKS + 1), 7000, DEFAULT_LIMITS.max_prompt_chars)
    assert f"over the {MAX_CHUNKS}-chunk limit" in line and "character" not in line
    assert "past the 3 chunks" in budget_line([75] * 4, 900, DEFAULT_LIMITS.max_prompt_chars)
