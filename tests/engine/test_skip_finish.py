"""Skip (drop the image in progress, go on) and Stop and finish (end the batch, finish the image in progress
from what its prior reached), on the tiny pair."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from support import SMALL, pixels

from sote_ui.core.errors import Cancelled
from sote_ui.core.request import build_request
from sote_ui.engine import Engine

BATCH = {**SMALL, "prior_steps": 4, "decoder_steps": 2, "seed": 700, "count": 3}


class Press:
    """A button pressed once, when the run's last reported step matches ``when``."""

    def __init__(self, when, once: bool = True):
        self.events, self.when, self.once, self.pressed = [], when, once, 0

    def progress(self, p) -> None:
        self.events.append(p)

    def __call__(self) -> bool:
        if self.events and self.when(self.events[-1]) and not (self.once and self.pressed):
            self.pressed += 1
            return True
        return bool(self.pressed) and not self.once  # Stop and finish stays pressed


def alone(engine, seed: int, **overrides):
    return engine.generate(build_request({**BATCH, "count": 1, "seed": seed, **overrides}))


def test_skip_during_image_2_of_3_keeps_images_1_and_3_with_their_seeds(engine):
    skip = Press(lambda p: p.image == 1 and p.stage == "prior" and p.step == 2)
    shown = []
    result = engine.generate_many([build_request(BATCH)], on_progress=skip.progress, should_skip=skip,
                                  on_image=shown.append)
    assert [image.request.seed for image in result.images] == [700, 702]
    assert [image.request.seed for image in shown] == [700, 702]  # each handed on as it finished
    assert result.counters.decoder_runs == 2 and result.counters.prior_steps == 4 + 2 + 4
    # The run's total lost what image 2 would still have run, so the bar ends full.
    assert skip.events[-1].done == skip.events[-1].total == 4 + 2 + 2 + 4 + 2
    engine.clear_caches()
    for image, seed in zip(result.images, (700, 702)):
        assert np.array_equal(pixels(image.image), pixels(alone(engine, seed)))


def test_skip_in_a_decoder_drops_only_that_image(engine):
    skip = Press(lambda p: p.image == 0 and p.stage == "decoder" and p.step == 1)
    result = engine.generate_many([build_request(BATCH)], on_progress=skip.progress, should_skip=skip)
    assert [image.request.seed for image in result.images] == [701, 702]


def test_stop_and_finish_in_a_prior_decodes_what_it_reached_and_says_so(engine):
    full = alone(engine, 705, prior_steps=6)
    engine.clear_caches()
    finish = Press(lambda p: p.image == 1 and p.stage == "prior" and p.step == 2, once=False)
    shown = []
    with pytest.raises(Cancelled) as info:
        engine.generate_many([build_request({**BATCH, "prior_steps": 6, "seed": 704})],
                             on_progress=finish.progress, should_finish=finish, on_image=shown.append)
    images = info.value.images
    assert [image.request.seed for image in images] == [704, 705]  # image 3 never started
    assert [image.request.seed for image in shown] == [704, 705]
    assert images[0].prior_stopped_at is None and "Prior stopped at" not in images[0].parameters
    assert images[1].prior_stopped_at == (2, 6)
    assert "Prior stopped at: 2/6" in images[1].parameters
    assert images[1].image.size == (256, 256)
    assert not np.array_equal(pixels(images[1].image), pixels(full))  # 2 steps of 6 are not the whole prior
    assert finish.events[-1].stage == "decoder" and finish.events[-1].image == 1  # its decoder ran in full
    # The partial prior was not cached as the seed's prior: the same seed still gives the full image.
    again = alone(engine, 705, prior_steps=6)
    assert again.counters.prior_cache_hits == 0
    assert np.array_equal(pixels(again), pixels(full))


def test_stop_and_finish_in_a_decoder_finishes_that_decoder(engine):
    finish = Press(lambda p: p.image == 0 and p.stage == "decoder" and p.step == 1, once=False)
    with pytest.raises(Cancelled) as info:
        engine.generate_many([build_request(BATCH)], on_progress=finish.progress, should_finish=finish)
    images = info.value.images
    assert [image.request.seed for image in images] == [700]
    assert images[0].prior_stopped_at is None
    engine.clear_caches()
    assert np.array_equal(pixels(images[0].image), pixels(alone(engine, 700)))


def test_skip_and_finish_with_model_offload_run_priors_first(tiny_source):
    from sote_ui.core.memory import Mode
    from sote_ui.engine.loading import load_components

    engine = Engine(tiny_source, mode="fp32", device="cpu")
    engine.load()
    # Offload on 'cpu' by hand (the app refuses it without a GPU) so every prior runs before any decoder.
    engine.install(load_components(engine.folders, torch.float32), replace(engine.plan, mode=Mode.OFFLOAD_FP32))
    skip = Press(lambda p: p.image == 1 and p.stage == "prior" and p.step == 1)
    result = engine.generate_many([build_request(BATCH)], on_progress=skip.progress, should_skip=skip)
    assert [image.request.seed for image in result.images] == [700, 702]
    assert engine.stage_order == ["prior 0", "prior 1", "prior 2", "decoder 0", "decoder 2"]
    engine.clear_caches()
    finish = Press(lambda p: p.image == 1 and p.stage == "prior" and p.step == 3, once=False)
    with pytest.raises(Cancelled) as info:
        engine.generate_many([build_request(BATCH)], on_progress=finish.progress, should_finish=finish)
    # Only the image in progress is finished; image 1's prior is done and cached for a later run.
    assert [(image.request.seed, image.prior_stopped_at) for image in info.value.images] == [(701, (3, 4))]
    assert engine.stage_order == ["prior 0", "prior 1", "decoder 1"]
