"""The user's folder, the one way files are written (atomically) in the whole app, and file hashes
remembered per size and modification time.

``SOTE_STUDIO_HOME`` (default ``~/.sote-studio``) holds presets, wildcards and
the prompt history; it is read when asked for, never at import, so a test or a
server can point it elsewhere at any time.

Example::

    atomic_write(user_home() / "presets" / "mine.json", b"{}")          # never replaces a file
    atomic_write(path, lambda handle: handle.write(b"..."), overwrite=True)
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import BinaryIO, Callable

from .errors import InputError

TMP_SUFFIX = ".tmp"  # temporary files are ``.NAME.<random>.tmp`` beside their target


def user_home() -> Path:
    """The user's Sote Studio folder: ``$SOTE_STUDIO_HOME``, else ``~/.sote-studio`` (not created here)."""
    return Path(os.environ.get("SOTE_STUDIO_HOME") or Path.home() / ".sote-studio").expanduser()


def atomic_write(path: Path, data: bytes | Callable[[BinaryIO], None], *, overwrite: bool = False) -> Path:
    """Write ``data`` (bytes, or a function that writes to the open file) to ``path`` through a temporary file.

    The temporary file sits in the same folder and is synced before it takes
    the name, so a crash or a full disk mid-write leaves any old file intact
    and no partial file behind (an ``OSError`` still reaches the caller).
    Without ``overwrite`` an existing file is never replaced (the final link
    fails instead, with an :class:`InputError`).
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TMP_SUFFIX)
    try:
        with os.fdopen(fd, "wb") as handle:
            if callable(data):
                data(handle)
            else:
                handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        if overwrite:
            os.replace(tmp, path)
        else:
            publish_new(Path(tmp), path, f"{path.name} exists already; nothing was overwritten")
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def publish_new(source: Path, target: Path, taken: str) -> None:
    """Move ``source`` to ``target`` without ever replacing a file there (``taken`` is the error's line).

    A hard link claims the name atomically; on a file system without hard links
    an existence check and a rename stand in for it.
    """
    try:
        os.link(source, target)  # fails if the name is taken, even by a file created a moment ago
    except FileExistsError:
        raise InputError(taken) from None
    except OSError:
        if target.exists():
            raise InputError(taken) from None
        os.replace(source, target)
        return
    os.unlink(source)


_HASHED: dict[tuple[str, str, int, int], str] = {}  # (kind, path, size, mtime) -> hex digest


def remembered_hash(path: str | Path, kind: str, compute: Callable[[Path], str]) -> str:
    """``compute(path)``, worked out again only when the file's size or modification time changed.

    ``kind`` names the hash (one file may have several). A missing file is a one-line :class:`InputError`.
    """
    path = Path(path).expanduser()
    try:
        stat = path.stat()
    except OSError:
        raise InputError(f"{path.name[:80]!r} does not exist or can't be read") from None
    key = (kind, str(path), stat.st_size, stat.st_mtime_ns)
    if key not in _HASHED:
        _HASHED[key] = compute(path)
    return _HASHED[key]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file's bytes (read in blocks), remembered per path, size and modification time."""
    return remembered_hash(path, "sha256", _sha256)
