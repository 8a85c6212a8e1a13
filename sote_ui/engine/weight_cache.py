"""An on-disk cache of fp8-quantized weights, so fp8 starts quantize only once.

Each entry is one component (text encoder, prior, decoder) saved with
optimum-quanto's own serialization: its ``state_dict()`` in a safetensors file
(each tensor 64-byte aligned) plus a JSON description holding its
``quantization_map()`` and a content hash. A later start reads the file tensor
by tensor into memory of its own (nothing stays mapped, so a file changed
underneath can't crash the process), checks the hash on the way, and the
loader rebuilds the module from it without quantizing again.

An entry's key covers everything that changes its bytes: the model files
(names, sizes and modification times), every JSON file beside them (the
component's ``config.json``, a shard index), the torch, optimum-quanto,
diffusers and transformers versions, the layers kept out of fp8, the weight
type and the dtype of the layers left unquantized.

An entry is written under a folder lock: the weights through a temporary file
(locked while it is written, then renamed), the description last; if the
description can't be written the weights go too. :func:`load` raises
:class:`CacheError` for an entry that is present but unusable (hash, header,
description or size wrong); the loader then rebuilds it. :func:`prune` removes
what a crash, a full disk or an older install left behind.

Location: ``$SOTE_CACHE`` if set, else ``$XDG_CACHE_HOME/sote-studio`` or
``~/.cache/sote-studio``.

Example::

    key = entry_key("prior", files, exclude=["clf*"], extra={"dtype": "bfloat16"})
    try:
        loaded = load(key)                  # (state_dict, quantization_map, bytes) or None
    except CacheError as exc:
        loaded = None                       # str(exc) says what was wrong; rebuild
    if loaded is None:
        save(key, module)
    python -m sote_ui cache info            # entries, their sizes and state
    python -m sote_ui cache clear
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import struct
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from ..core.files import TMP_SUFFIX, atomic_write

FORMAT = 2
SUBDIR = "fp8"
LOCK_NAME = ".lock"
HASH = "sha256 over the sha256 of the header and of each tensor, in file order"


class CacheError(Exception):
    """An entry that is present but can't be used; the message is a short reason with no path."""


def cache_root() -> Path:
    """The cache folder (not created here)."""
    if os.environ.get("SOTE_CACHE"):
        return Path(os.environ["SOTE_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "sote-studio"


def library_versions() -> dict:
    """The versions of the libraries an entry depends on (part of its key)."""
    from importlib.metadata import PackageNotFoundError, version

    import torch

    found = {"torch": torch.__version__}
    for package in ("optimum-quanto", "diffusers", "transformers"):
        try:
            found[package] = version(package)
        except PackageNotFoundError:  # pragma: no cover - a source checkout on the path
            found[package] = "unknown"
    return found


@dataclass(frozen=True)
class EntryKey:
    component: str  # "prior", "decoder", "text_encoder"
    digest: str  # hex sha256 of everything the entry depends on
    source: str  # the component's folder, to replace older entries of the same model
    flavour: str = ""  # the weight type and dtype: entries of other flavours of the same model are kept

    @property
    def stem(self) -> str:
        return f"{self.component}-{self.digest[:20]}"


def _json_digest(path: Path) -> str:
    # Parsed and re-dumped, so a reformatted config keeps its entry; unparsable ones count byte for byte.
    raw = path.read_bytes()
    try:
        raw = json.dumps(json.loads(raw), sort_keys=True).encode()
    except ValueError:
        pass
    return hashlib.sha256(raw).hexdigest()


def entry_key(component: str, files: list[Path], exclude: list[str], extra: dict | None = None) -> EntryKey:
    """The key of ``component`` built from ``files`` (its weights) with ``exclude`` kept out of fp8.

    The JSON files in the weights' folder (``config.json``, a shard index)
    are part of the key by their content: a changed config that keeps every
    shape still gets a new entry.
    """
    described = []
    for path in sorted(Path(f) for f in files):
        stat = path.stat()
        described.append([path.name, stat.st_size, stat.st_mtime_ns])
    folder = Path(files[0]).parent if files else None
    configs = {p.name: _json_digest(p) for p in sorted(folder.glob("*.json"))} if folder else {}
    payload = {"format": FORMAT, "component": component, "files": described, "configs": configs,
               "exclude": sorted(exclude), "versions": library_versions(), **(extra or {})}
    digest = hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()
    source = str(Path(files[0]).resolve().parent) if files else ""
    flavour = ", ".join(str(value).removeprefix("torch.") for _, value in sorted((extra or {}).items()))
    return EntryKey(component, digest, source, flavour)


def _folder(root: Path | None) -> Path:
    return (root or cache_root()) / SUBDIR


def _paths(key: EntryKey, root: Path | None = None) -> tuple[Path, Path]:
    folder = _folder(root)
    return folder / f"{key.stem}.safetensors", folder / f"{key.stem}.json"


# 1. Locks -----------------------------------------------------------------------------------------


def _try_lock(handle, wait: bool) -> bool:
    """Lock the open file ``handle`` for this process; False if another holds it (never with ``wait``)."""
    try:
        import fcntl
    except ImportError:  # Windows
        import msvcrt

        try:
            handle.seek(0)
            msvcrt.locking(handle.fileno(), msvcrt.LK_LOCK if wait else msvcrt.LK_NBLCK, 1)
            return True
        except OSError:
            return False
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except OSError:
        return False


@contextlib.contextmanager
def _folder_lock(folder: Path, wait: bool) -> Iterator[bool]:
    """Hold the cache folder's lock: writers hold it while they write an entry, the cleaner while it cleans.

    The lock goes with the process, so a writer that died never blocks anyone.
    """
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / LOCK_NAME, "a+b") as handle:
        yield _try_lock(handle, wait)


# 2. Hashing ---------------------------------------------------------------------------------------


class _Digests:
    """The entry's content hash: sha256 of each region (header, then each tensor in file order), combined.

    Large regions are hashed on worker threads (hashlib lets go of the GIL),
    so the caller reads or writes the next tensor meanwhile and several cores
    share the work.
    """

    SMALL = 1 << 20

    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(max_workers=max(1, min(4, (os.cpu_count() or 1) - 1)))
        self._parts: list = []

    def add(self, data) -> None:
        if len(data) < self.SMALL:
            self._parts.append(hashlib.sha256(data).digest())
        else:
            self._parts.append(self._pool.submit(lambda: hashlib.sha256(data).digest()))

    def hexdigest(self) -> str:
        parts = [part.result() if isinstance(part, Future) else part for part in self._parts]
        return hashlib.sha256(b"".join(parts)).hexdigest()

    def __enter__(self) -> _Digests:
        return self

    def __exit__(self, *exc) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


# 3. The weights file ------------------------------------------------------------------------------

ALIGN = 64
_PAD = "__pad"
# safetensors dtype codes and torch dtype names.
SAFETENSORS_DTYPES = {
    "BF16": "bfloat16", "F16": "float16", "F32": "float32", "F64": "float64", "I64": "int64", "I32": "int32",
    "I16": "int16", "I8": "int8", "U8": "uint8", "BOOL": "bool", "F8_E4M3": "float8_e4m3fn", "F8_E5M2": "float8_e5m2",
}
_CODES = {name: code for code, name in SAFETENSORS_DTYPES.items()}
_SIZES = {"BF16": 2, "F16": 2, "F32": 4, "F64": 8, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1,
          "F8_E4M3": 1, "F8_E5M2": 1}


def _layout(handle, size: int) -> tuple[bytes, list[tuple[str, str, list[int], int, int]]]:
    """The file's first bytes (length and header) and its regions ``(name, dtype, shape, start, end)``
    in file order, after checking that they tile the file exactly; CacheError otherwise."""
    prefix = handle.read(8)
    if len(prefix) != 8:
        raise CacheError("the weights file is truncated")
    (length,) = struct.unpack("<Q", prefix)
    if length > size - 8:
        raise CacheError("the weights file is truncated")
    text = handle.read(length)
    try:
        header = json.loads(text)
    except ValueError:
        raise CacheError("the weights file's header is not readable") from None
    if not isinstance(header, dict):
        raise CacheError("the weights file's header is not readable")
    header.pop("__metadata__", None)
    regions = []
    try:
        for name, entry in header.items():
            start, end = (int(v) for v in entry["data_offsets"])
            shape = [int(d) for d in entry["shape"]]
            count = 1
            for dim in shape:
                count *= dim
            if min(shape, default=0) < 0 or end - start != count * _SIZES[entry["dtype"]]:
                raise CacheError(f"the header's shape of {name} doesn't match its bytes")
            regions.append((name, entry["dtype"], shape, start, end))
    except (KeyError, TypeError, ValueError):
        raise CacheError("the weights file's header is not readable") from None
    regions.sort(key=lambda region: (region[3], region[4]))
    offset = 0
    for name, _, _, start, end in regions:
        if start != offset:
            raise CacheError("the weights file's header has gaps or overlaps")
        offset = end
    if 8 + length + offset != size:
        raise CacheError("the weights file is truncated" if 8 + length + offset > size
                         else "the weights file is longer than its header says")
    return prefix + text, regions


def read_weights(path: Path, content: str | None = None) -> dict:
    """The tensors of an entry's weights file, read into memory of their own.

    With ``content`` (the hex hash from the entry's description) the bytes
    are hashed while they are read and a mismatch raises CacheError. Each
    tensor starts on a 64-byte boundary (torch's allocator aligns), as
    torch's int8-weight CPU kernel, which quanto uses, needs.
    """
    import torch

    tensors = {}
    check = _Digests() if content is not None else contextlib.nullcontext()
    with open(path, "rb") as handle, check as digests:
        head, regions = _layout(handle, os.fstat(handle.fileno()).st_size)
        if digests:
            digests.add(head)
        for name, code, shape, start, end in regions:
            raw = torch.empty(end - start, dtype=torch.uint8)
            view = memoryview(raw.numpy())
            if end > start and handle.readinto(view) != end - start:
                raise CacheError("the weights file is truncated")  # it shrank while we read it
            if digests:
                digests.add(view)
            if not name.startswith(_PAD):
                tensors[name] = raw.view(getattr(torch, SAFETENSORS_DTYPES[code])).reshape(shape)
        if digests and digests.hexdigest() != content:
            raise CacheError("its content hash doesn't match (damaged on disk)")
    return tensors


def _write(tensors: dict, handle) -> str:
    """Write ``tensors`` to the open file ``handle`` as a .safetensors file whose every tensor starts on a
    64-byte boundary; return the content hash of what was written.

    A valid safetensors file (any reader loads it): the gaps are filled by
    small ``__pad`` uint8 tensors, and the header by spaces, as the format allows.
    """
    import torch

    header: dict = {"__metadata__": {"format": "pt", "writer": "sote-studio"}}
    layout = []
    offset = 0
    for name in sorted(tensors):
        tensor = tensors[name]
        gap = -offset % ALIGN
        if gap:
            header[f"{_PAD}{len(layout)}"] = {"dtype": "U8", "shape": [gap], "data_offsets": [offset, offset + gap]}
            layout.append(bytes(gap))
            offset += gap
        size = tensor.numel() * tensor.element_size()
        header[name] = {"dtype": _CODES[str(tensor.dtype).removeprefix("torch.")], "shape": list(tensor.shape),
                        "data_offsets": [offset, offset + size]}
        layout.append(tensor)
        offset += size
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-(8 + len(text)) % ALIGN)
    head = struct.pack("<Q", len(text)) + text
    with _Digests() as digests:
        handle.write(head)
        digests.add(head)
        for item in layout:
            if not isinstance(item, bytes):
                item = memoryview(item.detach().contiguous().reshape(-1).view(torch.uint8).numpy())
            handle.write(item)
            digests.add(item)
        return digests.hexdigest()


# 4. Entries ---------------------------------------------------------------------------------------


def _description(path: Path) -> dict:
    """An entry's description, or CacheError if it isn't one this version wrote."""
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise CacheError("its description is not readable") from None
    if not isinstance(meta, dict):
        raise CacheError("its description is not readable")
    if meta.get("format") != FORMAT or meta.get("versions") != library_versions():
        raise CacheError("it was written by another version")
    qmap = meta.get("quantization_map")
    if not (isinstance(qmap, dict) and all(isinstance(v, dict) for v in qmap.values())
            and isinstance(meta.get("content"), str) and isinstance(meta.get("bytes"), int)
            and isinstance(meta.get("tensors"), int)):
        raise CacheError("its description is incomplete")
    return meta


def load(key: EntryKey, root: Path | None = None):
    """``(state_dict, quantization_map, bytes)`` of ``key``'s entry, or None if there is none.

    Raises CacheError (a short reason) for an entry that is there but unusable:
    a description that doesn't match, a truncated file, a header or content
    that doesn't match its hash. The tensors are read into memory of their own.
    """
    weights, description = _paths(key, root)
    if not description.exists():
        return None  # no entry (weights alone are a write in progress or a leftover)
    meta = _description(description)
    if meta.get("digest") != key.digest:
        raise CacheError("its description belongs to another entry")
    try:
        size = weights.stat().st_size
        if size != meta["bytes"]:
            raise CacheError("the weights file is truncated" if size < meta["bytes"] else "the weights file has grown")
        state_dict = read_weights(weights, meta["content"])
    except OSError as exc:
        raise CacheError(f"its weights can't be read ({exc.strerror or type(exc).__name__})") from None
    if len(state_dict) != meta["tensors"]:
        raise CacheError(f"it holds {len(state_dict)} tensors, its description says {meta['tensors']}")
    return state_dict, meta["quantization_map"], meta["bytes"]


def save(key: EntryKey, module, root: Path | None = None) -> int:
    """Write ``module`` (quantized and frozen) as ``key``'s entry; return its size in bytes.

    Older entries of the same component from the same folder, of the same
    flavour (weight type and dtype), are removed.
    Failing to write (a full or read-only disk) raises OSError and leaves no
    partial entry behind: weights whose description couldn't be written go too.
    """
    from optimum.quanto import quantization_map

    weights, description = _paths(key, root)
    state = {name: tensor.contiguous() for name, tensor in module.state_dict().items()}
    qmap = quantization_map(module)
    written: list[str] = []

    def write_weights(handle) -> None:
        _try_lock(handle, wait=True)  # tells the cleaner this temporary file has a live writer
        written.append(_write(state, handle))

    with _folder_lock(weights.parent, wait=True):
        remove(key.stem, root)
        atomic_write(weights, write_weights, overwrite=True)
        try:
            size = weights.stat().st_size
            meta = {"format": FORMAT, "digest": key.digest, "component": key.component, "source": key.source,
                    "flavour": key.flavour, "versions": library_versions(), "bytes": size, "tensors": len(state),
                    "hash": HASH, "content": written[0], "quantization_map": qmap}
            atomic_write(description, json.dumps(meta, indent=1).encode(), overwrite=True)
        except BaseException:
            weights.unlink(missing_ok=True)
            raise
        for other in entries(root):
            if (other.stem != key.stem and other.component == key.component and other.source == key.source
                    and other.flavour == key.flavour):
                remove(other.stem, root)
    return size


@dataclass(frozen=True)
class Entry:
    """One entry, or one leftover, in the cache folder; ``state`` is "ok" or what is wrong with it."""

    stem: str
    component: str
    source: str
    bytes: int
    state: str
    flavour: str = ""

    @property
    def complete(self) -> bool:
        return self.state == "ok"


def _entry(folder: Path, stem: str) -> Entry:
    weights, description = folder / f"{stem}.safetensors", folder / f"{stem}.json"
    size = weights.stat().st_size if weights.exists() else 0
    guess = stem.split("-")[0] if "-" in stem else "?"
    if not description.exists():
        return Entry(stem, guess, "", size, "no description")
    if not weights.exists():
        return Entry(stem, guess, "", 0, "no weights")
    try:
        meta = _description(description)
    except CacheError as exc:
        state = "old version" if "another version" in str(exc) else "junk"
        return Entry(stem, guess, "", size, state)
    where = (str(meta.get("component", guess)), str(meta.get("source", "")), str(meta.get("flavour", "")))
    if size != meta["bytes"]:
        return Entry(stem, where[0], where[1], size, "incomplete", where[2])
    try:
        with open(weights, "rb") as handle:
            _layout(handle, size)
    except (CacheError, OSError):
        return Entry(stem, where[0], where[1], size, "junk", where[2])
    return Entry(stem, where[0], where[1], size, "ok", where[2])


def entries(root: Path | None = None) -> list[Entry]:
    """Every entry and leftover in the cache folder, with its state.

    States: "ok"; "incomplete", "junk", "old version", "no description",
    "no weights" (what :func:`prune` removes); "temporary" (a write in progress,
    or one that died). Cheap: descriptions and headers only, no hashing.
    """
    folder = _folder(root)
    if not folder.is_dir():
        return []
    found = []
    stems = sorted({p.stem for p in folder.iterdir()
                    if p.suffix in (".safetensors", ".json") and not p.name.startswith(".")})
    for stem in stems:
        try:
            found.append(_entry(folder, stem))
        except OSError:  # removed while we looked
            continue
    for path in sorted(folder.glob(f".*{TMP_SUFFIX}")):
        with contextlib.suppress(OSError):
            found.append(Entry(path.name, "?", "", path.stat().st_size, "temporary"))
    return found


def prune(root: Path | None = None) -> tuple[int, int]:
    """Remove what no start can use: entries that are incomplete, junk, of another version, weights
    without a description and descriptions without weights, and temporary files of writers that died.

    Return (files, bytes) removed. Skipped (0, 0) while another process writes
    an entry; a temporary file whose writer still runs is kept.
    """
    folder = _folder(root)
    count = size = 0
    if not folder.is_dir():
        return 0, 0
    with _folder_lock(folder, wait=False) as locked:
        if not locked:
            return 0, 0
        for entry in entries(root):
            if entry.state == "ok":
                continue
            if entry.state == "temporary":
                paths = [folder / entry.stem]
                with contextlib.suppress(OSError), open(paths[0], "rb") as handle:
                    if not _try_lock(handle, wait=False):
                        continue  # its writer is alive
            else:
                paths = [folder / f"{entry.stem}.json", folder / f"{entry.stem}.safetensors"]
            for path in paths:
                with contextlib.suppress(OSError):
                    bytes_ = path.stat().st_size
                    path.unlink()
                    count, size = count + 1, size + bytes_
    return count, size


def remove(stem: str, root: Path | None = None) -> None:
    """Delete one entry (its description first, so a half-removed entry is never taken for a whole one)."""
    folder = _folder(root)
    for path in (folder / f"{stem}.json", folder / f"{stem}.safetensors"):
        path.unlink(missing_ok=True)


def clear(root: Path | None = None) -> tuple[int, int]:
    """Delete every entry and leftover temporary file; return (files, bytes) removed."""
    folder = _folder(root)
    count = size = 0
    if folder.is_dir():
        for path in folder.iterdir():
            if path.is_file() and (path.suffix in (".safetensors", ".json", ".tmp")):
                size += path.stat().st_size
                path.unlink()
                count += 1
    return count, size


def human(size: int) -> str:
    return f"{size / 1024**3:.2f} GiB" if size >= 1024**3 else f"{size / 1024**2:.1f} MiB"
