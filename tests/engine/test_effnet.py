"""Image to image's EfficientNet encoder: Stability's key layout, loading, and the engine's encode_image."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from sote_ui.core.errors import ModelError
from sote_ui.core.memory import EFFNET_PARAMS
from sote_ui.engine import Engine
from sote_ui.engine.builders import build_full_effnet, build_tiny_effnet
from sote_ui.engine.effnet import HUB_FILE, HUB_REPO, TINY, V2_S, EfficientNetEncoder, load_effnet

# EfficientNetV2-S as torchvision's ``_efficientnet_conf("efficientnet_v2_s")`` lists it (Tan & Le 2021,
# table 4): (fused, expand ratio, kernel, stride, input channels, output channels, layers). Stem 3 -> 24
# (3x3, stride 2), head 256 -> 1280 (1x1); Stability's mapper 1280 -> 16 (1x1, no bias) and a BatchNorm
# without affine. Written out here, apart from the module, so the two can disagree.
V2_S_TABLE = [
    (True, 1, 3, 1, 24, 24, 2),
    (True, 4, 3, 2, 24, 48, 4),
    (True, 4, 3, 2, 48, 64, 4),
    (False, 4, 3, 2, 64, 128, 6),
    (False, 6, 3, 1, 128, 160, 9),
    (False, 6, 3, 2, 160, 256, 15),
]
# torchvision's EfficientNet_V2_S_Weights meta "num_params" (21,458,488) less its classifier's
# Linear(1280, 1000) (1,281,000 with bias).
V2_S_FEATURE_PARAMS = 21_458_488 - 1_281_000


def _bn(prefix: str, channels: int) -> dict[str, tuple]:
    return {f"{prefix}.weight": (channels,), f"{prefix}.bias": (channels,), f"{prefix}.running_mean": (channels,),
            f"{prefix}.running_var": (channels,), f"{prefix}.num_batches_tracked": ()}


def _conv_bn(prefix: str, c_in: int, c_out: int, kernel: int, groups: int = 1) -> dict[str, tuple]:
    return {f"{prefix}.0.weight": (c_out, c_in // groups, kernel, kernel), **_bn(f"{prefix}.1", c_out)}


def expected_layout() -> dict[str, tuple]:
    """Every key of Stability's effnet_encoder.safetensors and its shape, from the stage table alone."""
    keys = _conv_bn("backbone.0", 3, 24, 3)
    for stage, (fused, ratio, kernel, _stride, c_in, c_out, layers) in enumerate(V2_S_TABLE, start=1):
        for layer in range(layers):
            block_in = c_in if layer == 0 else c_out
            expanded = block_in * ratio  # all multiples of 8 already: no rounding in V2-S
            prefix = f"backbone.{stage}.{layer}.block"
            if fused and ratio == 1:
                keys |= _conv_bn(f"{prefix}.0", block_in, c_out, kernel)
            elif fused:
                keys |= _conv_bn(f"{prefix}.0", block_in, expanded, kernel)
                keys |= _conv_bn(f"{prefix}.1", expanded, c_out, 1)
            else:
                squeezed = block_in // 4
                keys |= _conv_bn(f"{prefix}.0", block_in, expanded, 1)
                keys |= _conv_bn(f"{prefix}.1", expanded, expanded, kernel, groups=expanded)
                keys |= {f"{prefix}.2.fc1.weight": (squeezed, expanded, 1, 1), f"{prefix}.2.fc1.bias": (squeezed,),
                         f"{prefix}.2.fc2.weight": (expanded, squeezed, 1, 1), f"{prefix}.2.fc2.bias": (expanded,)}
                keys |= _conv_bn(f"{prefix}.3", expanded, c_out, 1)
    keys |= _conv_bn("backbone.7", 256, 1280, 1)
    keys |= {"mapper.0.weight": (16, 1280, 1, 1), "mapper.1.running_mean": (16,), "mapper.1.running_var": (16,),
             "mapper.1.num_batches_tracked": ()}
    return keys


def picture(width: int, height: int, seed: int = 0) -> Image.Image:
    """A smooth colour picture (random blobs upscaled), so that two seeds give clearly different images."""
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.rand(1, 3, 4, 4, generator=generator)
    full = torch.nn.functional.interpolate(coarse, size=(height, width), mode="bilinear")[0]
    return Image.fromarray((full.permute(1, 2, 0).numpy() * 255).round().astype("uint8"))


# 1. The published layout ----------------------------------------------------------------------------


def test_the_full_size_module_has_stabilitys_keys_and_shapes():
    with torch.device("meta"):  # no memory: only names and shapes
        model = EfficientNetEncoder(V2_S)
    ours = {key: tuple(value.shape) for key, value in model.state_dict().items()}
    expected = expected_layout()
    assert sorted(ours.keys() - expected.keys()) == []
    assert sorted(expected.keys() - ours.keys()) == []
    assert {key: shape for key, shape in ours.items() if shape != expected[key]} == {}
    # the key ComfyUI recognises Stability's file by, and the mapper's norm without affine
    assert "backbone.1.0.block.0.1.num_batches_tracked" in ours
    assert "mapper.1.weight" not in ours
    assert sum(p.numel() for p in model.backbone.parameters()) == V2_S_FEATURE_PARAMS
    # what the memory estimates count for it
    assert sum(p.numel() for p in model.parameters()) == EFFNET_PARAMS


def test_the_norms_have_torchvisions_and_stabilitys_eps():
    # torchvision builds EfficientNetV2 with BatchNorm2d(eps=1e-3); Stability's mapper keeps torch's 1e-5.
    # Not in the file, but the trained statistics were computed with them.
    with torch.device("meta"):
        model = EfficientNetEncoder(V2_S)
    backbone = {m.eps for m in model.backbone.modules() if isinstance(m, torch.nn.BatchNorm2d)}
    assert backbone == {1e-3}
    assert model.mapper[1].eps == 1e-5 and not model.mapper[1].affine


def test_the_tiny_encoder_keeps_the_naming_scheme_and_the_32x_downscale(tiny_effnet):
    tensors = load_file(tiny_effnet)
    assert {"backbone.0.0.weight", "backbone.1.0.block.0.1.num_batches_tracked", "mapper.0.weight",
            "mapper.1.running_var"} <= tensors.keys()
    assert any(".block.2.fc1.weight" in key for key in tensors)  # an MBConv with squeeze-excite
    assert tensors["mapper.0.weight"].shape == (16, TINY.head, 1, 1)
    latent = load_effnet(tiny_effnet).encode(picture(96, 64))
    assert latent.shape == (1, 16, 2, 3)


def test_it_computes_what_stabilitys_module_on_torchvisions_efficientnet_computes(tmp_path):
    # Where torchvision imports (not with every torch build), the module is checked against the real one.
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    backbone = torchvision.models.efficientnet_v2_s().features.eval()
    mapper = torch.nn.Sequential(torch.nn.Conv2d(1280, 16, 1, bias=False),
                                 torch.nn.BatchNorm2d(16, affine=False)).eval()
    with torch.no_grad():  # statistics and affines like trained ones, so that they and eps matter
        for norm in [m for m in (*backbone.modules(), *mapper.modules()) if isinstance(m, torch.nn.BatchNorm2d)]:
            norm.running_mean.uniform_(-0.5, 0.5)
            norm.running_var.uniform_(0.05, 2.0)
            if norm.affine:
                norm.weight.uniform_(0.5, 1.5)
                norm.bias.uniform_(-0.2, 0.2)
    state = {f"backbone.{key}": value for key, value in backbone.state_dict().items()}
    state |= {f"mapper.{key}": value for key, value in mapper.state_dict().items()}
    path = tmp_path / HUB_FILE
    save_file(state, str(path))  # no metadata, like Stability's file

    image = picture(128, 96)
    pixels = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255).permute(2, 0, 1)[None]
    normalise = torchvision.transforms.Normalize(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
    with torch.no_grad():
        theirs = mapper(backbone(normalise(pixels)))
    ours = load_effnet(path).encode(image)
    assert ours.shape == theirs.shape == (1, 16, 3, 4)
    assert (ours - theirs).abs().max() <= 1e-4 * theirs.abs().max()


# 2. Loading -------------------------------------------------------------------------------------------


def test_a_saved_encoder_loads_back_exactly(tmp_path):
    path = build_tiny_effnet(tmp_path, seed=5)
    saved = load_file(path)
    model = load_effnet(path, "cpu", torch.float32)
    for key, value in model.state_dict().items():
        assert torch.equal(value, saved[key]), key
    assert model.config == TINY
    # A different seed is a different file: the round trip is not a constant.
    other = load_file(build_tiny_effnet(tmp_path / "other", seed=6))
    assert not torch.equal(other["mapper.0.weight"], saved["mapper.0.weight"])


def test_the_full_size_file_has_no_metadata_and_loads_as_v2_s(tmp_path):
    path = build_full_effnet(tmp_path)
    assert 80e6 < path.stat().st_size < 84e6  # the published file is about 82 MB (fp32)
    model = load_effnet(path, "cpu", torch.bfloat16)
    assert model.config == V2_S and model.dtype == torch.bfloat16
    assert model.encode(picture(64, 64)).shape == (1, 16, 2, 2)


def test_a_missing_file_names_it_and_how_to_get_one(tmp_path):
    with pytest.raises(ModelError) as caught:
        load_effnet(tmp_path / "nowhere" / "effnet.safetensors")
    message = str(caught.value)
    assert "'effnet.safetensors' does not exist" in message and "--effnet" in message
    assert str(tmp_path) not in message and "\n" not in message


def test_a_corrupt_file_is_one_line(tmp_path):
    bad = tmp_path / "effnet.safetensors"
    bad.write_bytes(b"\x00\x01not safetensors at all" * 10)
    with pytest.raises(ModelError) as caught:
        load_effnet(bad)
    message = str(caught.value)
    assert "is not a readable safetensors file" in message and "\n" not in message and str(tmp_path) not in message


def test_wrong_keys_are_named(tmp_path, tiny_effnet):
    tensors = load_file(tiny_effnet)
    tensors["encoder.mapper.0.weight"] = tensors.pop("mapper.0.weight")
    del tensors["backbone.0.0.weight"]
    path = tmp_path / "renamed.safetensors"
    save_file(tensors, str(path), metadata={"effnet_config": TINY.to_json()})
    with pytest.raises(ModelError) as caught:
        load_effnet(path)
    message = str(caught.value)
    assert "missing backbone.0.0.weight, mapper.0.weight" in message
    assert "unexpected encoder.mapper.0.weight" in message


def test_a_foreign_file_lists_a_few_keys_not_all(tmp_path):
    path = tmp_path / "unet.safetensors"
    save_file({f"down.{i}.weight": torch.zeros(2) for i in range(10)}, str(path))
    with pytest.raises(ModelError) as caught:
        load_effnet(path)
    message = str(caught.value)
    assert "unexpected down.0.weight, down.1.weight, down.2.weight and 7 more" in message
    assert message.count("backbone.") <= 3


def test_a_wrong_shape_is_named(tmp_path, tiny_effnet):
    tensors = load_file(tiny_effnet)
    tensors["mapper.0.weight"] = torch.zeros(4, TINY.head, 1, 1)
    path = tmp_path / "narrow.safetensors"
    save_file(tensors, str(path), metadata={"effnet_config": TINY.to_json()})
    with pytest.raises(ModelError, match=r"mapper\.0\.weight is \(4, 32, 1, 1\), expected \(16, 32, 1, 1\)"):
        load_effnet(path)


def test_offline_without_a_path_says_how_to_get_the_file(empty_hub_cache):
    with pytest.raises(ModelError) as caught:
        load_effnet(None)
    message = str(caught.value)
    assert f"{HUB_FILE} of {HUB_REPO}" in message and "offline" in message
    assert f"huggingface-cli download {HUB_REPO} {HUB_FILE}" in message and "--effnet PATH" in message


def test_without_a_path_the_hub_cache_is_used(empty_hub_cache, into_hub_cache, tmp_path, tiny_effnet):
    folder = tmp_path / "snapshot-files"
    folder.mkdir()
    (folder / HUB_FILE).write_bytes(tiny_effnet.read_bytes())
    into_hub_cache(empty_hub_cache, HUB_REPO, folder, "c" * 40)
    model = load_effnet(None)
    assert torch.equal(model.state_dict()["mapper.0.weight"], load_file(tiny_effnet)["mapper.0.weight"])


# 3. Engine.encode_image -----------------------------------------------------------------------------


@pytest.mark.parametrize("size", [(256, 256), (320, 448), (1000, 1000), (1024, 1536)])
def test_encode_image_has_the_priors_latent_shape(engine, size):
    width, height = size
    latent = engine.encode_image(picture(width, height), width, height)
    prior = engine.prior_pipe(prompt="1girl", width=width, height=height, num_inference_steps=1,
                              guidance_scale=1.0, output_type="pt").image_embeddings
    assert latent.shape == prior.shape
    assert latent.dtype == torch.float32 and latent.device.type == "cpu"
    assert latent.shape[-2:] == (math.ceil(height / 42.67), math.ceil(width / 42.67))


def test_encode_image_is_deterministic_and_follows_the_image(engine):
    first = engine.encode_image(picture(256, 320, seed=1), 256, 320)
    assert torch.equal(first, engine.encode_image(picture(256, 320, seed=1), 256, 320))
    other = engine.encode_image(picture(256, 320, seed=2), 256, 320)
    assert (first - other).abs().mean() > 0.05 * first.abs().mean()


def test_the_engine_uses_the_pairs_own_encoder_or_the_one_given(tiny_source, tiny_pair, tiny_effnet, engine):
    own = engine.encode_image(picture(256, 256), 256, 256)
    expected = load_effnet(tiny_pair[0].parent / HUB_FILE).encode(picture(256, 256).resize((192, 192),
                                                                                          Image.BICUBIC))
    assert torch.equal(own, expected)
    given = Engine(tiny_source, mode="fp32", device="cpu", effnet=str(tiny_effnet))
    latent = given.encode_image(picture(256, 256), 256, 256)
    assert torch.equal(latent, load_effnet(tiny_effnet).encode(picture(256, 256).resize((192, 192), Image.BICUBIC)))
    assert not torch.equal(latent, own)  # another file, other weights
    given.unload()


def test_the_encoder_follows_the_mode_and_is_freed_on_unload(tiny_source):
    engine = Engine(tiny_source, mode="bf16", device="cpu")
    latent = engine.encode_image(picture(256, 256), 256, 256)
    assert engine.effnet.dtype == torch.bfloat16 and latent.dtype == torch.float32
    engine.unload()
    assert engine.effnet is None


def test_a_bad_encoder_file_fails_encode_image_with_one_line(tiny_source, tmp_path):
    bad = tmp_path / "effnet_encoder.safetensors"
    bad.write_text("not weights")
    other = Engine(tiny_source, mode="fp32", device="cpu", effnet=str(bad))
    with pytest.raises(ModelError) as caught:
        other.encode_image(picture(256, 256), 256, 256)
    assert "'effnet_encoder.safetensors' is not a readable safetensors file" in str(caught.value)
    assert str(tmp_path) not in str(caught.value)
    assert other.loaded and other.effnet is None  # the model stays usable; the next try reads the file again


# 4. On a GPU: where the encoder lives ----------------------------------------------------------------

HAS_CUDA = torch.cuda.is_available()


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA or ROCm GPU")
@pytest.mark.parametrize("mode, home", [("bf16", "cuda"), ("offload-bf16", "cpu")])
def test_on_a_gpu_the_encoder_runs_there_and_lives_where_the_mode_says(tiny_source, mode, home):
    engine = Engine(tiny_source, mode=mode)
    engine.load()
    ran_on = []
    engine.load_effnet().mapper.register_forward_pre_hook(lambda module, args: ran_on.append(args[0].device.type))
    latent = engine.encode_image(picture(256, 256), 256, 256)
    assert ran_on == ["cuda"]  # encoded on the device in every mode
    assert engine.effnet.device.type == home  # and kept there between uses only when the models are
    assert engine.effnet.dtype == torch.bfloat16 and latent.device.type == "cpu"
    fp32 = load_effnet(engine.folders.prior.parent / HUB_FILE).encode(picture(256, 256).resize((192, 192),
                                                                                               Image.BICUBIC))
    assert (latent - fp32).abs().mean() < 0.05 * fp32.abs().mean()  # bf16 on the GPU, fp32 on the CPU
    engine.unload()
    assert engine.effnet is None


def test_an_encoder_of_another_latent_width_is_refused(tiny_source, tmp_path):
    from sote_ui.engine.effnet import save_effnet

    path = save_effnet(EfficientNetEncoder(dataclasses.replace(TINY, latent_channels=8)), tmp_path / "eight.safetensors")
    other = Engine(tiny_source, mode="fp32", device="cpu", effnet=str(path))
    with pytest.raises(ModelError, match="gives 8-channel latents; this prior samples 16"):
        other.encode_image(picture(256, 256), 256, 256)
    assert other.effnet is None
