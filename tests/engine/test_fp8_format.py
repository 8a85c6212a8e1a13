"""The 8-bit weight format the engine picks keeps Stable Cascade's small layers, where a plain fp8 cast does not.

Stability's training init starts the ResBlock output projections sqrt(1/32) smaller than the other
layers (std ~0.0025 in the full-size prior). A plain cast to float8_e4m3fn (no scale) has only
subnormals there, 2^-9 apart, and flushes everything under 2^-10 to zero; a per-row scale puts each
row's largest weight at the top of the format. The tiny pair's 32-wide layers are ~30x larger than
that, so the check builds one level of the prior at its real width (2048) and draws its weights as
the training code does at the full prior's depth; the conversion is the engine's own (``to_fp8``).
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from sote_ui.core.memory import DeviceInfo, GiB, fp8_backend
from sote_ui.engine.builders import FULL_PRIOR, _decoder_unet, _text_encoder, training_init_weight
from sote_ui.engine.placement.fp8 import computed_weights, to_fp8

RTX_4090 = DeviceInfo("cuda", "cuda:0", "RTX 4090", 24 * GiB, 23 * GiB, True, (8, 9))


def rel_error(approx, exact) -> float:
    return float((approx.float() - exact.float()).norm() / exact.float().norm())


@pytest.fixture(scope="module")
def prior_level():
    """One down level of the full-size prior (ResBlock, TimestepBlock, AttnBlock at width 2048), bf16,
    with the training init of the full prior (its 32 down blocks set the output projections' shrink)."""
    from diffusers import StableCascadeUNet
    from torch import nn

    config = dict(FULL_PRIOR, block_out_channels=(2048,), num_attention_heads=(32,), down_num_layers_per_block=(1,),
                  up_num_layers_per_block=(1,), down_blocks_repeat_mappers=(1,), up_blocks_repeat_mappers=(1,),
                  block_types_per_layer=(FULL_PRIOR["block_types_per_layer"][0],), dropout=(0.0,), switch_level=None,
                  clip_text_in_channels=32, clip_text_pooled_in_channels=32, clip_image_in_channels=32)
    torch.manual_seed(0)
    unet = StableCascadeUNet(**config).to(torch.bfloat16)
    shrink = math.sqrt(1 / sum(FULL_PRIOR["down_num_layers_per_block"]))
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, module in unet.named_modules():
            if isinstance(module, (nn.Linear, nn.Conv2d)):
                module.weight.copy_(training_init_weight(name, tuple(module.weight.shape), shrink, generator))
                if module.bias is not None:
                    module.bias.zero_()
    return unet.eval().requires_grad_(False)


def test_plain_fp8_cast_flushes_the_small_init_layers(prior_level):
    weight = prior_level.down_blocks[0][0].channelwise[4].weight
    assert weight.float().std().item() == pytest.approx(0.0025, rel=0.05)
    plain = weight.to(torch.float8_e4m3fn)
    flushed = float(((plain.float() == 0) & (weight != 0)).float().mean())
    assert flushed > 0.2 and rel_error(plain, weight) > 0.15


def test_the_8bit_format_picked_for_an_rtx_4090_keeps_every_layer_within_2_percent(prior_level):
    original = {name: w.clone() for name, w in computed_weights(prior_level).items()}
    backend = fp8_backend(RTX_4090)
    parts = SimpleNamespace(text_encoder=_text_encoder(600, 598, 599), prior=prior_level,
                            decoder=_decoder_unet().to(torch.bfloat16))
    to_fp8(parts, backend, torch.bfloat16)
    stored = computed_weights(parts.prior)
    eight_bit = {name for name, w in stored.items() if w is not None and name in original
                 and not name.startswith(("embedding", "clf", "clip_"))}
    assert "down_blocks.0.0.channelwise.4" in eight_bit and len(eight_bit) >= 10
    errors = {name: rel_error(stored[name], original[name]) for name in eight_bit if original[name].any()}
    worst = max(errors, key=errors.get)
    assert errors[worst] < 0.02, (backend, worst, errors[worst])
    out_projection = errors["down_blocks.0.0.channelwise.4"]
    assert 0 < out_projection < 0.02
