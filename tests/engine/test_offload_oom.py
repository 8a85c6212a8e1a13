"""Model offload runs every prior before any decoder; an out-of-memory error frees the memory before it is reported."""

from __future__ import annotations

import dataclasses
import gc
import weakref

import numpy as np
import pytest
import torch
from support import SMALL, pixels

from sote_ui.core.errors import GenerationError
from sote_ui.core.memory import Mode
from sote_ui.core.request import build_request
from sote_ui.engine import Engine
from sote_ui.engine.loading import load_components

REQUEST = {**SMALL, "prior_steps": 2, "seed": 900}


def _offloaded(tiny_source) -> Engine:
    """An engine with model CPU offload hooks built on 'cpu' (the app refuses offload without a GPU)."""
    engine = Engine(tiny_source, mode="fp32", device="cpu")
    engine.load()
    plan = dataclasses.replace(engine.plan, mode=Mode.OFFLOAD_FP32)
    engine.install(load_components(engine.folders, torch.float32), plan)
    return engine


def _count_moves(engine) -> list[str]:
    """Record each time a pipeline sends its models back to the CPU (the end of an offloaded stage)."""
    moves: list[str] = []
    for name, pipe in (("prior", engine.prior_pipe), ("decoder", engine.decoder_pipe)):
        original = type(pipe).maybe_free_model_hooks

        def wrapped(self=pipe, name=name, original=original):
            moves.append(name)
            return original(self)

        pipe.maybe_free_model_hooks = wrapped
    return moves


def test_offload_runs_every_prior_then_every_decoder(tiny_source):
    engine = _offloaded(tiny_source)
    moves = _count_moves(engine)
    events = []
    result = engine.generate(build_request({**REQUEST, "count": 3}), on_progress=events.append)
    assert [img.request.seed for img in result.images] == [900, 901, 902]
    assert engine.stage_order == ["prior 0", "prior 1", "prior 2", "decoder 0", "decoder 1", "decoder 2"]
    stages = [e.stage for e in events]
    assert stages == ["prior"] * 6 + ["decoder"] * 6  # 3 images x 2 steps, priors first
    assert events[-1].done == events[-1].total == 12
    # The prior goes back to the CPU once after all priors, the decoder once after all decoders
    # (the text encoder's free comes first), not once per image.
    assert moves.count("decoder") == 1 and moves.count("prior") <= 2
    assert result.counters.stage_switches == 1  # prior -> decoder, once


def test_offload_keeps_the_decoder_through_the_vqgan_decodes_of_a_run(tiny_source):
    from sote_ui.engine.placement.offload import offload_hooks

    engine = _offloaded(tiny_source)
    vqgan = engine.decoder_pipe.vqgan
    (vqgan_hook,) = [hook for hook in offload_hooks(engine.decoder_pipe) if hook is vqgan._hf_hook]
    chained = vqgan_hook.prev_module_hook
    assert chained is not None  # diffusers chains decoder -> vqgan: the VQGAN's start evicts the decoder
    seen = []
    decode = vqgan.decode  # the pipeline calls decode, whose offload hook evicts the previous model

    def watched(*args, **kwargs):
        seen.append(vqgan_hook.prev_module_hook)
        return decode(*args, **kwargs)

    vqgan.decode = watched
    try:
        engine.generate(build_request({**REQUEST, "count": 2}))
    finally:
        del vqgan.decode
    assert len(seen) == 2 and all(previous is None for previous in seen)  # paused for the whole run
    assert vqgan_hook.prev_module_hook is chained  # and restored after it


def test_offload_order_keeps_each_seed_reproducible(tiny_source):
    # Every prior then every decoder gives each seed the pixels it gets alone. Compared on the same
    # placement: model offload and all-on-device differ in the last bit of a few pixels on some CPUs.
    offloaded = _offloaded(tiny_source)
    together = offloaded.generate(build_request({**REQUEST, "count": 3}))
    assert offloaded.stage_order == ["prior 0", "prior 1", "prior 2", "decoder 0", "decoder 1", "decoder 2"]
    for i, image in enumerate(together.images):
        offloaded.clear_caches()  # each image's prior computed again, alone
        alone = offloaded.generate(build_request({**REQUEST, "seed": 900 + i}))
        assert alone.counters.prior_runs == 1
        assert np.array_equal(pixels(image.image), pixels(alone)), i


def test_all_on_the_device_finishes_each_image_before_the_next(engine):
    events = []
    engine.generate(build_request({**REQUEST, "count": 2, "seed": 950}), on_progress=events.append)
    assert engine.stage_order == ["prior 0", "decoder 0", "prior 1", "decoder 1"]
    assert [e.stage for e in events] == ["prior", "prior", "decoder", "decoder"] * 2


@pytest.mark.parametrize("stage", ["prior", "decoder"])
def test_out_of_memory_frees_the_activations_before_the_error_is_reported(tiny_source, stage):
    engine = Engine(tiny_source, mode="fp32", device="cpu")
    engine.load()
    pipe = engine.prior_pipe if stage == "prior" else engine.decoder_pipe
    unet = pipe.prior if stage == "prior" else pipe.decoder
    held: list[weakref.ref] = []

    def hook(module, args, output):
        activation = output[0] * 2  # a fresh activation of the failing step
        held.append(weakref.ref(activation))
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    handle = unet.register_forward_hook(hook)
    try:
        with pytest.raises(GenerationError) as info:
            engine.generate(build_request({**REQUEST, "seed": 7}))
        # When the error reaches the caller, nothing keeps the failing step's tensors alive any more:
        # not the exception's frames, not a cycle waiting for the collector.
        gc.disable()
        try:
            assert held and held[0]() is None
        finally:
            gc.enable()
    finally:
        handle.remove()
    message = str(info.value)
    assert f"out of GPU memory in the {stage}" in message and "memory was freed" in message
    assert info.value.__traceback__ is not None and info.value.__context__ is None  # no chained frames
    # the engine still works afterwards
    assert engine.generate(build_request({**REQUEST, "seed": 8})).images[0].image.size == (256, 256)
