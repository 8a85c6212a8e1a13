"""Checks that need a GPU (CUDA, ROCm or XPU): the real offload modes and fp8 on the device.

Skipped where there is none. They run the tiny model, so they check behaviour, not speed.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from support import SMALL, pixels

from sote_ui.core.request import build_request
from sote_ui.engine import Engine

HAS_GPU = torch.cuda.is_available() or (hasattr(torch, "xpu") and torch.xpu.is_available())
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not HAS_GPU, reason="needs a CUDA, ROCm or XPU GPU")]

REQUEST = {**SMALL, "seed": 77, "prior_cfg": 4, "decoder_cfg": 1.5}


def _image(engine, **changes) -> np.ndarray:
    """The pixels of REQUEST (with ``changes``) as int16, so that differences can go below zero."""
    return pixels(engine.generate(build_request({**REQUEST, **changes}))).astype(np.int16)


@pytest.fixture(scope="module")
def reference(tiny_source):
    engine = Engine(tiny_source, mode="bf16")
    image = _image(engine)
    engine.unload()
    return image


@pytest.mark.parametrize("mode", ["offload-bf16", "sequential-bf16"])
def test_offload_modes_match_all_on_gpu(tiny_source, reference, mode):
    engine = Engine(tiny_source, mode=mode)
    image = _image(engine)
    assert engine.plan.mode.value == mode
    # Same weights, same seeds: only kernel-order noise may differ.
    assert np.abs(image - reference).mean() < 2.0


@pytest.mark.parametrize("mode", ["fp8", "offload-fp8"])
def test_fp8_modes_run_on_the_gpu_and_stay_close(tiny_source, reference, mode):
    engine = Engine(tiny_source, mode=mode)
    image = _image(engine)
    assert engine.plan.fp8_backend in ("quanto", "quanto-int8")
    assert image.shape == reference.shape
    assert image.std() > 0
    # fp8 weights change the pixels a little, not the picture: far closer to the bf16 image of the
    # same seed than to another seed's image.
    other = _image(engine, seed=78)
    assert np.abs(image - reference).mean() < 0.5 * np.abs(other - reference).mean()



def test_offload_runs_every_prior_before_any_decoder(tiny_source):
    engine = Engine(tiny_source, mode="offload-bf16")
    engine.load()
    decoder, vqgan = engine.decoder_pipe.decoder, engine.decoder_pipe.vqgan
    where = []
    decode = vqgan.decode

    def watched(*args, **kwargs):
        output = decode(*args, **kwargs)  # its offload hook runs first: where is the decoder now?
        where.append(next(decoder.parameters()).device.type)
        return output

    vqgan.decode = watched
    try:
        result = engine.generate(build_request({**REQUEST, "count": 2}))
    finally:
        del vqgan.decode
    assert len(where) == 2 and "cpu" not in where  # the decoder stays on the GPU through both VQGAN decodes
    assert next(decoder.parameters()).device.type == "cpu"  # and goes back once the run is over
    assert engine.stage_order == ["prior 0", "prior 1", "decoder 0", "decoder 1"]
    assert result.counters.stage_switches == 1
    assert [img.request.seed for img in result.images] == [77, 78]
