"""``auto`` and the run it meets: a hi-res pass larger than what the loaded mode was chosen for switches the
mode before any step runs, instead of running out of memory in the second pass."""

from __future__ import annotations

from dataclasses import replace

import pytest

from sote_ui.core.memory import Mode, estimate
from sote_ui.core.request import build_request, final_size


@pytest.fixture
def auto_engine(tiny_source):
    from sote_ui.engine import Engine

    engine = Engine(tiny_source, mode="auto", device="cpu")
    engine.load()
    assert engine.plan.mode == Mode.FP32  # the tiny pair fits anywhere: auto takes the fastest CPU mode
    return engine


def squeeze(engine, small_job, big_job):
    """Make the device's free memory fit fp32 for ``small_job`` but not for ``big_job``, while bf16 fits both."""
    def need(mode, job):
        return estimate(mode, engine.sizes, job.width, job.height, engine.device,
                        hires_size=final_size(job) if job.hires else None)

    small, big, bf16_big = need(Mode.FP32, small_job), need(Mode.FP32, big_job), need(Mode.BF16, big_job)
    assert small < big and bf16_big < big
    engine.device = replace(engine.device, free_bytes=max(small, bf16_big) + (big - max(small, bf16_big)) // 2)


def test_a_hi_res_run_past_the_loaded_modes_budget_switches_before_any_step(auto_engine, small):
    plain = build_request({**small, "seed": 3})
    hires = build_request({**small, "seed": 3, "hires_scale": 2.0, "prior_steps": 2, "hires_steps": 2})
    squeeze(auto_engine, plain, hires)

    result = auto_engine.generate_many([plain])  # fits the loaded mode: nothing changes
    assert auto_engine.plan.mode == Mode.FP32
    assert not [w for w in result.warnings if "auto switched" in w]

    squeeze(auto_engine, plain, hires)
    result = auto_engine.generate_many([hires])
    assert auto_engine.plan.mode != Mode.FP32
    switched = [w for w in result.warnings if w.startswith("auto switched from fp32 to ")]
    assert len(switched) == 1 and auto_engine.plan.mode.value in switched[0]
    assert result.images[0].image.size == final_size(hires)
    assert auto_engine.requested_mode == Mode.AUTO  # still auto for the next run


def test_an_explicit_mode_is_never_switched(tiny_source, small):
    from sote_ui.engine import Engine

    engine = Engine(tiny_source, mode="fp32", device="cpu")
    engine.load()
    plain = build_request({**small, "seed": 3})
    hires = build_request({**small, "seed": 3, "hires_scale": 2.0, "prior_steps": 2, "hires_steps": 2})
    squeeze(engine, plain, hires)
    result = engine.generate_many([hires])
    assert engine.plan.mode == Mode.FP32
    assert not [w for w in result.warnings if "auto switched" in w]
