"""Prompt encoding on the tiny pair: the padding as the model was trained (unmasked) or as diffusers
masks it, and ``BREAK`` starting a new 75-token chunk.

The model was trained with kohya's sd-scripts (``stable-cascade`` branch): captions are tokenized
padded to full 77-token windows and the CLIP text encoder is called with no attention mask, so the
hidden states at the padding are those of the end/pad tokens attending to everything before them.
diffusers' pipelines (the model card's script) pass the tokenizer's attention mask instead
(``test_engine.py`` and ``test_reference.py`` hold the masked encoding to diffusers' own).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from support import pixels

from sote_ui.core.errors import InputError
from sote_ui.core.request import build_request
from sote_ui.core.tags import MAX_CHUNKS
from sote_ui.engine.encoding import chunk_token_counts, count_tokens, encode_pair, tokenize_weighted
from sote_ui.service.compare import compare


@torch.no_grad()
def _as_trained(tokenizer, text_encoder, text: str) -> tuple[torch.Tensor, torch.Tensor]:
    """One caption encoded the way sd-scripts does: padded to 77 tokens, no attention mask, the last
    layer's hidden states, and the pooled embedding projected from the first end token's final state."""
    ids = tokenizer(text, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                    return_tensors="pt").input_ids
    output = text_encoder(ids, output_hidden_states=True, return_dict=True)
    first_end = (ids == tokenizer.eos_token_id).int().argmax(dim=1)
    pooled = text_encoder.text_projection(output.last_hidden_state[torch.arange(ids.shape[0]), first_end])
    return output.hidden_states[-1], pooled.unsqueeze(1)


# --- padding --------------------------------------------------------------------------------------


@pytest.mark.parametrize("prompt,negative", [("very aesthetic, best quality, newest, 1girl, solo", "lowres, sketch"),
                                             ("1girl", "")])
def test_the_default_encoding_is_a_direct_transformers_call_built_as_training_did(engine, prompt, negative):
    pipe = engine.prior_pipe
    ours = encode_pair(pipe.tokenizer, pipe.text_encoder, prompt, negative, "cpu")
    for (mine, mine_pooled), text in (((ours.prompt, ours.prompt_pooled), prompt),
                                      ((ours.negative, ours.negative_pooled), negative)):
        states, pooled = _as_trained(pipe.tokenizer, pipe.text_encoder, text)
        assert mine.shape == states.shape == (1, 77, 32)
        assert torch.allclose(mine, states, atol=1e-6, rtol=0)
        assert torch.allclose(mine_pooled, pooled, atol=1e-6, rtol=0)


def test_the_modes_differ_only_at_the_padding_of_a_short_prompt(engine):
    pipe = engine.prior_pipe
    prompt = "1girl, solo, smile"
    unmasked = encode_pair(pipe.tokenizer, pipe.text_encoder, prompt, "", "cpu")
    masked = encode_pair(pipe.tokenizer, pipe.text_encoder, prompt, "", "cpu", mask_padding=True)
    real = 1 + count_tokens(pipe.tokenizer, prompt) + 1  # start, the prompt, end
    assert real < 77
    # CLIP's attention is causal: the prompt's own tokens never see the padding after them
    assert torch.allclose(unmasked.prompt[:, :real], masked.prompt[:, :real], atol=1e-6, rtol=0)
    assert torch.allclose(unmasked.prompt_pooled, masked.prompt_pooled, atol=1e-6, rtol=0)
    # ...but every padding position does differ
    gap = (unmasked.prompt[0, real:] - masked.prompt[0, real:]).abs().amax(dim=-1)
    assert gap.shape == (77 - real,) and bool((gap > 1e-4).all())


def test_a_full_chunk_has_no_padding_so_both_modes_agree(engine):
    pipe = engine.prior_pipe
    prompt = " ".join(["hat"] * 36 + ["solo"])  # 2 and 3 tokens in the tiny vocabulary
    assert chunk_token_counts(pipe.tokenizer, prompt) == [75]
    unmasked = encode_pair(pipe.tokenizer, pipe.text_encoder, prompt, "", "cpu")
    masked = encode_pair(pipe.tokenizer, pipe.text_encoder, prompt, "", "cpu", mask_padding=True)
    assert torch.allclose(unmasked.prompt, masked.prompt, atol=1e-6, rtol=0)


def test_the_engine_encodes_each_padding_on_its_own_and_the_images_differ(engine, small):
    unmasked = build_request({**small, "prompt": "1girl, smile", "prior_cfg": 4.0})
    masked = build_request({**small, "prompt": "1girl, smile", "prior_cfg": 4.0, "prompt_padding": "masked"})
    first = engine.generate(unmasked)
    second = engine.generate(masked)
    # neither the cached prompt encoding nor the cached prior of the other padding is reused
    assert (second.counters.text_encodes, second.counters.text_cache_hits) == (1, 0)
    assert (second.counters.prior_runs, second.counters.prior_cache_hits) == (1, 0)
    assert not np.array_equal(pixels(first), pixels(second))
    assert "Prompt padding: masked" in second.images[0].parameters
    assert "Prompt padding: unmasked" in first.images[0].parameters
    again = engine.generate(masked)
    assert (again.counters.text_encodes, again.counters.prior_cache_hits) == (0, 1)
    assert np.array_equal(pixels(again), pixels(second))


# --- BREAK ----------------------------------------------------------------------------------------


def _tokens(tokenizer, text: str) -> int:
    return len(tokenizer(text, add_special_tokens=False).input_ids)


def test_the_tokens_after_break_start_a_new_chunk(engine):
    pipe = engine.prior_pipe
    tokenizer = pipe.tokenizer
    prompt = "1girl, smile BREAK hat, sky"
    assert chunk_token_counts(tokenizer, prompt) == [_tokens(tokenizer, "1girl, smile"), _tokens(tokenizer, "hat, sky")]
    for mask_padding in (False, True):
        split = encode_pair(tokenizer, pipe.text_encoder, prompt, "", "cpu", mask_padding=mask_padding)
        first = encode_pair(tokenizer, pipe.text_encoder, "1girl, smile", "", "cpu", mask_padding=mask_padding)
        second = encode_pair(tokenizer, pipe.text_encoder, "hat, sky", "", "cpu", mask_padding=mask_padding)
        assert split.chunks == 2 and split.prompt.shape == (1, 2 * 77, 32)
        # each chunk is its own 77-token window: the second starts with the start token, then "hat"
        assert torch.allclose(split.prompt, torch.cat([first.prompt, second.prompt], dim=1), atol=1e-6, rtol=0)
        assert torch.allclose(split.prompt_pooled, first.prompt_pooled, atol=1e-6, rtol=0)
        assert split.negative.shape == split.prompt.shape  # the negative is padded to as many chunks


@pytest.mark.parametrize("prompt,sections", [
    ("1girl BREAK smile BREAK hat", ["1girl", "smile", "hat"]),
    ("1girl, BREAK, smile", ["1girl", "smile"]),  # the commas beside it belong to the break
    ("1girl\nBREAK\nsmile", ["1girl", "smile"]),
    ("(1girl BREAK smile:1.2), hat", ["1girl", "smile, hat"]),  # inside emphasis too
])
def test_the_chunk_count_follows_the_breaks(engine, prompt, sections):
    tokenizer = engine.prior_pipe.tokenizer
    assert chunk_token_counts(tokenizer, prompt) == [_tokens(tokenizer, s) for s in sections]


def test_a_long_section_still_takes_as_many_chunks_as_it_needs(engine):
    tokenizer = engine.prior_pipe.tokenizer
    long_tags = ", ".join(["hat, sky, solo"] * 12)
    alone = chunk_token_counts(tokenizer, long_tags)
    assert len(alone) == 2
    assert chunk_token_counts(tokenizer, f"{long_tags} BREAK 1girl") == alone + [_tokens(tokenizer, "1girl")]
    assert chunk_token_counts(tokenizer, f"1girl BREAK {long_tags}") == [_tokens(tokenizer, "1girl")] + alone


@pytest.mark.parametrize("prompt", ["jailBREAK, smile", "BREAKdance, smile", "BREAK_dance, smile", "smile-BREAK",
                                    "break, smile", "Break smile", "BREAKS smile"])
def test_break_inside_a_tag_or_not_in_capitals_is_plain_text(engine, prompt):
    tokenizer = engine.prior_pipe.tokenizer
    assert chunk_token_counts(tokenizer, prompt) == [_tokens(tokenizer, prompt)]
    assert tokenize_weighted(tokenizer, prompt)[0] == tokenizer(prompt, add_special_tokens=False).input_ids


@pytest.mark.parametrize("prompt,sections", [
    ("BREAK", []),
    ("BREAK 1girl", ["1girl"]),
    ("1girl, smile BREAK", ["1girl, smile"]),
    ("BREAK 1girl BREAK BREAK smile BREAK", ["1girl", "smile"]),
])
def test_break_alone_or_at_the_ends_makes_no_empty_chunk(engine, prompt, sections):
    tokenizer = engine.prior_pipe.tokenizer
    counts = chunk_token_counts(tokenizer, prompt)
    assert counts == ([_tokens(tokenizer, s) for s in sections] or [0])  # nothing at all is one empty chunk
    assert count_tokens(tokenizer, prompt) == sum(counts)


def test_break_weights_stay_with_their_tokens(engine):
    tokenizer = engine.prior_pipe.tokenizer
    ids, weights = tokenize_weighted(tokenizer, "(1girl BREAK smile:1.5), hat")
    expected = [_tokens(tokenizer, "1girl"), _tokens(tokenizer, "smile"), _tokens(tokenizer, ", hat")]
    assert len(ids) == sum(expected)
    assert weights == [1.5] * (expected[0] + expected[1]) + [1.0] * expected[2]


def test_break_in_the_negative_prompt_and_the_chunk_cap(engine, small):
    pipe = engine.prior_pipe
    embeds = encode_pair(pipe.tokenizer, pipe.text_encoder, "1girl", "lowres BREAK sketch BREAK monochrome", "cpu")
    assert embeds.chunks == 3 and embeds.prompt.shape == embeds.negative.shape == (1, 3 * 77, 32)
    too_many = " BREAK ".join(["1girl"] * (MAX_CHUNKS + 1))
    with pytest.raises(InputError, match=f"the prompt needs {MAX_CHUNKS + 1} chunks"):
        engine.generate(build_request({**small, "prompt": too_many}))


def test_the_engine_sends_a_break_prompt_as_its_chunks(engine, small):
    request = build_request({**small, "prompt": "1girl, smile BREAK hat", "aesthetic": "none", "quality": "none",
                             "date": "none"})
    embeds = engine.encode(request)
    assert embeds.chunks == 2 and embeds.prompt.shape == (1, 2 * 77, 32)
    assert engine.chunk_counts(request.composed_prompt()) == [_tokens(engine.prior_pipe.tokenizer, "1girl, smile"),
                                                              _tokens(engine.prior_pipe.tokenizer, "hat")]
    assert engine.generate(request).images[0].image.size == (256, 256)


def test_an_a_b_comparison_of_the_two_paddings_encodes_and_runs_the_prior_for_each(engine, small):
    a = build_request({**small, "prompt": "1girl, smile", "prior_cfg": 4.0})
    b = build_request({**small, "prompt": "1girl, smile", "prior_cfg": 4.0, "prompt_padding": "masked"})
    report = compare(engine, a, b, [5])
    assert report.diff == {"prompt_padding": ("unmasked", "masked")}
    assert not report.prior_shared and not report.text_shared and report.prior_runs == 2
    (left, right), = report.pairs
    assert not np.array_equal(pixels(left.image), pixels(right.image))
