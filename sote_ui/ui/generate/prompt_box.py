"""Under the prompt box: the prompt as it is sent, its token budget in 75-token chunks, and flagged syntax."""

from __future__ import annotations

from typing import Callable

from ...core import loras, suggestions, tags
from ...core.tags import MAX_CHUNKS, OVER_CHUNK_LIMIT, TRAINED_CHUNKS, over_char_limit
from ...service.studio import Studio
from ..form import unsupported_syntax
from .controls import Controls
from .prompt_tools import flags_line


def budget_line(chunks: list[int] | None, chars: int = 0, max_chars: int | None = None) -> str:
    """The prompt's token budget in chunks: the model was trained with 3 chunks of 75 tokens.

    ``chars`` is the prompt box's length: past ``max_chars`` (the request's
    limit, checked before the chunks) the line names that limit, in the
    words Generate's refusal uses.
    """
    if max_chars is not None and chars > max_chars:
        return f"**{chars:,} characters** ⚠️ {over_char_limit(max_chars)}: shorten the prompt"
    if chunks is None:
        return "tokens: counted once the model is loaded"
    parts = " + ".join(str(n) for n in chunks)
    line = f"**{len(chunks)} of {TRAINED_CHUNKS} chunks** ({parts} tokens)"
    if len(chunks) > MAX_CHUNKS:
        return f"{line} ⚠️ {OVER_CHUNK_LIMIT}: shorten the prompt"
    if len(chunks) > TRAINED_CHUNKS:
        return f"{line} ⚠️ past the {TRAINED_CHUNKS} chunks the model was trained with"
    return line


def past_chunks_markdown(text: str, chunk_counts: Callable[[str], list[int] | None], shown: int = 20) -> str:
    """A line naming the tags past the third chunk (empty when every tag fits)."""
    past = suggestions.tags_past_trained(text, chunk_counts)
    if not past:
        return ""
    names = ", ".join(f"`{tag}`" for tag in past[:shown]) + (f" and {len(past) - shown} more" if len(past) > shown
                                                            else "")
    return f"  \n**Past the third chunk** ({len(past)} tags, weaker): {names}"


def tag_inputs(controls: Controls) -> list:
    """The controls the composed prompt is made of, in :func:`compose`'s argument order."""
    return [controls.prompt, controls.aesthetic, controls.quality, controls.date, controls.custom, controls.rating,
            controls.artist]


def composer(studio: Studio) -> Callable[..., str]:
    """``compose(prompt, aesthetic, quality, date, custom, rating, artist)``: the line under the prompt box."""

    def compose(prompt, aesthetic, quality, date, custom, rating, artist) -> str:
        try:
            text = tags.compose_prompt(loras.split_tags(prompt or "")[0], aesthetic=aesthetic, quality=quality, date=date, custom=custom,
                                       rating=rating, artist=artist)
        except ValueError as exc:
            return f"⚠️ {exc}"
        flagged = unsupported_syntax(prompt)
        note = f"  \n⚠️ {flagged}" if flagged else ""
        checked = flags_line(prompt)
        note += f"  \n{checked}" if checked else ""
        budget = budget_line(studio.chunk_counts(text), len(prompt or ""), studio.config.limits.max_prompt_chars)
        return (f"{budget} · sent: `{text}`{note}"
                + past_chunks_markdown(text, studio.chunk_counts))

    return compose


def wire_prompt_box(studio: Studio, controls: Controls) -> Callable[..., str]:
    """Rewrite the line under the prompt box whenever a tag control changes; return the composer."""
    compose = composer(studio)
    inputs = tag_inputs(controls)
    for component in inputs:
        component.change(compose, inputs, controls.composed, api_visibility="private", queue=False,
                         show_progress="hidden")
    return compose


__all__ = ["budget_line", "composer", "past_chunks_markdown", "tag_inputs", "wire_prompt_box"]
