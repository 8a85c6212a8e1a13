"""LoRA on the tiny prior: each format's file maps onto the right layers with exactly ``W + scale * up @ down``,
weight 0 is the plain model, LoRAs add, the caches key on them, fp8 keeps the effect and its cache stays intact,
bad files get one line, and the full-size prior's names map too."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from support import SMALL, pixels

from sote_ui.core.errors import InputError
from sote_ui.core.loras import addnet_hash
from sote_ui.core.request import build_request
from sote_ui.engine import Engine
from sote_ui.engine import lora as lora_module
from sote_ui.engine.lora import Adapters, key_table, read_lora

RANK = 4
# Layers of the tiny prior each synthetic file adapts: attention (q, k, v, out), a ResBlock's channelwise
# Linear, a 1x1 Conv2d, a timestep mapper; and two text-encoder layers.
PRIOR_LAYERS = ("down_blocks.0.2.attention.to_q", "down_blocks.0.2.attention.to_k", "down_blocks.0.2.attention.to_v",
                "up_blocks.1.2.attention.to_out.0", "down_blocks.1.0.channelwise.0", "embedding.1",
                "up_blocks.0.1.mapper_crp", "down_blocks.0.2.kv_mapper.1")
TEXT_LAYERS = ("text_model.encoder.layers.0.self_attn.q_proj", "text_model.encoder.layers.1.mlp.fc2")


@pytest.fixture
def lora_dir(tmp_path, monkeypatch):
    folder = tmp_path / "loras"
    folder.mkdir()
    monkeypatch.setenv("SOTE_LORA_DIR", str(folder))
    return folder


def _layer(model, name):
    return dict(model.named_modules())[name]


def _pair(module, generator, scale=0.5):
    """Random down and up for a Linear or Conv2d, big enough that the change shows."""
    weight = module.weight
    if weight.dim() == 4:
        down = torch.randn(RANK, weight.shape[1], *weight.shape[2:], generator=generator) * scale
        up = torch.randn(weight.shape[0], RANK, 1, 1, generator=generator) * scale
    else:
        down = torch.randn(RANK, weight.shape[1], generator=generator) * scale
        up = torch.randn(weight.shape[0], RANK, generator=generator) * scale
    return down, up


def _kohya_name(module: str) -> str:
    # kohya's StageC names its attention as Stability's: attention.attn.to_q ... attention.attn.out_proj
    module = module.replace(".attention.to_out.0", ".attention.attn.out_proj")
    for x in "qkv":
        module = module.replace(f".attention.to_{x}", f".attention.attn.to_{x}")
    return module.replace(".", "_")


def _onetrainer_omi_name(module: str) -> str:
    module = module.replace(".attention.to_out.0", ".attention.attn.out_proj")
    for i, x in enumerate("qkv"):
        module = module.replace(f".attention.to_{x}", f".attention.attn.in_proj.{i}")
    return module


FORMATS = {
    # format: (prior key of a module, text-encoder key, down suffix, up suffix, writes alpha)
    "kohya": (lambda m: "lora_unet_" + _kohya_name(m), lambda m: "lora_te_" + m.replace(".", "_"),
              ".lora_down.weight", ".lora_up.weight", True),
    "onetrainer": (lambda m: "lora_prior_unet_" + m.replace(".", "_"), lambda m: "lora_prior_te_" + m.replace(".", "_"),
                   ".lora_down.weight", ".lora_up.weight", True),
    "onetrainer-omi": (lambda m: "unet." + _onetrainer_omi_name(m), lambda m: "clip_g." + m,
                       ".lora_down.weight", ".lora_up.weight", True),
    "diffusers": (lambda m: "prior." + m, lambda m: "text_encoder." + m, ".lora_A.weight", ".lora_B.weight", False),
}


def write_lora(path: Path, engine, fmt: str, seed: int = 0, alpha: float = 2.0, text=True) -> dict:
    """A file in ``fmt`` for the tiny pair; returns {(part, module): (down, up, scale)}."""
    prior_key, text_key, down_suffix, up_suffix, has_alpha = FORMATS[fmt]
    generator = torch.Generator().manual_seed(seed)
    tensors, expected = {}, {}
    targets = [("prior", m, prior_key(m)) for m in PRIOR_LAYERS]
    if text:
        targets += [("text_encoder", m, text_key(m)) for m in TEXT_LAYERS]
    models = {"prior": engine.prior_pipe.prior, "text_encoder": engine.prior_pipe.text_encoder}
    for part, module, key in targets:
        down, up = _pair(_layer(models[part], module), generator)
        tensors[key + down_suffix] = down.contiguous()
        tensors[key + up_suffix] = up.contiguous()
        if has_alpha:
            tensors[key + ".alpha"] = torch.tensor(alpha)
        expected[(part, module)] = (down, up, (alpha if has_alpha else RANK) / RANK)
    save_file(tensors, str(path))
    return expected


def _effective_weight(module) -> torch.Tensor:
    """The weight a Linear or 1x1 Conv2d computes with, hooks included, read off its output for unit inputs."""
    with torch.no_grad():
        if isinstance(module, torch.nn.Conv2d):
            eye = torch.eye(module.in_channels).view(module.in_channels, module.in_channels, 1, 1)
            out = module(eye)[:, :, 0, 0]
            bias = module.bias if module.bias is not None else 0
            return (out - bias).T.reshape(module.weight.shape)
        eye = torch.eye(module.in_features)
        bias = module.bias if module.bias is not None else 0
        return (module(eye) - bias).T


def _models(engine):
    return {"prior": engine.prior_pipe.prior, "text_encoder": engine.prior_pipe.text_encoder}


# 1. Every format maps onto the right layers, exactly --------------------------------------------------------


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_each_format_adds_scale_up_down_to_its_layers(engine, lora_dir, fmt):
    path = lora_dir / f"{fmt}.safetensors"
    expected = write_lora(path, engine, fmt)
    models = _models(engine)
    lora = read_lora(path, models["prior"], models["text_encoder"])
    assert {(layer.part, layer.module) for layer in lora.layers} == set(expected)
    hooks = Adapters()
    weight = 0.7
    try:
        hooks.use(models["prior"], models["text_encoder"], [(lora, weight, 0.3)])
        for (part, name), (down, up, scale) in expected.items():
            module = _layer(models[part], name)
            factor = weight if part == "prior" else 0.3
            delta = (up.flatten(1) @ down.flatten(1)).view(module.weight.shape) * scale * factor
            np.testing.assert_allclose(_effective_weight(module).numpy(), (module.weight + delta).detach().numpy(),
                                       rtol=1e-4, atol=1e-5, err_msg=f"{fmt}: {name}")
    finally:
        hooks.clear()
    for part, name in expected:  # hooks gone: the plain weight again, never written
        module = _layer(models[part], name)
        np.testing.assert_allclose(_effective_weight(module).numpy(), module.weight.detach().numpy(), rtol=1e-5,
                                   atol=1e-6)


def test_stability_format_splits_the_fused_attention_projection_into_thirds(engine, lora_dir):
    """Stability's training wraps, with module_filters ['.attn'], each attention's out_proj and then its fused
    in_proj (q, k and v stacked), in its module order; the file keeps only that order."""
    prior = engine.prior_pipe.prior
    blocks = ["down_blocks.0.2", "down_blocks.1.2", "up_blocks.0.2", "up_blocks.1.2"]  # Stability's order
    generator = torch.Generator().manual_seed(3)
    tensors, expected = {}, {}
    width = 32
    for i, block in enumerate(blocks):
        out_down, out_up = torch.randn(RANK, width, generator=generator), torch.randn(width, RANK, generator=generator)
        in_down, in_up = torch.randn(RANK, width, generator=generator), torch.randn(3 * width, RANK,
                                                                                      generator=generator)
        tensors[f"weights.{2 * i}.lora_down"], tensors[f"weights.{2 * i}.lora_up"] = out_down, out_up
        tensors[f"weights.{2 * i + 1}.lora_down"], tensors[f"weights.{2 * i + 1}.lora_up"] = in_down, in_up
        expected[f"{block}.attention.to_out.0"] = out_up @ out_down / RANK
        fused = in_up @ in_down / RANK
        for j, x in enumerate("qkv"):
            expected[f"{block}.attention.to_{x}"] = fused[j * width:(j + 1) * width]
    vocab = engine.prior_pipe.text_encoder.get_input_embeddings().weight.shape[0]
    tensors["embeddings.embeddings"] = torch.ones(2, 32)
    tensors["embeddings.indices"] = torch.tensor([5, vocab + 3])  # an existing token, and one the training added
    path = lora_dir / "stability.safetensors"
    save_file(tensors, str(path))
    lora = read_lora(path, prior, engine.prior_pipe.text_encoder)
    assert lora.kind == "stability" and set(lora.embeddings) == {5}
    assert any("1 new token(s)" in note and "not loaded" in note for note in lora.notes)
    hooks = Adapters()
    try:
        hooks.use(prior, engine.prior_pipe.text_encoder, [(lora, 1.0, 1.0)])
        for name, delta in expected.items():
            module = _layer(prior, name)
            np.testing.assert_allclose(_effective_weight(module).numpy(), (module.weight + delta).detach().numpy(),
                                       rtol=1e-4, atol=1e-5, err_msg=name)
        embedding = engine.prior_pipe.text_encoder.get_input_embeddings()
        ids = torch.tensor([[5, 6]])
        with torch.no_grad():
            rows = embedding(ids)
        np.testing.assert_allclose(rows[0, 0].numpy(), (embedding.weight[5] + 1).detach().numpy(), rtol=1e-6)
        np.testing.assert_allclose(rows[0, 1].numpy(), embedding.weight[6].detach().numpy())
    finally:
        hooks.clear()


# 2. Through the engine: weight 0, 1, two LoRAs, the caches --------------------------------------------------


def test_weight_zero_is_the_plain_model_and_weight_one_changes_the_image(engine, lora_dir):
    write_lora(lora_dir / "ink.safetensors", engine, "kohya")
    plain = engine.generate(build_request(SMALL))
    engine.clear_caches()  # weight 0 runs the models again, hooks and all
    zero = engine.generate(build_request({**SMALL, "loras": ["ink:0"]}))
    assert zero.counters.prior_runs == 1 and zero.counters.text_encodes == 1
    assert np.array_equal(pixels(plain), pixels(zero))
    one = engine.generate(build_request({**SMALL, "prompt": SMALL["prompt"] + ", <lora:ink:1>"}))
    assert np.abs(pixels(one).astype(int) - pixels(plain).astype(int)).mean() > 1.0
    # weight 0 is the plain prior: cached under the same key
    assert engine.generate(build_request(SMALL)).counters.prior_cache_hits == 1


def test_two_loras_add(engine, lora_dir):
    write_lora(lora_dir / "a.safetensors", engine, "kohya", seed=1)
    write_lora(lora_dir / "b.safetensors", engine, "diffusers", seed=2)
    models = _models(engine)
    a = read_lora(lora_dir / "a.safetensors", models["prior"], models["text_encoder"])
    b = read_lora(lora_dir / "b.safetensors", models["prior"], models["text_encoder"])
    name = "down_blocks.0.2.attention.to_q"
    module = _layer(models["prior"], name)
    deltas = {}
    hooks = Adapters()
    try:
        for label, active in (("a", [(a, 0.5, 1.0)]), ("b", [(b, -1.5, 1.0)]), ("ab", [(a, 0.5, 1.0), (b, -1.5, 1.0)])):
            hooks.use(models["prior"], models["text_encoder"], active)
            deltas[label] = _effective_weight(module) - module.weight.detach()
    finally:
        hooks.clear()
    np.testing.assert_allclose(deltas["ab"].numpy(), (deltas["a"] + deltas["b"]).numpy(), rtol=1e-4, atol=1e-5)
    assert deltas["a"].abs().max() > 0.01 and deltas["b"].abs().max() > 0.01


def test_the_prior_and_prompt_caches_key_on_the_loras(engine, lora_dir):
    write_lora(lora_dir / "ink.safetensors", engine, "kohya")
    write_lora(lora_dir / "flat.safetensors", engine, "kohya", seed=5, text=False)
    engine.generate(build_request({**SMALL, "loras": ["ink:1"]}))
    before = engine.counters.snapshot()
    engine.generate(build_request({**SMALL, "loras": ["ink:1"]}))
    engine.generate(build_request({**SMALL, "loras": ["ink:0.5"]}))
    engine.generate(build_request({**SMALL, "loras": ["ink:0.5:1"]}))  # the prompt's encoding is ink at 1 again
    engine.generate(build_request({**SMALL, "loras": ["flat:1"]}))  # no text-encoder layers: the plain encoding
    engine.generate(build_request(SMALL))
    spent = engine.counters.since(before)
    assert spent.prior_cache_hits == 1 and spent.prior_runs == 4
    assert spent.text_encodes == 2 and spent.text_cache_hits == 3


def test_parameters_keep_the_tags_and_record_lora_hashes(engine, lora_dir):
    write_lora(lora_dir / "ink.safetensors", engine, "kohya")
    write_lora(lora_dir / "flat.safetensors", engine, "diffusers", seed=4)
    result = engine.generate(build_request({**SMALL, "prompt": "1girl, <lora:ink:0.8>, solo", "loras": ["flat:0.5"]}))
    parameters = result.images[0].parameters
    first = parameters.splitlines()[0]
    assert "<lora:ink:0.8>" in first and first.endswith("<lora:flat:0.5>")
    ink, flat = (addnet_hash(lora_dir / f"{n}.safetensors")[:12] for n in ("ink", "flat"))
    assert f'Lora hashes: "ink: {ink}, flat: {flat}"' in parameters


def test_model_offload_gets_the_same_loras(tiny_source, engine, lora_dir):
    """accelerate's offload hooks wrap the layers the LoRA hooks sit on: the LoRA's effect is the same."""
    import dataclasses

    from sote_ui.core.memory import Mode
    from sote_ui.engine.loading import load_components

    write_lora(lora_dir / "ink.safetensors", engine, "kohya")
    request = build_request({**SMALL, "loras": ["ink:0.7"]})
    expected = pixels(engine.generate(request)).astype(int)
    offloaded = Engine(tiny_source, mode="fp32", device="cpu")
    offloaded.load()
    offloaded.install(load_components(offloaded.folders, torch.float32),
                      dataclasses.replace(offloaded.plan, mode=Mode.OFFLOAD_FP32))
    adapted = pixels(offloaded.generate(request)).astype(int)
    plain = pixels(offloaded.generate(build_request(SMALL))).astype(int)
    # offload alone moves a pixel value here and there (measured: 1e-5 on average); the LoRA moves many
    assert np.abs(adapted - expected).mean() < 0.01
    assert np.abs(adapted - plain).mean() > 1.0


# 3. fp8: the same effect within a tolerance, and the weight cache untouched -----------------------------------


def _prior_output(pipe, embeds, seed=0):
    prior = pipe.prior
    generator = torch.Generator().manual_seed(seed)
    dtype = prior.dtype
    sample = torch.randn(1, 16, 6, 6, generator=generator).to(dtype)
    with torch.no_grad():
        return prior(sample, timestep_ratio=torch.tensor([0.5], dtype=dtype),
                     clip_text_pooled=embeds[1].to(dtype), clip_text=embeds[0].to(dtype),
                     clip_img=torch.zeros(1, 1, 32, dtype=dtype), return_dict=False)[0].float()


def _cache_files(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_fp8_keeps_the_lora_effect_and_its_weight_cache_byte_identical(tiny_source, engine, lora_dir, tmp_path,
                                                                      monkeypatch):
    monkeypatch.setenv("SOTE_CACHE", str(tmp_path / "cache"))
    fp8 = Engine(tiny_source, mode="fp8", device="cpu")
    fp8.load()
    assert fp8.plan.fp8_backend.startswith("quanto")
    write_lora(lora_dir / "ink.safetensors", engine, "kohya", text=False)
    cache_before = _cache_files(tmp_path / "cache")
    assert cache_before
    bf16 = Engine(tiny_source, mode="bf16", device="cpu")
    bf16.load()
    effects = {}
    generator = torch.Generator().manual_seed(0)
    clip_text = torch.randn(1, 4, 32, generator=generator)
    clip_pooled = torch.randn(1, 1, 32, generator=generator)
    for label, eng in (("bf16", bf16), ("fp8", fp8)):
        pipe = eng.prior_pipe
        lora = read_lora(lora_dir / "ink.safetensors", pipe.prior, pipe.text_encoder)
        plain = _prior_output(pipe, (clip_text, clip_pooled))
        hooks = Adapters()
        try:
            hooks.use(pipe.prior, pipe.text_encoder, [(lora, 1.0, 1.0)])
            adapted = _prior_output(pipe, (clip_text, clip_pooled))
        finally:
            hooks.clear()
        effects[label] = adapted - plain
    error = (effects["fp8"] - effects["bf16"]).norm() / effects["bf16"].norm()
    # Measured on the tiny prior (CPU, quanto qint8 weights, bf16 activations): 1.3% from bf16's effect.
    # (bf16 itself is 36% from fp32's here: the random tiny prior amplifies rounding; it is not the LoRA.)
    assert effects["bf16"].norm() > 1.0
    assert error < 0.05, f"fp8 changes the LoRA's effect by {error:.1%}"
    fp8.generate(build_request({**SMALL, "loras": ["ink:1"]}))
    assert _cache_files(tmp_path / "cache") == cache_before
    again = Engine(tiny_source, mode="fp8", device="cpu")
    notes = []
    again.load(on_status=notes.append)
    assert "fp8 cache used for the prior" in notes[-1]
    assert np.array_equal(pixels(again.generate(build_request(SMALL))), pixels(fp8.generate(build_request(SMALL))))


# 4. Bad files: one line each --------------------------------------------------------------------------------


def test_bad_files_get_one_line_each(engine, lora_dir, monkeypatch):
    models = _models(engine)

    def fails(path, *words):
        with pytest.raises(InputError) as caught:
            read_lora(path, models["prior"], models["text_encoder"])
        message = str(caught.value)
        assert "\n" not in message and str(lora_dir) not in message, message
        for word in words:
            assert word in message, message

    save_file({"foo.lora_down.weight": torch.ones(4, 8), "bar.lora_up.weight": torch.ones(8, 4),
               "baz.weight": torch.ones(2)}, str(lora_dir / "nomatch.safetensors"))
    fails(lora_dir / "nomatch.safetensors", "no layer of this model", "bar.lora_up.weight", "baz.weight")
    sdxl = {f"lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_{x}.lora_down.weight": torch.ones(4, 8)
            for x in "qkv"}
    sdxl["lora_te1_text_model_encoder_layers_0_mlp_fc1.lora_down.weight"] = torch.ones(4, 8)
    save_file(sdxl, str(lora_dir / "sdxl.safetensors"))
    fails(lora_dir / "sdxl.safetensors", "another model family", "SDXL")
    (lora_dir / "broken.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all")
    fails(lora_dir / "broken.safetensors", "not a readable safetensors file")
    write_lora(lora_dir / "big.safetensors", engine, "kohya")
    monkeypatch.setattr(lora_module, "MAX_BYTES", 1000)
    fails(lora_dir / "big.safetensors", "GB, over the")
    monkeypatch.undo()
    monkeypatch.setenv("SOTE_LORA_DIR", str(lora_dir))
    save_file({"lora_unet_down_blocks_0_0_channelwise_0.hada_w1_a": torch.ones(4, 8)},
              str(lora_dir / "loha.safetensors"))
    fails(lora_dir / "loha.safetensors", "LoHa")
    save_file({"lora_unet_down_blocks_0_0_channelwise_0.lora_down.weight": torch.ones(4, 64),
               "lora_unet_down_blocks_0_0_channelwise_0.lora_up.weight": torch.ones(128, 4)},
              str(lora_dir / "bigger.safetensors"))
    fails(lora_dir / "bigger.safetensors", "another model size")
    partial = write_lora(lora_dir / "extra.safetensors", engine, "kohya")
    assert partial
    from safetensors.torch import load_file

    tensors = load_file(str(lora_dir / "extra.safetensors"))
    tensors["lora_unet_down_blocks_9_0_channelwise_0.lora_down.weight"] = torch.ones(4, 32)
    save_file(tensors, str(lora_dir / "extra.safetensors"))
    fails(lora_dir / "extra.safetensors", "1 key(s) that fit no layer", "lora_unet_down_blocks_9_0_channelwise_0")


def test_a_lora_removed_after_the_form_was_checked_is_named_by_the_run(engine, lora_dir):
    write_lora(lora_dir / "ink.safetensors", engine, "kohya")
    request = build_request({**SMALL, "prompt": "1girl, <lora:ink:1>"})
    (lora_dir / "ink.safetensors").unlink()  # gone between the form and the run
    with pytest.raises(InputError, match="LoRA 'ink' is not in the loras folder"):
        engine.generate(request)


# 5. The full-size prior's names -------------------------------------------------------------------------------


def test_full_size_key_table_maps_every_layer_of_the_published_prior(tmp_path):
    from sote_ui.engine.builders import full_models

    models = full_models("meta")
    prior, text_encoder = models["prior"], models["text_encoder"]
    table = key_table(prior, text_encoder)
    layers = lora_module.adapted_layers(prior)
    kohya = {key: target for key, target in table.items() if key.startswith("lora_unet_")}
    assert len(kohya) == len(layers) and {t.module for t in kohya.values()} == set(layers)
    # 8 + 24 blocks down and 24 + 8 up, each a ResBlock, a TimestepBlock and an AttnBlock
    attention = [name for name in layers if name.endswith("attention.to_q")]
    assert len(attention) == 64
    assert table["lora_unet_down_blocks_1_23_attention_attn_to_q"].module == "down_blocks.1.23.attention.to_q"
    assert table["lora_unet_up_blocks_0_71_attention_attn_out_proj"].module == "up_blocks.0.71.attention.to_out.0"
    assert table["lora_unet_down_blocks_0_1_mapper_crp"].module == "down_blocks.0.1.mapper_crp"
    assert table["unet.up_blocks.1.5.attention.attn.in_proj.2"].module == "up_blocks.1.5.attention.to_v"
    assert table["lora_prior_unet_up_blocks_1_21_channelwise_4"].module == "up_blocks.1.21.channelwise.4"
    assert table["lora_te_text_model_encoder_layers_31_self_attn_out_proj"] == lora_module.Target(
        "text_encoder", "text_model.encoder.layers.31.self_attn.out_proj")
    # A kohya file with the full prior's names maps onto the meta model (shapes checked, nothing allocated).
    tensors = {}
    for key, shape in (("lora_unet_down_blocks_1_23_attention_attn_to_q", (2048, 2048)),
                       ("lora_unet_clip_txt_mapper", (2048, 1280)),
                       ("lora_te_text_model_encoder_layers_31_mlp_fc1", (5120, 1280))):
        tensors[key + ".lora_down.weight"] = torch.zeros(1, shape[1])
        tensors[key + ".lora_up.weight"] = torch.zeros(shape[0], 1)
        tensors[key + ".alpha"] = torch.tensor(1.0)
    save_file(tensors, str(tmp_path / "full.safetensors"))
    lora = read_lora(tmp_path / "full.safetensors", prior, text_encoder)
    assert sorted(layer.module for layer in lora.layers) == [
        "clip_txt_mapper", "down_blocks.1.23.attention.to_q", "text_model.encoder.layers.31.mlp.fc1"]


# 6. The X/Y grid: LoRA weight on an axis ------------------------------------------------------------------


def test_a_grid_axis_of_lora_weights_runs_a_prior_per_weight_and_weight_zero_is_the_plain_image(engine, lora_dir):
    from sote_ui.service.compare import parse_values, run_grid

    write_lora(lora_dir / "ink.safetensors", engine, "kohya")
    base = build_request({**SMALL, "loras": ["ink:1"]})
    values = parse_values("lora", "0, 0.5, 1", base=base)
    assert [v[0].weight for v in values] == [0.0, 0.5, 1.0]
    grid = run_grid(engine, base, "lora", values, "decoder_cfg", [1.0, 1.5], x_terms=["0", "0.5", "1"])
    assert grid.counters.prior_runs == 3 and grid.counters.decoder_runs == 6
    plain = engine.generate(build_request({**SMALL, "seed": base.seed}))
    assert np.array_equal(pixels(grid.cells[0][0].image), pixels(plain))
    assert not np.array_equal(pixels(grid.cells[0][2].image), pixels(plain))
    assert "<lora:ink:0.5>" in grid.cells[1][1].parameters.splitlines()[0]
    with pytest.raises(InputError, match="name the LoRA"):
        parse_values("lora", "0, 1", base=build_request(SMALL))
    with pytest.raises(InputError, match="tag would win over the axis"):
        parse_values("lora", "ink:0, ink:1", base=build_request({**SMALL, "prompt": "1girl, <lora:ink:1>"}))
