"""The stage-C latent kept beside each saved PNG: a safetensors file in the folder's ``.latents``, found by the
PNG's name, bounded by count and bytes (oldest dropped)."""

from __future__ import annotations

import json
import os
import struct

import pytest

from sote_ui.core.errors import InputError
from sote_ui.core.outputs import LatentRecord, latent_path, load_latent, prune_latents, save_latent


def record(seed: int = 0, floats: int = 8) -> LatentRecord:
    data = struct.pack(f"<{floats}f", *(seed + i / 4 for i in range(floats)))
    return LatentRecord({"latents": ("F32", (1, 2, 2, floats // 4), data), "generator": ("U8", (3,), b"\x01\x02\x03")},
                        {"request": json.dumps({"seed": seed}), "parameters": f"seed {seed}"})


def test_a_png_finds_its_latent_and_the_file_is_safetensors(tmp_path):
    png = tmp_path / "sote-20260101-000000-42.png"
    path = save_latent(png, record(42))
    assert path == latent_path(png) == tmp_path / ".latents" / "sote-20260101-000000-42.safetensors"
    raw = path.read_bytes()
    size = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + size])
    assert header["latents"]["dtype"] == "F32" and header["latents"]["shape"] == [1, 2, 2, 2]
    begin, end = header["latents"]["data_offsets"]
    assert struct.unpack("<8f", raw[8 + size + begin:8 + size + end]) == tuple(42 + i / 4 for i in range(8))
    assert header["__metadata__"]["parameters"] == "seed 42"
    assert load_latent(png) == record(42)
    # A copy of the PNG elsewhere (an upload) finds it by name in the folder it was saved to.
    assert load_latent(tmp_path / "elsewhere" / png.name, folder=tmp_path) == record(42)


def test_a_png_without_a_latent_and_a_damaged_one(tmp_path):
    assert load_latent(tmp_path / "sote-1.png") is None
    png = tmp_path / "sote-2.png"
    save_latent(png, record(2))
    latent_path(png).write_bytes(b"\xff" * 12)
    with pytest.raises(InputError, match="^the stored composition of sote-2.png is damaged$"):
        load_latent(png)


def test_the_folder_keeps_the_newest_by_count_and_by_bytes(tmp_path):
    pngs = [tmp_path / f"sote-{i}.png" for i in range(6)]
    for i, png in enumerate(pngs):
        save_latent(png, record(i), max_count=4)
        os.utime(latent_path(png), (1_700_000_000 + i, 1_700_000_000 + i))
    prune_latents(tmp_path, max_count=4)
    kept = sorted(p.name for p in (tmp_path / ".latents").iterdir())
    assert kept == [f"sote-{i}.safetensors" for i in (2, 3, 4, 5)]
    one = latent_path(pngs[5]).stat().st_size
    prune_latents(tmp_path, max_bytes=2 * one)
    assert sorted(p.name for p in (tmp_path / ".latents").iterdir()) == ["sote-4.safetensors", "sote-5.safetensors"]
    assert load_latent(pngs[0]) is None and load_latent(pngs[5]) == record(5)


def test_names_that_leave_the_folder_are_refused(tmp_path):
    with pytest.raises(InputError):
        load_latent(tmp_path / "..png")
