"""Emphasis on the tiny model: weights follow their tokens, scale the hidden states, change the image."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from support import pixels

from sote_ui.core.request import build_request
from sote_ui.engine.encoding import encode_pair, tokenize_weighted


def test_escaped_brackets_tokenize_as_the_characters(engine):
    tokenizer = engine.prior_pipe.tokenizer
    ids, weights = tokenize_weighted(tokenizer, "kanzaki ranko \\(idolmaster\\)")
    assert ids == tokenizer("kanzaki ranko (idolmaster)", add_special_tokens=False).input_ids
    assert weights == [1.0] * len(ids)


def test_weights_follow_their_tokens(engine):
    tokenizer = engine.prior_pipe.tokenizer
    ids, weights = tokenize_weighted(tokenizer, "1girl, (smile:1.5)")
    plain = tokenizer("1girl, ", add_special_tokens=False).input_ids
    smile = tokenizer("smile", add_special_tokens=False).input_ids
    assert ids == plain + smile
    assert weights == [1.0] * len(plain) + [1.5] * len(smile)


def test_emphasis_scales_the_hidden_states_and_keeps_their_mean(engine):
    pipe = engine.prior_pipe
    plain = encode_pair(pipe.tokenizer, pipe.text_encoder, "1girl, smile", "", "cpu")
    weighted = encode_pair(pipe.tokenizer, pipe.text_encoder, "1girl, (smile:1.5)", "", "cpu")
    assert not torch.equal(plain.prompt, weighted.prompt)
    assert weighted.prompt.mean().item() == pytest.approx(plain.prompt.mean().item(), abs=1e-5)
    # the pooled embedding and the negative are not weighted
    assert torch.equal(plain.prompt_pooled, weighted.prompt_pooled)
    assert torch.equal(plain.negative, weighted.negative)
    # a weight of 1.0 is no emphasis at all
    neutral = encode_pair(pipe.tokenizer, pipe.text_encoder, "1girl, (smile:1.0)", "", "cpu")
    assert torch.equal(neutral.prompt, plain.prompt)


def _image(engine, small, **values):
    return pixels(engine.generate(build_request({**small, **values})))


def test_emphasis_changes_the_image(engine, small):
    plain = _image(engine, small, prompt="1girl, smile")
    assert not np.array_equal(plain, _image(engine, small, prompt="1girl, (smile:1.3)"))
    assert not np.array_equal(plain, _image(engine, small, prompt="1girl, [smile]"))
    assert np.array_equal(plain, _image(engine, small, prompt="1girl, (smile:1.0)"))


def test_unbalanced_brackets_generate(engine, small):
    result = engine.generate(build_request({**small, "prompt": "1girl, ((smile, [hat:, \\", "negative_prompt": "a)]"}))
    assert result.images[0].image.size == (256, 256)
    assert "1girl, ((smile, [hat:, \\" in result.images[0].parameters
