"""The outputs folder as a browsable list: newest first, in pages; delete to a trash folder with undo;
and each browser's latest images, so a reloaded page finds them again.

Pure Python: no torch, no gradio. Every name handed in is checked to be an image directly inside the
outputs folder (after resolving links and ``..``); anything else is refused with a one-line
:class:`InputError` that names no server path.

Example::

    page = list_outputs(Path("outputs"), page=1)            # 24 newest images
    token = move_to_trash(Path("outputs"), page.files[0].name)
    restore_from_trash(Path("outputs"), token)               # back under its name
    empty_trash(Path("outputs"))                              # at start: trash older than 7 days goes
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections import OrderedDict, deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from .errors import InputError
from .files import publish_new
from .outputs import unique_path

TRASH = ".trash"
PAGE_SIZE = 24
TRASH_DAYS = 7
IMAGE_SUFFIXES = (".png",)
_STAMP = "~"  # trash names are "<nanoseconds when trashed>~<original name>"


@dataclass(frozen=True)
class OutputFile:
    """One image of the outputs folder."""

    name: str
    path: Path
    modified: float


@dataclass(frozen=True)
class OutputsPage:
    """One page of the outputs folder, newest first; ``page`` counts from 1."""

    files: list[OutputFile]
    page: int
    pages: int
    total: int


def _images(folder: Path) -> list[OutputFile]:
    found = []
    try:
        entries = list(os.scandir(folder))
    except (FileNotFoundError, NotADirectoryError):
        return []
    for entry in entries:
        # Hidden names are temporary files of a write in progress and the trash; links may lead anywhere.
        if entry.name.startswith(".") or not entry.name.lower().endswith(IMAGE_SUFFIXES):
            continue
        try:
            if entry.is_symlink() or not entry.is_file():
                continue
            found.append(OutputFile(entry.name, Path(entry.path), entry.stat().st_mtime))
        except OSError:  # removed while listed
            continue
    return found


def list_outputs(folder: Path, page: int = 1, per_page: int = PAGE_SIZE) -> OutputsPage:
    """The images of ``folder`` (not its subfolders), newest first, ``per_page`` at a time.

    A page past either end shows the nearest one; a missing folder is an empty list.
    """
    files = sorted(_images(Path(folder)), key=lambda f: (f.modified, f.name), reverse=True)
    pages = max(1, math.ceil(len(files) / per_page))
    page = min(max(1, int(page)), pages)
    return OutputsPage(files[(page - 1) * per_page:page * per_page], page, pages, len(files))


def _plain_name(name: str, what: str) -> str:
    if not isinstance(name, str) or not name or name in (".", "..") or "/" in name or "\\" in name \
            or "\0" in name or name.startswith("."):
        raise InputError(f"{what} must be the name of an image in the outputs folder")
    return name


def output_path(folder: Path, name: str) -> Path:
    """The path of image ``name`` directly in ``folder``; anything else is refused."""
    name = _plain_name(name, "the image")
    root = Path(folder).resolve()
    path = root / name
    if path.is_symlink() or path.resolve().parent != root or not name.lower().endswith(IMAGE_SUFFIXES):
        raise InputError(f"{name[:80]!r} is not an image of the outputs folder")
    if not path.is_file():
        raise InputError(f"{name[:80]!r} is no longer in the outputs folder")
    return path


def _move_new(source: Path, target: Path) -> None:
    """Move ``source`` to ``target`` without ever replacing a file there."""
    publish_new(source, target, f"{target.name[:80]!r} exists already; nothing was moved")


def move_to_trash(folder: Path, name: str, now: float | None = None) -> str:
    """Move image ``name`` into ``folder/.trash``; return the token :func:`restore_from_trash` takes."""
    path = output_path(folder, name)
    trash = path.parent / TRASH
    trash.mkdir(exist_ok=True)
    stamp = int((time.time() if now is None else now) * 1e9)
    while True:
        token = f"{stamp}{_STAMP}{path.name}"
        if not (trash / token).exists():
            break
        stamp += 1
    _move_new(path, trash / token)
    return token


def original_name(token: str) -> str:
    """The name an image had before it went to the trash."""
    stamp, sep, name = token.partition(_STAMP)
    if not sep or not stamp.isdigit() or not name:
        raise InputError("nothing to undo: that image is not in the trash")
    return name


def restore_from_trash(folder: Path, token: str) -> str:
    """Move a trashed image back into ``folder``; return its name (``name-1.png`` if the name was taken)."""
    token = _plain_name(token, "the trashed image")
    name = _plain_name(original_name(token), "the trashed image")
    root = Path(folder).resolve()
    trash = root / TRASH
    source = trash / token
    if source.is_symlink() or source.resolve().parent != trash or not source.is_file():
        raise InputError("nothing to undo: that image is no longer in the trash")
    while True:
        target = unique_path(root / name)
        try:
            _move_new(source, target)
            return target.name
        except InputError:
            continue  # the name was taken between the check and the move


def empty_trash(folder: Path, max_age: float = TRASH_DAYS * 86400, now: float | None = None) -> int:
    """Delete what went to ``folder/.trash`` more than ``max_age`` seconds ago; return how many files."""
    trash = Path(folder) / TRASH
    now = time.time() if now is None else now
    removed = 0
    try:
        entries = list(os.scandir(trash))
    except (FileNotFoundError, NotADirectoryError):
        return 0
    for entry in entries:
        stamp = entry.name.partition(_STAMP)[0]
        try:
            if entry.is_symlink() or not entry.is_file():
                continue
            trashed = int(stamp) / 1e9 if stamp.isdigit() else entry.stat().st_mtime
            if now - trashed > max_age:
                os.unlink(entry.path)
                removed += 1
        except OSError:
            continue
    return removed


class RecentByKey:
    """The latest items per key (a browser's images), bounded three ways.

    At most ``per_key`` items per key, keys dropped ``ttl`` seconds after
    their last addition, and at most ``max_keys`` keys (the oldest go first),
    so what a server keeps for visitors never grows without end. Thread-safe.
    """

    def __init__(self, per_key: int = 48, ttl: float = 86400, max_keys: int = 1000,
                 clock: Callable[[], float] = time.monotonic):
        self.per_key, self.ttl, self.max_keys, self._clock = per_key, ttl, max_keys, clock
        self._items: OrderedDict[str, tuple[float, deque]] = OrderedDict()
        self._lock = threading.Lock()

    def _drop_stale(self, now: float) -> None:
        while self._items:
            key, (stamp, _) = next(iter(self._items.items()))
            if now - stamp <= self.ttl and len(self._items) <= self.max_keys:
                break
            del self._items[key]

    def add(self, key: str, items: list[Any]) -> None:
        """Append ``items`` to ``key``'s list (the oldest beyond ``per_key`` go)."""
        with self._lock:
            now = self._clock()
            _, kept = self._items.pop(key, (now, deque(maxlen=self.per_key)))
            kept.extend(items)
            self._items[key] = (now, kept)
            self._drop_stale(now)

    def get(self, key: str) -> list[Any]:
        """``key``'s items, oldest first (empty once dropped)."""
        with self._lock:
            self._drop_stale(self._clock())
            entry = self._items.get(key)
            return list(entry[1]) if entry else []
