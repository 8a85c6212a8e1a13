"""Which pair to load, fetching it (also from a Hugging Face cache, offline) and loading it."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from support import SMALL

from sote_ui.core.errors import ModelError
from sote_ui.core.request import build_request
from sote_ui.engine import Engine, loading
from sote_ui.engine.loading import Folders, check_folder, component_sizes, fetch, load_components
from sote_ui.engine.models import ModelSource, default_source, known_models, resolve_source

SOTE_PRIOR = "Disty0/sotediffusion-wuerstchen3"
SOTE_DECODER = "Disty0/sotediffusion-wuerstchen3-alpha1-decoder"


@pytest.fixture
def copy_pair(tiny_pair, tmp_path):
    """A private copy of the tiny pair (prior, decoder) that a test may break."""
    prior, decoder = tiny_pair
    root = tmp_path / "copy"
    shutil.copytree(prior, root / "prior")
    shutil.copytree(decoder, root / "decoder")
    return root / "prior", root / "decoder"


# --- resolve_source -------------------------------------------------------------------


def test_explicit_prior_and_decoder_folders(tiny_pair):
    prior, decoder = tiny_pair
    source = resolve_source(prior=str(prior), decoder=str(decoder))
    assert source == ModelSource(str(prior.resolve()), str(decoder.resolve()))
    assert source.label == f"{prior.resolve()} + {decoder.resolve()}"


def test_a_prior_folder_finds_its_decoder_through_the_card(tiny_pair):
    prior, decoder = tiny_pair
    assert "decoder:" in (prior / "README.md").read_text()
    for ref in ({"model": str(prior)}, {"prior": str(prior)}):
        source = resolve_source(**ref)
        assert (source.prior, source.decoder) == (str(prior.resolve()), str(decoder.resolve()))
    source = resolve_source(model=str(decoder))  # and the decoder's card names its prior
    assert (source.prior, source.decoder) == (str(prior.resolve()), str(decoder.resolve()))


def test_a_card_may_name_its_partner_by_a_sibling_folder_name(copy_pair):
    prior, decoder = copy_pair
    (prior / "README.md").write_text("---\nlicense: other\ndecoder:\n- decoder\n---\n# prior\n")
    source = resolve_source(model=str(prior))
    assert source.decoder == str(decoder.resolve()) and source.prior == str(prior.resolve())


def test_a_card_without_partner_is_an_error(copy_pair):
    prior, _ = copy_pair
    (prior / "README.md").write_text("---\nlicense: other\n---\n# no partner\n")
    with pytest.raises(ModelError, match="names no partner"):
        resolve_source(model=str(prior))
    (prior / "README.md").unlink()
    with pytest.raises(ModelError, match="names no partner"):
        resolve_source(model=str(prior))


def test_known_names_and_ids():
    table = known_models()
    assert table["default"] == "sotediffusion-wuerstchen3"
    default = resolve_source()
    assert (default.prior, default.decoder) == (SOTE_PRIOR, SOTE_DECODER) and default == default_source()
    assert resolve_source(model="sotediffusion-wuerstchen3") == default
    assert resolve_source(model=SOTE_PRIOR) == default  # a known prior id: its first pair
    later = resolve_source(model="Disty0/sotediffusion-wuerstchen3-decoder")
    assert (later.prior, later.decoder) == (SOTE_PRIOR, "Disty0/sotediffusion-wuerstchen3-decoder")
    cascade = resolve_source(model="stable-cascade")
    assert cascade.variant == "bf16" and cascade.prior == "stabilityai/stable-cascade-prior"
    # explicit Hub ids for both halves are taken as they are
    both = resolve_source(prior="someone/prior", decoder="someone/decoder")
    assert (both.prior, both.decoder) == ("someone/prior", "someone/decoder")


@pytest.mark.parametrize("ref", ["/no/such/folder", "./missing-model", "~/definitely-missing-sote-model",
                                 "not a hub id", "a/b/c"])
def test_missing_folders_are_model_errors(ref):
    with pytest.raises(ModelError, match="does not exist") as info:
        resolve_source(model=ref)
    assert "\n" not in str(info.value)
    with pytest.raises(ModelError, match="does not exist"):
        resolve_source(prior=ref, decoder=ref)


def test_a_file_is_not_a_model_folder(tiny_pair):
    prior, _ = tiny_pair
    with pytest.raises(ModelError, match="is a file"):
        resolve_source(model=str(prior / "model_index.json"))


def test_an_unknown_hub_id_offline_with_an_empty_cache(empty_hub_cache):
    with pytest.raises(ModelError, match="not in the local cache") as info:
        resolve_source(model="someone/unknown-model")
    assert "\n" not in str(info.value)


# --- fetch and check_folder -----------------------------------------------------------


def test_fetch_local_folders(tiny_source, tiny_pair):
    folders = fetch(tiny_source)
    assert (folders.prior, folders.decoder) == tiny_pair


@pytest.mark.parametrize("side,remove,missing", [
    ("prior", "prior/config.json", "prior/config.json"),
    ("prior", "text_encoder/config.json", "text_encoder/config.json"),
    ("prior", "tokenizer/vocab.json", "tokenizer/vocab.json"),
    ("prior", "scheduler/scheduler_config.json", "scheduler/scheduler_config.json"),
    ("prior", "prior/diffusion_pytorch_model.safetensors", "no .safetensors weights in prior/"),
    ("prior", "text_encoder/model.safetensors", "no .safetensors weights in text_encoder/"),
    ("decoder", "vqgan", "vqgan/config.json"),
    ("decoder", "decoder/diffusion_pytorch_model.safetensors", "no .safetensors weights in decoder/"),
])
def test_an_incomplete_folder_names_what_is_missing(copy_pair, side, remove, missing):
    prior, decoder = copy_pair
    target = (prior if side == "prior" else decoder) / remove
    assert target.exists()
    shutil.rmtree(target) if target.is_dir() else target.unlink()
    with pytest.raises(ModelError) as info:
        fetch(ModelSource(str(prior), str(decoder)))
    message = str(info.value)
    assert missing in message and side in message and "incomplete" in message
    assert "\n" not in message


def test_check_folder_of_a_missing_folder(tmp_path):
    with pytest.raises(ModelError, match="does not exist"):
        check_folder(tmp_path / "nothing", loading.PRIOR_PARTS, "prior")


def test_a_hub_id_offline_with_an_empty_cache(empty_hub_cache):
    with pytest.raises(ModelError, match="not in the local cache") as info:
        fetch(default_source())
    assert SOTE_PRIOR in str(info.value) and "\n" not in str(info.value)


def test_the_default_model_from_a_hugging_face_cache_offline(empty_hub_cache, into_hub_cache, tiny_pair):
    """The real download path, with the tiny pair laid out as huggingface_hub caches the published repos."""
    prior, decoder = tiny_pair
    prior_snapshot = into_hub_cache(empty_hub_cache, SOTE_PRIOR, prior, "a" * 40)
    decoder_snapshot = into_hub_cache(empty_hub_cache, SOTE_DECODER, decoder, "b" * 40)
    folders = fetch(resolve_source())
    assert folders.prior.resolve() == prior_snapshot.resolve()
    assert folders.decoder.resolve() == decoder_snapshot.resolve()

    engine = Engine(mode="fp32", device="cpu")  # the default model
    assert engine.source == default_source()
    result = engine.generate(build_request({**SMALL, "prior_steps": 2, "seed": 3}))
    image = result.images[0]
    assert image.image.size == (256, 256)
    assert np.asarray(image.image).std() > 0
    assert f"Model: {SOTE_PRIOR}" in image.parameters and f"Decoder: {SOTE_DECODER}" in image.parameters
    assert engine.folders.prior.resolve() == prior_snapshot.resolve()


def test_an_incomplete_cached_snapshot_is_reported(empty_hub_cache, into_hub_cache, tiny_pair):
    prior, decoder = tiny_pair
    into_hub_cache(empty_hub_cache, SOTE_PRIOR, prior, "c" * 40)
    snapshot = into_hub_cache(empty_hub_cache, SOTE_DECODER, decoder, "d" * 40)
    shutil.rmtree(snapshot / "vqgan")
    with pytest.raises(ModelError, match="vqgan/config.json"):
        fetch(resolve_source())


# --- sizes and loading ----------------------------------------------------------------


def test_component_sizes_match_the_loaded_modules(tiny_source):
    folders = fetch(tiny_source)
    sizes = component_sizes(folders)
    parts = load_components(folders, torch.float32)
    for name in ("text_encoder", "prior", "decoder", "vqgan"):
        count = getattr(sizes, name)
        assert count > 0
        assert count == sum(t.numel() for t in getattr(parts, name).state_dict().values()), name
    assert sizes.total == sizes.text_encoder + sizes.prior + sizes.decoder + sizes.vqgan


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_load_components_in_a_dtype(tiny_source, dtype):
    parts = load_components(fetch(tiny_source), dtype)
    for module in (parts.text_encoder, parts.prior, parts.decoder, parts.vqgan):
        assert {p.dtype for p in module.parameters()} == {dtype}
        assert not any(p.requires_grad for p in module.parameters())
        assert not module.training
    assert parts.tokenizer.model_max_length == 77
    assert type(parts.vqgan).__name__ == "PaellaVQModel"


def test_corrupt_weights_are_a_model_error(copy_pair):
    prior, decoder = copy_pair
    weights = prior / "prior" / "diffusion_pytorch_model.safetensors"
    weights.write_bytes(b"this is not a safetensors file")
    folders = Folders(prior, decoder)
    with pytest.raises(ModelError, match="diffusion_pytorch_model.safetensors") as info:
        component_sizes(folders)
    assert "\n" not in str(info.value)
    with pytest.raises(ModelError, match="loading the model failed"):
        load_components(folders, torch.float32)
    engine = Engine(ModelSource(str(prior), str(decoder)), mode="fp32", device="cpu")
    with pytest.raises(ModelError, match="diffusion_pytorch_model.safetensors"):
        engine.load()
    assert engine.state == "error" and not engine.loaded and "safetensors" in engine.error


def test_known_ids_given_as_prior_and_decoder_keep_their_variant():
    from sote_ui.engine.models import resolve_source

    source = resolve_source(prior="stabilityai/stable-cascade-prior", decoder="stabilityai/stable-cascade")
    assert source.variant == "bf16"
    assert resolve_source(prior="Disty0/sotediffusion-wuerstchen3",
                          decoder="Disty0/sotediffusion-wuerstchen3-decoder").variant is None


def test_download_patterns_take_single_and_sharded_variant_files_only():
    from fnmatch import fnmatch

    from sote_ui.engine.loading import PRIOR_PARTS, download_patterns

    patterns = download_patterns(PRIOR_PARTS, "bf16")

    def taken(name):
        return any(fnmatch(name, p) for p in patterns)

    assert taken("prior/diffusion_pytorch_model.bf16.safetensors")
    assert taken("prior/diffusion_pytorch_model.bf16-00001-of-00002.safetensors")
    assert taken("prior/diffusion_pytorch_model.safetensors.index.bf16.json")
    assert taken("text_encoder/model.bf16.safetensors")
    assert not taken("prior/diffusion_pytorch_model-00001-of-00003.safetensors")  # the fp32 shards
    assert not taken("prior_lite/diffusion_pytorch_model.bf16.safetensors")
    assert not taken("image_encoder/model.bf16.safetensors")
