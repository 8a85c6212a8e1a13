"""Live previews of stage C and prior-only drafts, on the tiny pair."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from support import SMALL, pixels

from sote_ui.core.request import build_request
from sote_ui.engine import Engine
from sote_ui.engine.previews import STAGE_C_RGB, PreviewDecoder, Previewer

PREVIEWS = {**SMALL, "prior_steps": 8, "seed": 60}  # 8 prior steps: previews at steps 4 and 8
LATENT_SIDE = math.ceil(256 / 42.67)  # the prior's latent for 256 px


@pytest.fixture
def fresh(tiny_source):
    engine = Engine(tiny_source, mode="fp32", device="cpu")
    engine.load()
    return engine


def test_the_previewer_has_stabilitys_layout_and_size():
    model = Previewer()
    keys = set(model.state_dict())
    convs = [0, 3, 6, 9, 12, 15, 18, 21, 24]
    norms = [2, 5, 8, 11, 14, 17, 20, 23]
    assert {f"blocks.{i}.weight" for i in convs} | {f"blocks.{i}.running_var" for i in norms} <= keys
    assert len(model.blocks) == 25
    assert 3.9e6 < sum(p.numel() for p in model.parameters()) < 4.1e6  # "about 4M parameters"
    out = model.eval()(torch.randn(1, 16, 6, 4))
    assert out.shape == (1, 3, 48, 32)  # 8x


def test_previews_stream_every_few_steps_and_end_on_the_last(fresh):
    seen = []
    result = fresh.generate_many([build_request(PREVIEWS)], on_preview=seen.append)
    assert [p.step for p in seen] == [4, 8]
    assert all(p.steps == 8 and p.index == 0 and p.kind == "fast" for p in seen)
    assert seen[0].image.size == (LATENT_SIDE * 8, LATENT_SIDE * 8)
    assert result.counters.previews == 2
    assert not np.array_equal(pixels(seen[0].image), pixels(seen[1].image))  # the latent moved on
    odd = []
    fresh.generate_many([build_request({**PREVIEWS, "prior_steps": 6, "seed": 61, "count": 2})], on_preview=odd.append)
    assert [(p.index, p.step) for p in odd] == [(0, 4), (0, 6), (1, 4), (1, 6)]


def test_previews_are_off_without_a_listener_or_when_switched_off(fresh):
    quiet = fresh.generate(build_request({**PREVIEWS, "seed": 62}))
    assert quiet.counters.previews == 0
    fresh.preview_kind = "off"
    seen = []
    result = fresh.generate_many([build_request({**PREVIEWS, "seed": 63})], on_preview=seen.append)
    assert seen == [] and result.counters.previews == 0
    assert result.images[0].image.size == (256, 256)


def test_previews_do_not_change_the_image(fresh):
    plain = fresh.generate(build_request({**PREVIEWS, "seed": 64}))
    fresh.clear_caches()
    watched = fresh.generate_many([build_request({**PREVIEWS, "seed": 64})], on_preview=lambda p: None)
    assert np.array_equal(pixels(plain), pixels(watched))


def test_stabilitys_previewer_is_used_when_its_weights_are_here(fresh, tmp_path, monkeypatch):
    weights = tmp_path / "previewer.safetensors"
    torch.manual_seed(0)
    save_file({k: v.contiguous() for k, v in Previewer().state_dict().items()}, str(weights))
    monkeypatch.setenv("SOTE_PREVIEWER", str(weights))
    fresh.preview_kind = "auto"
    seen = []
    fresh.generate_many([build_request({**PREVIEWS, "seed": 65})], on_preview=seen.append)
    assert [p.kind for p in seen] == ["previewer", "previewer"]
    assert seen[0].image.size == (LATENT_SIDE * 8, LATENT_SIDE * 8)


def test_asking_for_the_previewer_offline_falls_back_with_a_note(empty_hub_cache, tiny_pair):
    decoder = PreviewDecoder.create("previewer", tiny_pair[0])
    assert decoder.kind == "fast"
    assert "stabilityai/stable-cascade" in decoder.note and "fast projection" in decoder.note
    with pytest.raises(ValueError, match="unknown preview kind"):
        PreviewDecoder.create("sharp", tiny_pair[0])


def test_the_fast_map_gives_a_latent_pixel_one_colour_whatever_surrounds_it():
    torch.manual_seed(1)
    latent = torch.randn(1, 16, 6, 6)
    other = latent.clone()
    other[:, :, :, 3:] = 3 * torch.randn(1, 16, 6, 3)  # the right half of the frame changes
    batch = torch.cat([latent, torch.randn(3, 16, 6, 6)])  # and other images join the batch
    fast = PreviewDecoder("fast")
    left = pixels(fast.decode(latent))[:, : 3 * 8]
    assert np.array_equal(left, pixels(fast.decode(other))[:, : 3 * 8])
    assert np.array_equal(pixels(fast.decode(latent)), pixels(fast.decode(batch)))
    assert left.std() > 5  # the left half is not one flat colour
    # The colours are the published stage-C factors: one channel at +1 draws (1 + its row) / 2.
    for channel in (6, 9, 15):
        one_hot = torch.zeros(1, 16, 1, 1)
        one_hot[0, channel] = 1.0
        expected = np.round((1 + np.array(STAGE_C_RGB[channel])) / 2 * 255)
        assert np.array_equal(pixels(fast.decode(one_hot))[0, 0], expected.astype(np.uint8))


def test_previews_draw_the_predicted_clean_latent(fresh):
    """Two steps into eight, the noisy latent is far from where the prior ends; the clean latent the
    prior predicts from it is near. Previews must draw the latter."""
    drawn, noisy = [], []
    decoder = PreviewDecoder("fast")
    original = decoder.decode

    def record(latents):
        drawn.append(latents.detach().clone())
        return original(latents)

    decoder.decode = record
    fresh.previews = lambda: decoder
    fresh.preview_every = 1

    def step_end(pipe, i, t, kwargs):
        noisy.append(kwargs["latents"].detach().clone())
        return {}

    request = build_request({**PREVIEWS, "seed": 66, "prior_cfg": 4.0})
    fresh.generate_many([request], on_preview=lambda p: None)
    final = fresh.cached_priors()[-1].latents

    def distance(latent):
        return ((latent - final).norm() / final.norm()).item()

    fresh.clear_caches()
    pipe = fresh.prior_pipe
    pipe(**fresh.encode(request).conditioning(guided=True), width=256, height=256, num_inference_steps=8,
         guidance_scale=4.0, generator=torch.Generator("cpu").manual_seed(66), output_type="pt",
         callback_on_step_end=step_end)
    assert len(drawn) == len(noisy) == 8
    assert distance(noisy[1]) > 0.2  # the step's own latent: still far off
    assert distance(drawn[1]) < 0.25 * distance(noisy[1])  # what the preview draws: near
    assert distance(drawn[-1]) < 1e-3  # the last prediction is the result


def test_a_prior_with_previews_steps_as_diffusers_does(fresh):
    from diffusers import DDPMWuerstchenScheduler

    request = build_request({**PREVIEWS, "seed": 67})
    watched = fresh.generate_many([request], on_preview=lambda p: None)
    # The engine's own stage-C loop draws the previews; the pipeline's scheduler is diffusers' own.
    assert type(fresh.prior_pipe.scheduler) is DDPMWuerstchenScheduler
    ours = fresh.cached_priors()[-1].latents
    fresh.clear_caches()
    embeds = fresh.encode(request)
    theirs = fresh.prior_pipe(**embeds.conditioning(guided=True), width=256, height=256, num_inference_steps=8,
                              guidance_scale=request.prior_cfg, generator=torch.Generator("cpu").manual_seed(67),
                              output_type="pt").image_embeddings
    assert torch.equal(ours, theirs)
    assert watched.counters.previews == 2


def test_prior_only_drafts_then_finish_only_the_picked_ones(fresh):
    request = build_request({**PREVIEWS, "seed": 70, "count": 4, "prior_steps": 3})
    drafted = fresh.generate_many([request], prior_only=True)
    c = drafted.counters
    assert [d.request.seed for d in drafted.drafts] == [70, 71, 72, 73] and drafted.images == []
    assert (c.prior_runs, c.prior_steps, c.decoder_runs, c.decoder_steps) == (4, 12, 0, 0)
    assert drafted.drafts[0].preview.size == (LATENT_SIDE * 8, LATENT_SIDE * 8)
    picked = [d.request for d in drafted.drafts if d.request.seed in (71, 73)]
    finished = fresh.generate_many(picked)
    c = finished.counters
    assert (c.prior_runs, c.prior_steps, c.prior_cache_hits) == (0, 0, 2)  # the drafts' priors were reused
    assert (c.decoder_runs, c.decoder_steps) == (2, 4)
    assert [item.request.seed for item in finished.images] == [71, 73]
    # A finished draft is the image a full run of that seed gives.
    fresh.clear_caches()
    full = fresh.generate(build_request({**PREVIEWS, "seed": 73, "prior_steps": 3}))
    assert np.array_equal(pixels(full), pixels(finished, 1))
