"""File hashes (start images, masks, ControlNets, references, LoRAs) are read once per file version: the
same path is hashed again only when its size or modification time changed."""

from __future__ import annotations

import hashlib
import os

import pytest

from sote_ui.core.errors import InputError
from sote_ui.core.files import file_sha256, remembered_hash


def test_the_sha256_is_the_files_and_follows_a_new_version(tmp_path):
    path = tmp_path / "mask.png"
    path.write_bytes(b"first" * 300_000)  # more than one 1 MiB block
    assert file_sha256(path) == hashlib.sha256(b"first" * 300_000).hexdigest()
    path.write_bytes(b"second version")
    os.utime(path, ns=(1, 1))  # a new mtime, whatever the clock's resolution
    assert file_sha256(str(path)) == hashlib.sha256(b"second version").hexdigest()


def test_an_unchanged_file_is_read_once_per_kind(tmp_path):
    path = tmp_path / "net.safetensors"
    path.write_bytes(b"weights")
    reads = []

    def count(kind):
        def compute(p):
            reads.append(kind)
            return f"{kind}:{p.read_bytes().decode()}"
        return compute

    for _ in range(3):
        assert remembered_hash(path, "a", count("a")) == "a:weights"
        assert remembered_hash(path, "b", count("b")) == "b:weights"
    assert reads == ["a", "b"]


def test_a_missing_file_is_a_one_line_input_error(tmp_path):
    with pytest.raises(InputError, match=r"^'gone.png' does not exist or can't be read$"):
        file_sha256(tmp_path / "gone.png")
