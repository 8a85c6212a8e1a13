"""Which tags fall past the third 75-token chunk, found with the encoder's own split (tiny model's tokenizer)."""

from __future__ import annotations

from sote_ui.core.suggestions import tags_past_trained
from sote_ui.ui.generate.prompt_box import past_chunks_markdown


def fake_counts(text: str) -> list[int]:
    """One token per character, cut into 75-token chunks (a stand-in for the encoder's split)."""
    n = len(text)
    return [75] * (n // 75) + ([n % 75] if n % 75 or not n else [])


def test_nothing_is_marked_within_three_chunks():
    text = ", ".join(f"t{i:02d}" for i in range(40))  # 198 characters
    assert len(fake_counts(text)) == 3
    assert tags_past_trained(text, fake_counts) == []
    assert past_chunks_markdown(text, fake_counts) == ""
    assert tags_past_trained(text, lambda _: None) == []  # before the model is loaded


def test_the_tags_past_the_third_chunk_are_the_tail():
    parts = [f"t{i:02d}" for i in range(60)]
    text = ", ".join(parts)
    past = tags_past_trained(text, fake_counts)
    kept = parts[:len(parts) - len(past)]
    assert past == parts[len(kept):] and past
    assert len(fake_counts(", ".join(kept))) == 3
    assert len(fake_counts(", ".join(parts[:len(kept) + 1]))) == 4
    line = past_chunks_markdown(text, fake_counts, shown=3)
    assert f"({len(past)} tags" in line and "`t45`" in line and f"and {len(past) - 3} more" in line


def test_with_the_encoders_split(engine):
    parts = [f"{word} {i}" for i, word in enumerate(["long hair", "blue eyes", "school uniform", "smile"] * 20)]
    text = ", ".join(parts)
    assert len(engine.chunk_counts(text)) > 3
    past = tags_past_trained(text, engine.chunk_counts)
    kept = parts[:len(parts) - len(past)]
    assert past and past == parts[len(kept):]
    assert len(engine.chunk_counts(", ".join(kept))) <= 3
    assert len(engine.chunk_counts(", ".join(parts[:len(kept) + 1]))) > 3
