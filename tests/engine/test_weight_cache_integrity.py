"""The fp8 weight cache never serves wrong weights: damaged bytes, headers, maps and descriptions, dropped
keys, changed configs and libraries, files truncated under a running process, full disks and leftovers."""

from __future__ import annotations

import errno
import json
import os
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from support import SMALL, pixels

from sote_ui.cli import main
from sote_ui.core.request import build_request
from sote_ui.engine import Engine, weight_cache
from sote_ui.engine.loading import Folders, load_components


@pytest.fixture
def cache(tmp_path, monkeypatch):
    root = tmp_path / "cache"
    monkeypatch.setenv("SOTE_CACHE", str(root))
    return root


def _folder() -> Path:
    return weight_cache.cache_root() / weight_cache.SUBDIR


def _entry_file(component: str) -> Path:
    (entry,) = [e for e in weight_cache.entries() if e.component == component and e.complete]
    return _folder() / f"{entry.stem}.safetensors"


def _header(path: Path) -> tuple[int, dict]:
    with open(path, "rb") as handle:
        (length,) = struct.unpack("<Q", handle.read(8))
        return length, json.loads(handle.read(length))


def _note(parts, kind: str) -> str:
    (note,) = [n for n in parts.notes if f"the {kind}" in n]
    return note


def _same(reference: dict, module) -> bool:
    state = module.state_dict()
    return state.keys() == reference.keys() and all(
        torch.equal(reference[name].float(), state[name].float()) for name in reference)


def _flip_a_weight(path: Path) -> None:
    length, header = _header(path)
    name, entry = max(((n, e) for n, e in header.items() if n != "__metadata__"),
                      key=lambda item: item[1]["data_offsets"][1] - item[1]["data_offsets"][0])
    start, end = entry["data_offsets"]
    with open(path, "r+b") as handle:
        handle.seek(8 + length + (start + end) // 2)
        byte = handle.read(1)[0]
        handle.seek(-1, os.SEEK_CUR)
        handle.write(bytes([byte ^ 0x10]))


def _random_data(path: Path) -> None:
    length, _ = _header(path)
    size = path.stat().st_size
    with open(path, "r+b") as handle:
        handle.seek(8 + length)
        handle.write(np.random.default_rng(0).integers(0, 256, size - 8 - length, dtype=np.uint8).tobytes())


def _swap_a_shape(path: Path) -> None:
    length, header = _header(path)
    name = next(n for n, e in header.items() if n != "__metadata__" and len(e["shape"]) == 2
                and e["shape"][0] != e["shape"][1] and e["dtype"] != "U8")
    header[name]["shape"] = header[name]["shape"][::-1]  # same byte count, same header length
    text = json.dumps(header, separators=(",", ":")).encode()
    assert len(text) <= length
    with open(path, "r+b") as handle:
        handle.seek(8)
        handle.write(text.ljust(length, b" "))


def _edit_description(path: Path, change) -> None:
    description = path.with_suffix(".json")
    description.write_text(change(json.loads(description.read_text(encoding="utf-8"))), encoding="utf-8")


def _trim_map(meta: dict) -> str:
    items = sorted(meta["quantization_map"].items())
    return json.dumps({**meta, "quantization_map": dict(items[: len(items) // 2])})


DAMAGE = {
    "flipped-bits": _flip_a_weight,
    "random-data": _random_data,
    "header-shape": _swap_a_shape,
    "trimmed-map": lambda path: _edit_description(path, _trim_map),
    "junk-map": lambda path: _edit_description(path, lambda meta: json.dumps({**meta, "quantization_map": {"x": [1]}})),
    "description-list": lambda path: _edit_description(path, lambda meta: "[1, 2]"),
}


DESCRIPTIONS = {"junk-map", "description-list"}


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_a_damaged_entry_is_rebuilt_never_loaded(tiny_pair, cache, damage):
    folders = Folders(*tiny_pair)
    reference = load_components(folders, torch.bfloat16, fp8="quanto").prior.state_dict()
    path = _entry_file("prior")
    DAMAGE[damage](path)
    said: list[str] = []
    again = load_components(folders, torch.bfloat16, fp8="quanto", on_status=said.append)
    note = _note(again, "prior")
    assert "fp8 cache built for the prior" in note and "\n" not in note
    if damage in DESCRIPTIONS:  # found unusable before loading starts, by the clean-up
        assert any(m.startswith("fp8 cache: removed 2 unusable or leftover file(s)") for m in said)
    else:  # found unusable while restoring
        assert "was unusable" in note and str(path.parent) not in note.split(";")[-1]  # the reason names no path
    assert _same(reference, again.prior)
    assert all("fp8 cache used" in _note(again, kind) for kind in ("decoder", "text_encoder"))
    third = load_components(folders, torch.bfloat16, fp8="quanto")
    assert "fp8 cache used for the prior" in _note(third, "prior") and _same(reference, third.prior)


def test_an_entry_missing_a_key_is_rebuilt_not_filled_with_empty_memory(tiny_pair, cache, monkeypatch):
    """As after an upgrade that renames a layer: the entry lacks a key the model has."""
    folders = Folders(*tiny_pair)
    real_save = weight_cache.save
    dropped = []

    def lossy_save(key, module, root=None):
        if key.component == "prior":
            full = module.state_dict
            dropped.append(sorted(full())[len(full()) // 2])
            module.state_dict = lambda *a, **k: {n: t for n, t in full(*a, **k).items() if n != dropped[0]}
            try:
                return real_save(key, module, root)
            finally:
                del module.state_dict
        return real_save(key, module, root)

    monkeypatch.setattr(weight_cache, "save", lossy_save)
    reference = load_components(folders, torch.bfloat16, fp8="quanto").prior.state_dict()
    monkeypatch.setattr(weight_cache, "save", real_save)
    assert dropped and dropped[0] in reference
    again = load_components(folders, torch.bfloat16, fp8="quanto")
    note = _note(again, "prior")
    assert "fp8 cache built for the prior" in note and "was unusable" in note and dropped[0] in note
    assert _same(reference, again.prior)


def test_the_key_covers_diffusers_transformers_and_each_components_config(tiny_pair, tmp_path, cache):
    import diffusers
    import transformers

    versions = weight_cache.library_versions()
    assert versions["diffusers"] == diffusers.__version__ and versions["transformers"] == transformers.__version__
    assert {"torch", "optimum-quanto"} <= set(versions)

    copy = tmp_path / "copy"
    shutil.copytree(tiny_pair[0].parent, copy)
    folders = Folders(copy / "prior", copy / "decoder")
    load_components(folders, torch.bfloat16, fp8="quanto")
    config = copy / "prior" / "prior" / "config.json"
    values = json.loads(config.read_text(encoding="utf-8"))
    values["dropout"] = [0.1, 0.1]  # the same shapes, another model
    config.write_text(json.dumps(values), encoding="utf-8")
    again = load_components(folders, torch.bfloat16, fp8="quanto")
    assert "fp8 cache built for the prior" in _note(again, "prior")
    assert "fp8 cache used for the decoder" in _note(again, "decoder")
    assert [e.component for e in weight_cache.entries()].count("prior") == 1  # the old entry went


def _maps_of(folder: Path) -> list[str]:
    with open("/proc/self/maps", encoding="utf-8") as handle:
        return [line for line in handle if str(folder) in line]


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="needs /proc/self/maps")
def test_weights_restored_from_the_cache_survive_the_file_changing_underneath(tiny_source, cache):
    request = build_request({**SMALL, "prior_steps": 2, "seed": 7})
    first = Engine(tiny_source, mode="fp8", device="cpu")
    first.load()
    built = pixels(first.generate(request))
    first.unload()
    engine = Engine(tiny_source, mode="fp8", device="cpu")
    said: list[str] = []
    engine.load(said.append)
    assert "fp8 cache used for the prior" in said[-1]
    before = pixels(engine.generate(request))
    assert _maps_of(_folder()) == []  # nothing of the cache stays mapped
    for path in _folder().glob("*.safetensors"):
        with open(path, "r+b") as handle:
            handle.truncate(path.stat().st_size // 3)
    after = pixels(engine.generate(request))  # a mapped file would kill the process here (SIGBUS)
    assert np.array_equal(before, after) and np.array_equal(built, after)
    engine.unload()


def test_a_full_disk_leaves_no_weights_without_a_description(tiny_pair, cache, monkeypatch):
    real_write = weight_cache.atomic_write

    def full_disk(path, data, **kwargs):
        if Path(path).suffix == ".json":
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(path, data, **kwargs)

    monkeypatch.setattr(weight_cache, "atomic_write", full_disk)
    parts = load_components(Folders(*tiny_pair), torch.bfloat16, fp8="quanto")
    assert all("not written" in note and "No space left on device" in note for note in parts.notes)
    assert sorted(p.name for p in _folder().iterdir() if not p.name.startswith(".")) == []


def _leftovers(folder: Path) -> dict[str, Path]:
    """Files a crash, a full disk or a foreign program could leave in the cache folder."""
    folder.mkdir(parents=True, exist_ok=True)
    files = {
        "weights-alone": folder / "prior-0123456789abcdef0123.safetensors",
        "description-alone": folder / "decoder-0123456789abcdef0123.json",
        "dead-writer": folder / ".prior-aaaaaaaaaaaaaaaaaaaa.safetensors.k3j4h5.tmp",
        "live-writer": folder / ".prior-bbbbbbbbbbbbbbbbbbbb.safetensors.z9y8x7.tmp",
        "junk-weights": folder / "x.safetensors",
        "junk-description": folder / "x.json",
    }
    files["weights-alone"].write_bytes(b"\0" * 4096)
    files["description-alone"].write_text(json.dumps({"component": "decoder", "bytes": 10}), encoding="utf-8")
    files["dead-writer"].write_bytes(b"\0" * 4096)
    files["live-writer"].write_bytes(b"\0" * 4096)
    files["junk-weights"].write_bytes(b"not safetensors")
    files["junk-description"].write_text("[1,2]", encoding="utf-8")
    return files


def test_cache_info_lists_entries_and_reports_junk(tiny_pair, cache, capsys):
    load_components(Folders(*tiny_pair), torch.bfloat16, fp8="quanto")
    _leftovers(_folder())
    assert main(["cache", "info"]) == 0
    out = capsys.readouterr().out
    lines = {line.split()[0]: line for line in out.splitlines() if line.startswith("  ")}
    for entry in weight_cache.entries():
        if entry.complete:
            assert entry.flavour in lines[entry.stem] and "ok" in lines[entry.stem]
    assert "junk" in lines["x"]
    assert "no description" in lines["prior-0123456789abcdef0123"]
    assert "no weights" in lines["decoder-0123456789abcdef0123"]
    assert "3 entries" in out and "removed at the next fp8 start" in out


@pytest.mark.skipif(os.name != "posix", reason="a live writer is told apart by its file lock")
def test_orphans_dead_writers_junk_and_old_versions_are_cleaned(tiny_pair, cache, monkeypatch):
    import fcntl

    folders = Folders(*tiny_pair)
    current = weight_cache.library_versions()
    monkeypatch.setattr(weight_cache, "library_versions", lambda: {**current, "diffusers": "0.30.0"})
    load_components(folders, torch.bfloat16, fp8="quanto-int8")  # entries written by an older install
    monkeypatch.setattr(weight_cache, "library_versions", lambda: current)
    old = {e.stem for e in weight_cache.entries()}
    assert len(old) == 3
    files = _leftovers(_folder())
    with open(files["live-writer"], "r+b") as writer:
        fcntl.flock(writer.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)  # another process still writing
        parts = load_components(folders, torch.bfloat16, fp8="quanto")
        assert all("fp8 cache built" in note for note in parts.notes)
        left = sorted(p.name for p in _folder().iterdir() if p.name != ".lock")
    assert files["live-writer"].name in left
    for name, path in files.items():
        assert (path.name in left) == (name == "live-writer"), name
    kept = [e for e in weight_cache.entries() if e.state != "temporary"]
    assert sorted(e.component for e in kept) == ["decoder", "prior", "text_encoder"]
    assert not {e.stem for e in kept} & old and all(e.complete for e in kept)
    assert len(left) == 2 * 3 + 1
