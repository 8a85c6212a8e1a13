"""The engine checked against independent references on the tiny pair.

- pixels against diffusers' own ``StableCascadeCombinedPipeline`` (the model card's code path), same seed,
  with the padding masked as diffusers masks it;
- long-prompt embeddings (padding masked) against diffusers' ``encode_prompt`` run on each chunk's text by hand;
- emphasis against the weighting computed by hand from the unweighted hidden states;
- the chunk budget and its cap, counted as the encoder splits.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from support import SMALL, pixels

from sote_ui.core.errors import InputError
from sote_ui.core.request import build_request
from sote_ui.core.tags import MAX_CHUNKS, TRAINED_CHUNKS
from sote_ui.engine import Engine
from sote_ui.engine.encoding import chunk_token_counts, encode_pair, tokenize_weighted


def _combined(engine):
    from diffusers import StableCascadeCombinedPipeline

    prior, decoder = engine.prior_pipe, engine.decoder_pipe
    pipe = StableCascadeCombinedPipeline(
        tokenizer=prior.tokenizer, text_encoder=prior.text_encoder, decoder=decoder.decoder,
        scheduler=decoder.scheduler, vqgan=decoder.vqgan, prior_prior=prior.prior,
        prior_text_encoder=prior.text_encoder, prior_tokenizer=prior.tokenizer, prior_scheduler=prior.scheduler,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _as_uint8(pixels: np.ndarray) -> np.ndarray:
    return (np.clip(pixels, 0.0, 1.0) * 255).round().astype(np.uint8)


@pytest.mark.parametrize("prior_cfg, decoder_cfg, seed", [(4.0, 1.0, 31), (8.0, 1.5, 32), (1.0, 1.0, 33)])
def test_engine_pixels_equal_the_model_cards_combined_pipeline(engine, prior_cfg, decoder_cfg, seed):
    prompt, negative = "1girl, solo, smile", "lowres, worst quality"
    request = build_request({**SMALL, "prompt": prompt, "negative_prompt": negative, "aesthetic": "none",
                             "quality": "none", "date": "none", "prior_cfg": prior_cfg, "decoder_cfg": decoder_cfg,
                             "seed": seed, "prompt_padding": "masked"})  # as diffusers encodes
    assert request.composed_prompt() == prompt
    engine.clear_caches()
    ours = pixels(engine.generate(request))
    theirs = _combined(engine)(
        prompt=prompt, negative_prompt=negative, width=256, height=256, prior_num_inference_steps=3,
        prior_guidance_scale=prior_cfg, num_inference_steps=2, decoder_guidance_scale=decoder_cfg,
        generator=torch.Generator("cpu").manual_seed(seed), output_type="np",
    ).images[0]
    assert ours.shape == (256, 256, 3)
    assert np.array_equal(ours, _as_uint8(theirs))


def test_a_reused_prior_gives_the_pixels_of_a_fresh_run(engine):
    base = build_request({**SMALL, "prompt": "1girl, hat", "seed": 41, "prior_cfg": 4.0})
    changed = build_request({**SMALL, "prompt": "1girl, hat", "seed": 41, "prior_cfg": 4.0, "decoder_cfg": 2.0})
    engine.clear_caches()
    engine.generate(base)
    reused = engine.generate(changed)
    assert reused.images[0].prior_reused and reused.counters.prior_steps == 0
    engine.clear_caches()
    fresh = engine.generate(changed)
    assert not fresh.images[0].prior_reused
    assert np.array_equal(pixels(reused), pixels(fresh))


def test_decoder_noise_is_not_the_priors_noise(engine):
    """With one generator through both stages the decoder's first noise continues the stream;
    seeding the decoder again would repeat the prior's numbers exactly."""
    seen = {}

    def capture(name):
        def hook(module, args, kwargs):
            seen.setdefault(name, args[0].detach().clone() if args else kwargs["sample"].detach().clone())
        return hook

    handles = [engine.prior_pipe.prior.register_forward_pre_hook(capture("prior"), with_kwargs=True),
               engine.decoder_pipe.decoder.register_forward_pre_hook(capture("decoder"), with_kwargs=True)]
    try:
        engine.clear_caches()
        engine.generate(build_request({**SMALL, "prompt": "1girl", "seed": 43, "prior_cfg": 1.0}))
    finally:
        for handle in handles:
            handle.remove()
    prior_noise = seen["prior"].flatten()
    decoder_noise = seen["decoder"].flatten()
    fresh = torch.randn(decoder_noise.shape, generator=torch.Generator("cpu").manual_seed(43))
    n = min(prior_noise.numel(), decoder_noise.numel())
    assert torch.equal(prior_noise[:n], fresh[:n])  # the prior's noise is the seed's stream
    assert not torch.allclose(decoder_noise[:n], fresh[:n])  # the decoder's is not a repeat of it
    assert abs(torch.corrcoef(torch.stack([decoder_noise[:n], prior_noise[:n]]))[0, 1].item()) < 0.2


def test_an_unguided_prior_is_reused_whatever_the_negative_prompt(engine):
    values = {**SMALL, "prompt": "1girl, sky", "seed": 44, "prior_cfg": 1.0}
    engine.clear_caches()
    engine.generate(build_request({**values, "negative_prompt": "lowres"}))
    again = engine.generate(build_request({**values, "negative_prompt": "sketch", "prior_cfg": 0.5}))
    assert (again.counters.prior_runs, again.counters.prior_cache_hits) == (0, 1)
    guided = engine.generate(build_request({**values, "negative_prompt": "sketch", "prior_cfg": 4.0}))
    assert (guided.counters.prior_runs, guided.counters.prior_cache_hits) == (1, 0)


# --- long prompts and emphasis, against hand computations -----------------------------------

WORDS = ["1girl", "solo", "smile", "hat", "sky", "cloud", "flower", "dress", "shirt", "skirt", "blush", "tail"]


def _tags_of(tokenizer, tokens: int) -> str:
    tags, i = [], 0
    while len(tokenize_weighted(tokenizer, ", ".join(tags))[0]) < tokens:
        tags.append(WORDS[i % len(WORDS)])
        i += 1
    return ", ".join(tags)


def test_long_prompt_embeddings_are_each_chunk_encoded_as_diffusers_does(engine):
    pipe = engine.prior_pipe
    tokenizer = pipe.tokenizer
    prompt = _tags_of(tokenizer, 170)
    counts = chunk_token_counts(tokenizer, prompt)
    assert len(counts) == 3 and sum(counts) == len(tokenize_weighted(tokenizer, prompt)[0])
    # Rebuild each chunk's text from the tags it holds (chunks end at a comma) and let diffusers encode it.
    ids = tokenize_weighted(tokenizer, prompt)[0]
    texts, start = [], 0
    for count in counts:
        texts.append(tokenizer.decode(ids[start:start + count]))
        start += count
    ours = encode_pair(tokenizer, pipe.text_encoder, prompt, "", "cpu", mask_padding=True)
    reference = []
    for text in texts:
        embeds, pooled, _, _ = pipe.encode_prompt(device="cpu", batch_size=1, num_images_per_prompt=1,
                                                  do_classifier_free_guidance=False, prompt=text)
        reference.append((embeds, pooled))
    expected = torch.cat([embeds for embeds, _ in reference], dim=1)
    assert ours.prompt.shape == expected.shape == (1, 77 * 3, 32)
    assert torch.allclose(ours.prompt, expected, atol=1e-5, rtol=0)
    assert torch.allclose(ours.prompt_pooled, reference[0][1], atol=1e-6, rtol=0)  # the first chunk's pooled


def test_emphasis_is_the_hand_computed_scaling(engine):
    pipe = engine.prior_pipe
    tokenizer = pipe.tokenizer
    plain = encode_pair(tokenizer, pipe.text_encoder, "1girl, smile, hat", "", "cpu").prompt[0].double()
    weighted = encode_pair(tokenizer, pipe.text_encoder, "1girl, (smile:1.5), [hat]", "", "cpu").prompt[0].double()
    before = tokenizer("1girl, ", add_special_tokens=False).input_ids
    smile = tokenizer("smile", add_special_tokens=False).input_ids
    middle = tokenizer(", ", add_special_tokens=False).input_ids
    hat = tokenizer("hat", add_special_tokens=False).input_ids
    factors = torch.ones(77, dtype=torch.float64)
    position = 1 + len(before)  # after the start token
    factors[position:position + len(smile)] = 1.5
    position += len(smile) + len(middle)
    factors[position:position + len(hat)] = 1 / 1.1
    scaled = plain * factors[:, None]
    expected = scaled * (plain.mean() / scaled.mean())
    assert torch.allclose(weighted, expected, atol=1e-5, rtol=0)
    assert not torch.allclose(weighted, plain, atol=1e-3)


# --- the chunk budget ----------------------------------------------------------------------


def test_a_prompt_just_under_225_tokens_can_need_four_chunks(engine):
    tokenizer = engine.prior_pipe.tokenizer
    # Long tags (a made-up word is spelled out letter by letter) cost many tokens at each cut.
    long_tags = ["zqxjkvbwpy zqxjkvbwpy", "1girl", "xkcdqzvwjp", "smile"]
    tags: list[str] = []
    for i in range(200):  # as many tags as fit in 225 tokens
        longer = ", ".join(tags + [long_tags[i % len(long_tags)]])
        if len(tokenize_weighted(tokenizer, longer)[0]) > 225:
            break
        tags.append(long_tags[i % len(long_tags)])
    prompt = ", ".join(tags)
    tokens = len(tokenize_weighted(tokenizer, prompt)[0])
    counts = chunk_token_counts(tokenizer, prompt)
    assert 200 <= tokens <= 225 and sum(counts) == tokens
    assert len(counts) == 4 and max(counts) <= 75  # cut at commas, the chunks are not full


def test_chunks_past_the_trained_three_warn_and_past_the_cap_are_refused(tiny_source):
    engine = Engine(tiny_source, mode="fp32", device="cpu")
    engine.load()
    tokenizer = engine.prior_pipe.tokenizer
    four = _tags_of(tokenizer, 240)
    result = engine.generate(build_request({**SMALL, "prompt": four, "seed": 45}))
    assert len(engine.chunk_counts(result.images[0].request.composed_prompt())) > TRAINED_CHUNKS
    assert any("chunks of 75 tokens" in warning for warning in result.warnings)
    huge = _tags_of(tokenizer, 1440)
    assert len(chunk_token_counts(tokenizer, huge)) > MAX_CHUNKS
    before = engine.counters.snapshot()
    with pytest.raises(InputError, match=rf"needs \d+ chunks .* over the {MAX_CHUNKS}-chunk limit"):
        engine.generate(build_request({**SMALL, "prompt": huge, "seed": 46}))
    ran = engine.counters.since(before)
    assert (ran.text_encodes, ran.prior_steps, ran.decoder_steps) == (0, 0, 0)  # refused before any work
    with pytest.raises(InputError, match="the negative prompt needs"):
        engine.generate(build_request({**SMALL, "prompt": "1girl", "negative_prompt": huge, "seed": 47}))
    assert engine.cache_counts()["texts"] == 1  # nothing of the refused prompts was cached
