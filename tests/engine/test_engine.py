"""The engine on the tiny random-weight pair: the real diffusers code path on the CPU."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from support import pixels

from sote_ui.core.errors import Cancelled, InputError, ModelError
from sote_ui.core.memory import DeviceInfo, GiB, Mode, Placement, choose_mode
from sote_ui.core.request import build_request
from sote_ui.core.suggestions import tags_past_trained
from sote_ui.engine import Engine
from sote_ui.engine.encoding import CHUNK, comma_id, encode_pair, split_chunks, tokenize_weighted
from sote_ui.engine.loading import component_sizes, fetch, load_components, weight_bytes
from sote_ui.engine.models import ModelSource
from sote_ui.engine.placement.pipelines import apply_mode
from sote_ui.engine.results import Progress

CPU = DeviceInfo("cpu", "cpu", "CPU", 64 * GiB, 32 * GiB, True)


def req(small, **values):
    return build_request({**small, **values})


def run(engine, small, **values):
    return pixels(engine.generate(req(small, **values)))


# --- basics ---------------------------------------------------------------------------


def test_lazy_loading(tiny_source):
    engine = Engine(tiny_source, mode="fp32", device="cpu")
    assert not engine.loaded and engine.state == "not loaded" and engine.plan is None
    assert engine.count_tokens("1girl") is None
    assert engine.model_info().mode == ""
    plan = engine.load()
    assert engine.loaded and engine.state == "ready" and plan.mode is Mode.FP32
    assert engine.load() is plan  # loading twice is a no-op
    assert engine.count_tokens("1girl, solo") > 2
    assert engine.model_info().mode == "fp32"
    assert engine.sizes.prior > 0 and engine.device.kind == "cpu"


def test_one_image(engine, small):
    result = engine.generate(req(small))
    assert len(result.images) == 1
    item = result.images[0]
    assert item.image.size == (256, 256) and item.image.mode == "RGB"
    array = pixels(result)
    assert array.dtype == np.uint8 and array.shape == (256, 256, 3)
    assert array.std() > 0  # not a flat image
    assert item.request == req(small) and item.request.seed == 1234 and item.request.count == 1
    assert "Seed: 1234" in item.parameters and "Size: 256x256" in item.parameters
    assert "Memory mode: fp32" in item.parameters and "Version: sote-studio" in item.parameters
    # Local folders are recorded by name: the PNG never carries a path of the machine that made it.
    prior_folder, decoder_folder = Path(engine.source.prior), Path(engine.source.decoder)
    assert f"Model: {prior_folder.name}," in item.parameters and f"Decoder: {decoder_folder.name}," in item.parameters
    assert str(prior_folder.parent) not in item.parameters
    assert result.seconds > 0 and item.seconds > 0


def test_same_request_and_seed_give_the_same_pixels(engine, small, tiny_source):
    first = run(engine, small)
    engine.clear_caches()
    again = run(engine, small)
    assert np.array_equal(first, again)
    other = Engine(tiny_source, mode="fp32", device="cpu")  # a second engine loads its own copy
    assert np.array_equal(first, run(other, small))


def test_a_different_seed_gives_different_pixels(engine, small):
    assert not np.array_equal(run(engine, small), run(engine, small, seed=1235))


def test_a_random_seed_is_reported_and_reproduces(engine, small):
    result = engine.generate(req(small, seed=-1))
    seed = result.images[0].request.seed
    assert 0 <= seed <= 2**32 - 1
    assert f"Seed: {seed}," in result.images[0].parameters
    assert np.array_equal(pixels(result), run(engine, small, seed=seed))


CHANGES = [
    ("prompt", "1girl, solo", "1boy, hat"),
    ("negative_prompt", "monochrome", "lowres, sketch"),
    ("prior_steps", 3, 2),
    ("prior_cfg", 8.0, 3.0),
    ("decoder_steps", 2, 3),
    ("decoder_cfg", 1.0, 3.0),
    ("aesthetic", "very aesthetic", "displeasing"),
    ("quality", "best quality", "low quality"),
    ("date", "newest", "oldest"),
    ("rating", "none", "general"),
    ("custom", "none", "anime wallpaper"),
    ("artist", "", "someone"),
]


@pytest.mark.parametrize("key,a,b", CHANGES, ids=[c[0] for c in CHANGES])
def test_each_setting_changes_the_image(engine, small, key, a, b):
    first = run(engine, small, **{key: a})
    assert not np.array_equal(first, run(engine, small, **{key: b}))
    assert np.array_equal(first, run(engine, small, **{key: a}))


@pytest.mark.parametrize("width,height", [(384, 256), (256, 384), (128, 128)])
def test_size(engine, small, width, height):
    result = engine.generate(req(small, width=width, height=height))
    assert result.images[0].image.size == (width, height)
    assert pixels(result).shape == (height, width, 3)


def test_negative_prompt_is_unused_without_guidance(engine, small):
    unguided = dict(prior_cfg=1.0, decoder_cfg=1.0)
    assert np.array_equal(run(engine, small, negative_prompt="monochrome", **unguided),
                          run(engine, small, negative_prompt="lowres, sketch", **unguided))
    # with only the decoder guided, the negative prompt matters again
    assert not np.array_equal(run(engine, small, negative_prompt="monochrome", prior_cfg=1.0, decoder_cfg=3.0),
                              run(engine, small, negative_prompt="lowres, sketch", prior_cfg=1.0, decoder_cfg=3.0))


def test_count_gives_consecutive_seeds(engine, small):
    result = engine.generate(req(small, count=3, seed=50))
    assert [item.request.seed for item in result.images] == [50, 51, 52]
    assert all(item.request.count == 1 for item in result.images)
    assert all(f"Seed: {50 + i}," in item.parameters for i, item in enumerate(result.images))
    assert result.counters.prior_runs == 3 and result.counters.decoder_runs == 3
    for i in range(3):
        engine.clear_caches()  # recompute each single image from scratch
        single = engine.generate(req(small, seed=50 + i))
        assert np.array_equal(pixels(result, i), pixels(single))
    assert not np.array_equal(pixels(result, 0), pixels(result, 1))


# --- long prompts ---------------------------------------------------------------------

FILLER = ["long hair", "blue eyes", "school uniform", "looking at viewer", "open mouth", "cat ears", "hoodie",
          "indoors", "flower", "cowboy shot", "upper body", "straight hair", "white dress", "black skirt"]


def _long_prompt(tokenizer, minimum, prefix="very aesthetic, best quality, newest"):
    """User tags that make at least ``minimum`` tokens after ``prefix`` (the default picked tags)."""
    tags, index = [], 0
    while len(tokenize_weighted(tokenizer, ", ".join([prefix] + tags if prefix else tags))[0]) < minimum:
        tags.append(FILLER[index % len(FILLER)])
        index += 1
    return ", ".join(tags)


def test_tags_past_77_tokens_change_the_image(engine, small):
    tokenizer = engine.prior_pipe.tokenizer
    head = _long_prompt(tokenizer, 90)
    a = req(small, prompt=head + ", smile, red eyes")
    b = req(small, prompt=head + ", hat, outdoors, sky")
    ids_a = tokenize_weighted(tokenizer, a.composed_prompt())[0]
    ids_b = tokenize_weighted(tokenizer, b.composed_prompt())[0]
    assert engine.count_tokens(a.composed_prompt()) == len(ids_a) > 77
    shared = next(i for i, (x, y) in enumerate(zip(ids_a, ids_b)) if x != y)
    assert shared >= 80  # the same first 80 tokens: a prompt cut at 77 tokens would not see the change
    assert not np.array_equal(pixels(engine.generate(a)), pixels(engine.generate(b)))


@pytest.mark.parametrize("prompt_tokens,negative_tokens,chunks", [(100, 0, 2), (0, 100, 2), (160, 20, 3),
                                                                   (20, 20, 1)])
def test_prompt_and_negative_get_the_same_number_of_chunks(engine, prompt_tokens, negative_tokens, chunks):
    pipe = engine.prior_pipe
    prompt = _long_prompt(pipe.tokenizer, prompt_tokens, prefix="") or "1girl"
    negative = _long_prompt(pipe.tokenizer, negative_tokens, prefix="")
    embeds = encode_pair(pipe.tokenizer, pipe.text_encoder, prompt, negative, "cpu")
    assert embeds.chunks == chunks
    assert embeds.prompt.shape == embeds.negative.shape == (1, 77 * chunks, 32)
    assert embeds.prompt_pooled.shape == embeds.negative_pooled.shape == (1, 1, 32)
    assert embeds.tokens == len(tokenize_weighted(pipe.tokenizer, prompt)[0])


def test_long_prompts_are_cut_at_commas(engine):
    tokenizer = engine.prior_pipe.tokenizer
    ids, weights = tokenize_weighted(tokenizer, _long_prompt(tokenizer, 200, prefix=""))
    comma = comma_id(tokenizer)
    chunks = split_chunks(ids, weights, comma)
    assert len(ids) > 2 * CHUNK and len(chunks) >= math.ceil(len(ids) / CHUNK)
    assert [t for c, _ in chunks for t in c] == ids  # nothing lost, nothing added
    for chunk_ids, chunk_weights in chunks[:-1]:
        assert len(chunk_ids) <= CHUNK and chunk_ids[-1] == comma  # tags stay whole
        assert len(chunk_weights) == len(chunk_ids)
    # without a comma in reach the cut is at 75 tokens
    plain = list(range(160))
    assert [len(c) for c, _ in split_chunks(plain, [1.0] * 160, comma)] == [75, 75, 10]


@pytest.mark.parametrize("prompt,negative", [
    ("very aesthetic, best quality, newest, 1girl, solo", "very displeasing, worst quality, oldest, monochrome,"),
    ("1girl", ""),
    ("smile, hat, sky", "lowres"),
])
def test_short_prompts_with_masked_padding_encode_exactly_like_diffusers(engine, prompt, negative):
    pipe = engine.prior_pipe
    ours = encode_pair(pipe.tokenizer, pipe.text_encoder, prompt, negative, "cpu", mask_padding=True)
    theirs = pipe.encode_prompt(device="cpu", batch_size=1, num_images_per_prompt=1,
                                do_classifier_free_guidance=True, prompt=prompt, negative_prompt=negative)
    assert ours.chunks == 1
    for mine, reference in zip((ours.prompt, ours.prompt_pooled, ours.negative, ours.negative_pooled), theirs):
        assert mine.shape == reference.shape
        assert torch.allclose(mine, reference, atol=1e-6, rtol=0)


def test_the_tags_past_the_third_chunk_by_the_encoders_split(engine):
    parts = [f"{word} {i}" for i, word in enumerate(["long hair", "blue eyes", "school uniform", "smile"] * 20)]
    text = ", ".join(parts)
    assert len(engine.chunk_counts(text)) > 3
    past = tags_past_trained(text, engine.chunk_counts)
    kept = parts[:len(parts) - len(past)]
    assert past and past == parts[len(kept):]
    assert len(engine.chunk_counts(", ".join(kept))) <= 3
    assert len(engine.chunk_counts(", ".join(parts[:len(kept) + 1]))) > 3


# --- caches and counters --------------------------------------------------------------


def test_an_identical_request_reuses_text_and_prior(engine, small):
    first = engine.generate(req(small))
    assert (first.counters.text_encodes, first.counters.prior_runs, first.counters.prior_steps) == (1, 1, 3)
    assert (first.counters.prior_cache_hits, first.counters.text_cache_hits) == (0, 0)
    assert not first.images[0].prior_reused
    second = engine.generate(req(small))
    c = second.counters
    assert (c.prior_cache_hits, c.prior_steps, c.prior_runs, c.text_cache_hits, c.text_encodes) == (1, 0, 0, 1, 0)
    assert (c.decoder_runs, c.decoder_steps) == (1, 2)
    assert second.images[0].prior_reused
    assert np.array_equal(pixels(first), pixels(second))
    assert engine.counters.prior_cache_hits >= 1  # the engine's totals add up the calls


@pytest.mark.parametrize("change", [{"decoder_cfg": 3.0}, {"decoder_steps": 3}, {"decoder_cfg": 2.0,
                                                                                   "decoder_steps": 1}])
def test_decoder_only_changes_reuse_the_prior(engine, small, change):
    base = engine.generate(req(small))
    changed = engine.generate(req(small, **change))
    c = changed.counters
    assert (c.prior_runs, c.prior_steps, c.prior_cache_hits) == (0, 0, 1)
    assert c.decoder_steps == change.get("decoder_steps", 2)
    assert not np.array_equal(pixels(base), pixels(changed))


@pytest.mark.parametrize("change", [{"prior_cfg": 4.0}, {"prior_steps": 2}, {"seed": 99}, {"prompt": "1boy"},
                                    {"negative_prompt": "lowres"}, {"width": 384}])
def test_prior_changes_rerun_the_prior(engine, small, change):
    engine.generate(req(small))
    c = engine.generate(req(small, **change)).counters
    assert (c.prior_runs, c.prior_cache_hits) == (1, 0)
    assert c.prior_steps == change.get("prior_steps", 3)
    text_changed = "prompt" in change or "negative_prompt" in change
    assert (c.text_encodes, c.text_cache_hits) == ((1, 0) if text_changed else (0, 1))


def test_generate_many_shares_the_prior(engine, small):
    events = []
    a, b = req(small, decoder_cfg=1.0), req(small, decoder_cfg=3.0, decoder_steps=3)
    result = engine.generate_many([a, b], on_progress=events.append)
    c = result.counters
    assert (c.prior_runs, c.prior_steps, c.prior_cache_hits) == (1, 3, 1)
    assert (c.decoder_runs, c.decoder_steps, c.text_encodes) == (2, 5, 1)
    assert [item.prior_reused for item in result.images] == [False, True]
    assert not np.array_equal(pixels(result, 0), pixels(result, 1))
    # the progress bar reaches its end: shared prior steps are counted once
    assert [e.done for e in events] == list(range(1, 9))
    assert {e.total for e in events} == {8}


def test_caches_are_bounded(tiny_source, small):
    engine = Engine(tiny_source, mode="fp32", device="cpu", prior_cache_size=2, text_cache_size=2)
    for seed in range(4):
        engine.generate(req(small, seed=seed, prior_steps=1, decoder_steps=1, prompt=f"tag{seed}"))
    assert engine.cache_counts()["priors"] == 2 and engine.cache_counts()["texts"] == 2
    c = engine.generate(req(small, seed=0, prior_steps=1, decoder_steps=1, prompt="tag0")).counters
    assert (c.prior_runs, c.text_encodes) == (1, 1)  # evicted, so run again
    c = engine.generate(req(small, seed=3, prior_steps=1, decoder_steps=1, prompt="tag3")).counters
    assert (c.prior_runs, c.text_encodes) == (0, 0)


# --- progress and cancelling ----------------------------------------------------------


def test_progress_events(engine, small):
    events: list[Progress] = []
    engine.generate(req(small, count=2, seed=70), on_progress=events.append)
    per_image = 3 + 2
    assert len(events) == 2 * per_image
    assert all(e.total == 2 * per_image and e.images == 2 for e in events)
    assert [e.done for e in events] == list(range(1, 2 * per_image + 1))
    first = events[:per_image]
    assert [(e.stage, e.step, e.steps) for e in first] == [("prior", 1, 3), ("prior", 2, 3), ("prior", 3, 3),
                                                           ("decoder", 1, 2), ("decoder", 2, 2)]
    assert [e.image for e in events] == [0] * per_image + [1] * per_image


def test_progress_skips_a_cached_prior(engine, small):
    engine.generate(req(small))
    events = []
    engine.generate(req(small), on_progress=events.append)
    assert [(e.stage, e.done, e.total) for e in events] == [("decoder", 1, 2), ("decoder", 2, 2)]


@pytest.mark.parametrize("stop_after", [0, 1, 3, 4, 6])
def test_cancel(engine, small, stop_after):
    seen = []

    def should_stop():
        return len(seen) >= stop_after

    with pytest.raises(Cancelled):
        engine.generate(req(small, count=2, seed=80), on_progress=seen.append, should_stop=should_stop)
    assert len(seen) == stop_after  # it stops right after the step that asked
    # the engine works afterwards, and no half-finished prior was cached
    events = []
    result = engine.generate(req(small, count=2, seed=80), on_progress=events.append)
    assert [item.request.seed for item in result.images] == [80, 81]
    assert events[-1].done == events[-1].total
    engine.clear_caches()
    reference = engine.generate(req(small, count=2, seed=80))
    assert all(np.array_equal(pixels(result, i), pixels(reference, i)) for i in range(2))


# --- memory modes on the CPU ----------------------------------------------------------


def _engine_with(tiny_source, plan, dtype):
    """An engine whose pipelines ``apply_mode`` built in ``plan``'s mode on the CPU."""
    engine = Engine(tiny_source, mode="fp32", device="cpu")
    engine.device = CPU
    engine.folders = fetch(tiny_source)
    engine.sizes = component_sizes(engine.folders)
    parts = load_components(engine.folders, dtype)
    engine.install(parts, plan)
    return engine


@pytest.fixture(scope="module")
def sizes(tiny_source):
    return component_sizes(fetch(tiny_source))


def test_weight_bytes_of_plain_modules(tiny_source):
    parts = load_components(fetch(tiny_source), torch.float32)
    assert weight_bytes(parts.prior) == 4 * sum(p.numel() for p in parts.prior.parameters()) + \
        sum(b.numel() * b.element_size() for b in parts.prior.buffers())


def test_fp8_quanto_shrinks_the_weights(tiny_source, sizes):
    plan = choose_mode("fp8", CPU, sizes)
    assert plan.mode is Mode.FP8 and plan.fp8_backend == "quanto-int8" and plan.compute_dtype == "bfloat16"
    parts = load_components(fetch(tiny_source), torch.bfloat16)
    before = {name: weight_bytes(getattr(parts, name)) for name in ("prior", "decoder", "text_encoder")}
    apply_mode(parts, plan, "cpu")
    assert weight_bytes(parts.prior) / before["prior"] < 0.7
    assert weight_bytes(parts.decoder) / before["decoder"] < 0.7
    # the tiny text encoder is mostly its (unquantized) token embedding, so it shrinks less
    assert weight_bytes(parts.text_encoder) < before["text_encoder"]
    from optimum.quanto.nn import QModuleMixin

    assert any(isinstance(m, QModuleMixin) for m in parts.prior.modules())


def test_fp8_layerwise_on_the_cpu(tiny_source, sizes, small):
    plan = dataclasses.replace(choose_mode("fp8", CPU, sizes), fp8_backend="layerwise")
    engine = _engine_with(tiny_source, plan, torch.bfloat16)
    assert engine.prior_pipe.prior.dtype == torch.bfloat16  # the pipeline's dtype is the compute dtype
    stored = {p.dtype for p in engine.prior_pipe.prior.parameters()}
    assert torch.float8_e4m3fn in stored
    image = run(engine, small)
    assert image.shape == (256, 256, 3) and image.std() > 0
    latents = engine.cached_priors()
    assert len(latents) == 1 and torch.isfinite(latents[0].latents).all()


def test_fp8_engine(tiny_source, small):
    engine = Engine(tiny_source, mode="fp8", device="cpu")
    result = engine.generate(req(small, width=384))
    assert engine.plan.mode is Mode.FP8 and engine.plan.fp8_backend == "quanto-int8"
    assert result.images[0].image.size == (384, 256)
    assert "Memory mode: fp8" in result.images[0].parameters
    assert pixels(result).std() > 0


def test_model_offload_on_the_cpu_matches_fp32(tiny_source, sizes, small, engine):
    fp32_reference = run(engine, small)
    plan = dataclasses.replace(choose_mode("fp32", CPU, sizes), mode=Mode.OFFLOAD_FP32)
    engine = _engine_with(tiny_source, plan, torch.float32)
    assert engine.prior_pipe._offload_device is not None  # model CPU offload hooks are in place
    image = run(engine, small)
    difference = np.abs(image.astype(int) - fp32_reference.astype(int))
    # the same computation, so at most a rounding step apart on a handful of pixels
    assert difference.max() <= 1 and (difference > 0).mean() < 0.001


def test_sequential_offload_on_the_cpu_matches_fp32(tiny_source, sizes, small, engine):
    fp32_reference = run(engine, small)
    plan = dataclasses.replace(choose_mode("fp32", CPU, sizes), mode=Mode.SEQUENTIAL_FP32)
    engine = _engine_with(tiny_source, plan, torch.float32)
    try:
        image = run(engine, small)
    except TypeError as exc:
        if "new() received an invalid combination of arguments" not in str(exc):
            raise
        pytest.skip("sequential offload can't run with device='cpu': diffusers turns it into 'cpu:0', and "
                    "accelerate's AlignDevicesHook then moves each weight with Parameter.to('cpu:0'), which "
                    "torch returns as a plain Tensor copy; putting it back on 'meta' calls "
                    "torch.Tensor(value, requires_grad=...) and fails (the app refuses offload modes on the CPU)")
    difference = np.abs(image.astype(int) - fp32_reference.astype(int))
    assert difference.max() <= 1 and (difference > 0).mean() < 0.001


def test_runtime_mode_switch(tiny_source, small):
    engine = Engine(tiny_source, mode="fp32", device="cpu")
    fp32_image = run(engine, small)
    fp8 = engine.set_mode("fp8")
    assert fp8.mode is Mode.FP8 and engine.plan is fp8 and engine.state == "ready"
    assert engine.cache_counts()["priors"] == 0 and engine.cache_counts()["texts"] == 0  # caches cleared with the old pipelines
    result = engine.generate(req(small))
    assert (result.counters.text_encodes, result.counters.prior_runs, result.counters.prior_cache_hits) == (1, 1, 0)
    assert "Memory mode: fp8" in result.images[0].parameters
    fp32 = engine.set_mode("fp32")
    assert fp32.mode is Mode.FP32 and engine.plan is fp32
    assert engine.cache_counts()["priors"] == 0 and engine.cache_counts()["texts"] == 0
    after = engine.generate(req(small))
    assert after.counters.prior_runs == 1 and after.counters.prior_cache_hits == 0
    assert np.array_equal(pixels(after), fp32_image)  # a fresh fp32 load draws the same image
    # a mode this device can't run is refused, and the engine keeps its current one
    with pytest.raises(InputError, match="no GPU"):
        engine.set_mode("offload-bf16")
    assert engine.plan is fp32 and engine.loaded
    assert engine.generate(req(small)).counters.prior_cache_hits == 1


def test_unsupported_mode_at_load(tiny_source):
    engine = Engine(tiny_source, mode="sequential-bf16", device="cpu")
    with pytest.raises(InputError, match="no GPU"):
        engine.load()
    assert engine.state == "error" and "no GPU" in engine.error and not engine.loaded
    with pytest.raises(InputError, match="unknown memory mode"):
        Engine(tiny_source, mode="turbo")


def test_mode_table(engine):
    rows = {mode: (need, note) for mode, need, note in engine.mode_table(256, 256)}
    assert set(rows) == {m.value for m in Mode if m is not Mode.AUTO}
    for mode in Mode:
        if mode is Mode.AUTO:
            continue
        need, note = rows[mode.value]
        assert need.startswith("~") and need.endswith("GiB")
        assert bool(note) == (mode.placement is not Placement.DEVICE)  # the CPU refuses offload modes


def test_a_missing_model_leaves_a_usable_error_state(tmp_path):
    engine = Engine(ModelSource(str(tmp_path / "prior"), str(tmp_path / "decoder")), mode="fp32", device="cpu")
    with pytest.raises(ModelError, match="does not exist"):
        engine.generate(build_request({"prompt": "a", "width": 128, "height": 128}))
    assert engine.state == "error" and "does not exist" in engine.error and not engine.loaded
