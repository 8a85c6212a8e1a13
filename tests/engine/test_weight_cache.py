"""The on-disk fp8 weight cache: keys, atomic entries, broken entries never loaded, and fp8 loads through it."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from support import SMALL, pixels

from sote_ui.cli import main
from sote_ui.core.request import build_request
from sote_ui.engine import Engine, weight_cache
from sote_ui.engine.loading import Folders, load_components, weight_bytes
from sote_ui.engine.placement.fp8 import quanto_exclude


@pytest.fixture
def cache(tmp_path, monkeypatch):
    root = tmp_path / "cache"
    monkeypatch.setenv("SOTE_CACHE", str(root))
    return root


def _files(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.safetensors"))


def test_cache_location_follows_sote_cache_then_xdg(tmp_path, monkeypatch):
    monkeypatch.setenv("SOTE_CACHE", str(tmp_path / "mine"))
    assert weight_cache.cache_root() == tmp_path / "mine"
    monkeypatch.delenv("SOTE_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert weight_cache.cache_root() == tmp_path / "xdg" / "sote-studio"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert weight_cache.cache_root() == tmp_path / "home" / ".cache" / "sote-studio"


def test_key_changes_with_the_files_the_exclusions_and_the_dtype(tmp_path):
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(b"x" * 100)
    key = weight_cache.entry_key("prior", [weights], ["clf*"], {"dtype": "bfloat16"})
    assert key == weight_cache.entry_key("prior", [weights], ["clf*"], {"dtype": "bfloat16"})
    assert key.digest != weight_cache.entry_key("prior", [weights], ["clf*", "clip_*"], {"dtype": "bfloat16"}).digest
    assert key.digest != weight_cache.entry_key("prior", [weights], ["clf*"], {"dtype": "float32"}).digest
    assert key.digest != weight_cache.entry_key("decoder", [weights], ["clf*"], {"dtype": "bfloat16"}).digest
    later = time.time() + 10
    os.utime(weights, (later, later))  # the same file, modified
    assert key.digest != weight_cache.entry_key("prior", [weights], ["clf*"], {"dtype": "bfloat16"}).digest
    weights.write_bytes(b"x" * 101)
    assert key.digest != weight_cache.entry_key("prior", [weights], ["clf*"], {"dtype": "bfloat16"}).digest


def test_key_includes_the_quanto_and_torch_versions(tmp_path, monkeypatch):
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(b"x")
    key = weight_cache.entry_key("prior", [weights], [])
    monkeypatch.setattr(weight_cache, "library_versions", lambda: {"torch": "9.9", "optimum-quanto": "0.2.7"})
    assert weight_cache.entry_key("prior", [weights], []).digest != key.digest


def test_fp8_load_builds_the_cache_then_uses_it_with_identical_weights(tiny_pair, cache):
    folders = Folders(*tiny_pair)
    first = load_components(folders, torch.bfloat16, fp8="quanto")
    assert len(first.notes) == 3 and all("fp8 cache built" in note for note in first.notes)
    entries = weight_cache.entries()
    assert sorted(e.component for e in entries) == ["decoder", "prior", "text_encoder"]
    assert all(e.complete and e.bytes > 0 for e in entries)
    assert not [p for p in (cache / "fp8").iterdir() if p.name.endswith(".tmp")]  # nothing half-written left

    second = load_components(folders, torch.bfloat16, fp8="quanto")
    assert all("fp8 cache used" in note for note in second.notes)
    for kind in ("prior", "decoder", "text_encoder"):
        a, b = getattr(first, kind).state_dict(), getattr(second, kind).state_dict()
        assert a.keys() == b.keys()
        for name in a:
            assert torch.equal(a[name].float(), b[name].float()), name
        assert weight_bytes(getattr(second, kind)) == weight_bytes(getattr(first, kind))


def test_fp8_weights_are_smaller_and_skip_the_excluded_layers(tiny_pair, cache):
    from optimum.quanto import QModuleMixin

    folders = Folders(*tiny_pair)
    bf16 = load_components(folders, torch.bfloat16)
    fp8 = load_components(folders, torch.bfloat16, fp8="quanto")
    assert fp8.fp8 == "quanto" and bf16.fp8 is None
    assert weight_bytes(fp8.prior) < 0.7 * weight_bytes(bf16.prior)
    quantized = {name for name, m in fp8.prior.named_modules() if isinstance(m, QModuleMixin)}
    assert quantized and not [n for n in quantized if n.startswith(("embedding", "clf", "clip_"))]
    assert quanto_exclude("text_encoder") == [] and "clf*" in quanto_exclude("prior")


def _entry_file(component: str) -> Path:
    (entry,) = [e for e in weight_cache.entries() if e.component == component]
    return weight_cache.cache_root() / weight_cache.SUBDIR / f"{entry.stem}.safetensors"


@pytest.mark.parametrize("damage", ["truncate", "garbage", "description"])
def test_a_broken_entry_is_ignored_and_rebuilt(tiny_pair, cache, damage):
    folders = Folders(*tiny_pair)
    reference = load_components(folders, torch.bfloat16, fp8="quanto").prior.state_dict()
    path = _entry_file("prior")
    size = path.stat().st_size
    if damage == "truncate":
        with open(path, "r+b") as handle:
            handle.truncate(size // 2)
    elif damage == "garbage":
        path.write_bytes(b"\xff" * size)
    else:
        path.with_suffix(".json").write_text("{not json", encoding="utf-8")
    again = load_components(folders, torch.bfloat16, fp8="quanto")
    (note,) = [n for n in again.notes if "prior" in n]
    assert "fp8 cache built" in note  # rebuilt, not loaded
    assert path.stat().st_size == size
    rebuilt = again.prior.state_dict()
    assert all(torch.equal(reference[k].float(), rebuilt[k].float()) for k in reference)


def test_a_stale_entry_is_replaced_when_the_model_changes(tiny_pair, tmp_path, cache):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(tiny_pair[0].parent, copy)
    folders = Folders(copy / "prior", copy / "decoder")
    load_components(folders, torch.bfloat16, fp8="quanto")
    old = _entry_file("prior")
    weights = _files(copy / "prior" / "prior")[0]
    later = time.time() + 10
    os.utime(weights, (later, later))
    parts = load_components(folders, torch.bfloat16, fp8="quanto")
    assert any("fp8 cache built for the prior" in n for n in parts.notes)
    assert not old.exists()  # the stale entry of the same model is gone
    assert len([e for e in weight_cache.entries() if e.component == "prior"]) == 1


def test_an_unwritable_cache_still_loads(tiny_pair, tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("SOTE_CACHE", str(blocker))
    parts = load_components(Folders(*tiny_pair), torch.bfloat16, fp8="quanto")
    assert parts.fp8 == "quanto" and all("not written" in n for n in parts.notes)


def test_engine_reports_the_cache_and_gives_the_same_image(tiny_source, cache):
    request = build_request({**SMALL, "prior_steps": 2, "seed": 5})
    images, said = [], []
    for _ in range(2):
        engine = Engine(tiny_source, mode="fp8", device="cpu")
        messages: list[str] = []
        engine.load(messages.append)
        said.append(messages[-1])
        images.append(pixels(engine.generate(request)))
        engine.unload()
    assert said[0].startswith("ready:") and "fp8 cache built for the prior" in said[0]
    assert "fp8 cache used for the prior" in said[1]
    assert np.array_equal(images[0], images[1])


def test_cli_cache_info_and_clear(tiny_pair, cache, capsys):
    load_components(Folders(*tiny_pair), torch.bfloat16, fp8="quanto")
    assert main(["cache", "info"]) == 0
    out = capsys.readouterr().out
    assert str(cache) in out and "3 entries" in out and "prior-" in out
    assert main(["cache", "clear"]) == 0
    assert "removed 6 file(s)" in capsys.readouterr().out
    assert weight_cache.entries() == []
    assert main(["cache", "info"]) == 0 and "0 entries" in capsys.readouterr().out
    with pytest.raises(SystemExit) as info:
        main(["cache", "wipe"])
    assert info.value.code == 2 and "invalid choice" in capsys.readouterr().err


def test_layerwise_fp8_is_read_tensor_by_tensor_and_runs(tiny_source, tiny_pair, monkeypatch, small):
    from sote_ui.core import memory

    parts = load_components(Folders(*tiny_pair), torch.bfloat16, fp8="layerwise")
    assert parts.fp8 == "layerwise" and parts.notes == ()
    stored = {p.dtype for p in parts.prior.parameters()}
    assert torch.float8_e4m3fn in stored
    assert parts.prior.clip_txt_pooled_mapper.weight.dtype == torch.bfloat16  # kept out of fp8
    assert {p.dtype for p in parts.text_encoder.parameters()} == {torch.bfloat16}

    monkeypatch.setattr(memory, "fp8_backend", lambda device: "layerwise")  # as on an RTX 30/40 card
    engine = Engine(tiny_source, mode="fp8", device="cpu")
    result = engine.generate(build_request(small))
    assert engine.plan.fp8_backend == "layerwise"
    assert torch.float8_e4m3fn in {p.dtype for p in engine.prior_pipe.prior.parameters()}
    assert np.asarray(result.images[0].image).std() > 0


def test_weights_are_read_into_their_own_memory(tiny_pair, tmp_path):
    from sote_ui.core.errors import ModelError
    from sote_ui.engine.loading import read_tensors

    path = _files(tiny_pair[0] / "prior")[0]
    tensors = list(read_tensors(path))
    pointers = {t.untyped_storage().data_ptr() for _, t in tensors}
    assert len(pointers) == len(tensors)  # no shared mapping keeps the whole file alive
    from safetensors.torch import load_file

    reference = load_file(str(path))
    assert {name for name, _ in tensors} == set(reference)
    assert all(torch.equal(t, reference[name]) for name, t in tensors)
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(ModelError, match="not a readable .safetensors file") as info:
        list(read_tensors(broken))
    assert "\n" not in str(info.value)


def test_cache_files_are_valid_safetensors_with_aligned_tensors(tiny_pair, cache):
    from safetensors.torch import load_file

    load_components(Folders(*tiny_pair), torch.bfloat16, fp8="quanto")
    path = _entry_file("prior")
    plain = load_file(str(path))  # any safetensors reader can open it
    read = weight_cache.read_weights(path)
    assert set(read) == {name for name in plain if not name.startswith("__pad")}
    assert all(t.data_ptr() % weight_cache.ALIGN == 0 for t in read.values() if t.numel())
    assert all(torch.equal(read[name], plain[name]) for name in read)
    filled = [t for t in read.values() if t.numel()]
    assert len({t.untyped_storage().data_ptr() for t in filled}) == len(filled)  # each in its own memory


def test_each_weight_type_keeps_its_own_entry(tiny_pair, cache):
    folders = Folders(*tiny_pair)
    load_components(folders, torch.bfloat16, fp8="quanto")
    load_components(folders, torch.bfloat16, fp8="quanto-int8")
    flavours = sorted(e.flavour for e in weight_cache.entries() if e.component == "prior")
    assert flavours == ["bfloat16, qfloat8", "bfloat16, qint8"]
    again = load_components(folders, torch.bfloat16, fp8="quanto")
    assert all("fp8 cache used" in note for note in again.notes)
