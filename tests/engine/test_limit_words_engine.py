"""Generate's chunk refusal says the same words as the budget line under the prompt box."""

from __future__ import annotations

import pytest

from sote_ui.core.errors import InputError
from sote_ui.core.request import DEFAULT_LIMITS, build_request
from sote_ui.core.tags import MAX_CHUNKS
from sote_ui.ui.generate.prompt_box import budget_line


def test_past_the_chunks_within_the_characters_both_say_the_chunk_limit(engine, small):
    prompt = " BREAK ".join(["1girl"] * (MAX_CHUNKS + 1))  # short, but one chunk per section
    request = build_request({**small, "prompt": prompt})  # within the characters: accepted here
    chunks = engine.chunk_counts(request.composed_prompt())
    line = budget_line(chunks, len(prompt), DEFAULT_LIMITS.max_prompt_chars)
    with pytest.raises(InputError) as caught:
        engine.generate(request)
    words = f"over the {MAX_CHUNKS}-chunk limit"
    assert words in line and words in str(caught.value)
