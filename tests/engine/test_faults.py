"""Faults injected into the real pipeline on the tiny model: the user is told what to do and the
engine keeps serving."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from support import SMALL

from sote_ui.core.errors import GenerationError, ModelError
from sote_ui.core.request import build_request
from sote_ui.engine import Engine
from sote_ui.engine.models import ModelSource
from sote_ui.service.studio import Studio, StudioConfig


def _fail_on_call(n, make_error):
    calls = {"n": 0}

    def hook(module, args, output):
        calls["n"] += 1
        if calls["n"] == n:
            raise make_error()
        return output

    return hook, calls


@pytest.mark.parametrize("stage, module_name", [("prior", "prior"), ("decoder", "decoder"), ("VQGAN", "vqgan")])
def test_out_of_memory_names_the_stage_and_the_engine_recovers(engine, small, stage, module_name):
    pipe = engine.prior_pipe if module_name == "prior" else engine.decoder_pipe
    module = getattr(pipe, module_name)
    target = module.up_blocks if module_name == "vqgan" else module  # the VQGAN's decode step
    hook, calls = _fail_on_call(2 if module_name != "vqgan" else 1,
                                lambda: torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"))
    handle = target.register_forward_hook(hook)
    request = build_request({**small, "seed": 9001 + len(stage)})
    try:
        with pytest.raises(GenerationError) as info:
            engine.generate(request)
    finally:
        handle.remove()
    message = str(info.value)
    assert f"out of GPU memory in the {stage}" in message
    assert "switch to" in message and "\n" not in message
    assert calls["n"] >= 1
    # Memory was freed and the next request works, with the same pixels as a clean run.
    again = engine.generate(request).images[0].image
    fresh = engine.generate(request).images[0].image
    assert again.size == (256, 256)
    assert np.array_equal(np.asarray(again), np.asarray(fresh))


@pytest.mark.parametrize("module_name", ["prior", "decoder"])
def test_nan_output_is_reported_not_shown(engine, small, module_name):
    pipe = engine.prior_pipe if module_name == "prior" else engine.decoder_pipe

    def to_nan(module, args, output):
        sample = output[0] if isinstance(output, tuple) else output.sample
        return (torch.full_like(sample, float("nan")),)

    handle = getattr(pipe, module_name).register_forward_hook(to_nan)
    request = build_request({**small, "seed": 7700 + len(module_name)})
    try:
        with pytest.raises(GenerationError, match="NaN.*fp32"):
            engine.generate(request)
    finally:
        handle.remove()
    # A NaN prior output was not cached: the next run computes a real prior and a real image.
    result = engine.generate(request)
    if module_name == "prior":
        assert (result.counters.prior_runs, result.counters.prior_cache_hits) == (1, 0)
        assert not result.images[0].prior_reused
    assert result.counters.decoder_runs == 1
    assert np.asarray(result.images[0].image).std() > 0


def test_a_failed_load_leaves_the_app_serving(tiny_pair, tmp_path):
    prior, decoder = tiny_pair
    broken = tmp_path / "prior"
    shutil.copytree(prior, broken)
    (broken / "prior" / "config.json").unlink()
    studio = Studio(StudioConfig(prior=str(broken), decoder=str(decoder), device="cpu", mode="fp32",
                                 outputs=str(tmp_path / "out"), presets_dir=None))
    studio.start_loading()
    assert studio.wait_loaded(60) is False
    assert "model load failed" in studio.status() and "prior/config.json is missing" in studio.status()
    with pytest.raises(ModelError, match="config.json is missing"):
        studio.generate({"prompt": "1girl", "width": 256, "height": 256})
    # Fixing the folder and switching mode reloads without a restart.
    shutil.copy(prior / "prior" / "config.json", broken / "prior" / "config.json")
    studio.set_mode("fp32")
    shots, report = studio.generate({**SMALL, "prompt": "1girl", "prior_steps": 2, "seed": 5})
    assert report["seeds"] == [5] and len(shots) == 1


def test_engine_load_error_is_one_line(tmp_path):
    engine = Engine(ModelSource(str(tmp_path / "nope"), str(tmp_path / "nope2")), mode="fp32", device="cpu")
    with pytest.raises(ModelError) as info:
        engine.load()
    assert "\n" not in str(info.value) and "does not exist" in str(info.value)
    assert engine.state == "error" and engine.error == str(info.value)


def test_a_stop_mid_decoder_evicts_offloaded_models_and_keeps_finished_images(tiny_source):
    from dataclasses import replace

    from sote_ui.core.errors import Cancelled
    from sote_ui.core.memory import Mode
    from sote_ui.engine.loading import load_components

    engine = Engine(tiny_source, mode="fp32", device="cpu")
    engine.load()
    # The app refuses offload on a CPU-only machine; build the offload hooks on 'cpu' by hand so the
    # engine's clean-up path runs for real.
    plan = replace(engine.plan, mode=Mode.OFFLOAD_FP32)
    engine.install(load_components(engine.folders, torch.float32), plan)
    evicted = []
    original = engine.decoder_pipe.maybe_free_model_hooks
    engine.decoder_pipe.maybe_free_model_hooks = lambda: (evicted.append("decoder"), original())[1]
    events = []
    request = build_request({**SMALL, "prompt": "1girl", "prior_steps": 2, "decoder_steps": 3, "seed": 4242,
                             "count": 2})
    with pytest.raises(Cancelled) as info:
        engine.generate(request, on_progress=events.append,
                        should_stop=lambda: bool(events) and events[-1].image == 1 and events[-1].stage == "decoder")
    assert [img.request.seed for img in info.value.images] == [4242]  # the first image was finished
    # The decoder that was stopped mid-run was moved off the device, as it would be at a normal end:
    # once by the finished first image, once by the clean-up after the stop.
    assert evicted == ["decoder", "decoder"]
