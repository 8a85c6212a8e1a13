"""An on-disk cache of fp8-quantized weights, so fp8 starts quantize only once.

Each entry is one component (text encoder, prior, decoder) saved with
optimum-quanto's own serialization: its ``state_dict()`` in a safetensors file
(each tensor 64-byte aligned) plus its ``quantization_map()``. A later start
rebuilds the module on the ``meta`` device and calls ``requantize``: nothing
is quantized again, and the weights are mapped from the file as they are
first used.

An entry's key covers everything that changes its bytes: the model files
(names, sizes and modification times), the quanto and torch versions, the
layers kept out of fp8, the weight type and the dtype of the layers left
unquantized. Entries are written atomically (a temporary file, then a rename;
the description last), and one whose file is truncated or whose description
doesn't match is ignored and rebuilt, never loaded.

Location: ``$SOTE_CACHE`` if set, else ``$XDG_CACHE_HOME/sote-studio`` or
``~/.cache/sote-studio``.

Example::

    key = entry_key("prior", files, exclude=["clf*"], extra={"dtype": "bfloat16"})
    loaded = load(key)                      # (state_dict, quantization_map) or None
    if loaded is None:
        save(key, module, source="/models/prior")
    python -m sote_ui cache info            # entries and their sizes
    python -m sote_ui cache clear
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from dataclasses import dataclass
from pathlib import Path

from ..core.files import atomic_write

FORMAT = 1
SUBDIR = "fp8"


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

    try:
        quanto = version("optimum-quanto")
    except PackageNotFoundError:  # pragma: no cover - a source install
        quanto = "unknown"
    return {"torch": torch.__version__, "optimum-quanto": quanto}


@dataclass(frozen=True)
class EntryKey:
    component: str  # "prior", "decoder", "text_encoder"
    digest: str  # hex sha256 of everything the entry depends on
    source: str  # the component's folder, to replace older entries of the same model
    flavour: str = ""  # the weight type and dtype: entries of other flavours of the same model are kept

    @property
    def stem(self) -> str:
        return f"{self.component}-{self.digest[:20]}"


def entry_key(component: str, files: list[Path], exclude: list[str], extra: dict | None = None) -> EntryKey:
    """The key of ``component`` built from ``files`` (its weights) with ``exclude`` kept out of fp8."""
    described = []
    for path in sorted(Path(f) for f in files):
        stat = path.stat()
        described.append([path.name, stat.st_size, stat.st_mtime_ns])
    payload = {"format": FORMAT, "component": component, "files": described, "exclude": sorted(exclude),
               "versions": library_versions(), **(extra or {})}
    digest = hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()
    source = str(Path(files[0]).resolve().parent) if files else ""
    flavour = ", ".join(str(value).removeprefix("torch.") for _, value in sorted((extra or {}).items()))
    return EntryKey(component, digest, source, flavour)


def _paths(key: EntryKey, root: Path | None = None) -> tuple[Path, Path]:
    folder = (root or cache_root()) / SUBDIR
    return folder / f"{key.stem}.safetensors", folder / f"{key.stem}.json"


def _header_end(path: Path) -> int:
    """Where the last tensor's data ends according to the file's own header."""
    with open(path, "rb") as handle:
        (length,) = struct.unpack("<Q", handle.read(8))
        if length > path.stat().st_size - 8:
            raise ValueError("header length past the end of the file")
        header = json.loads(handle.read(length))
    ends = [entry["data_offsets"][1] for name, entry in header.items() if name != "__metadata__"]
    return 8 + length + max(ends, default=0)


def valid(key: EntryKey, root: Path | None = None) -> dict | None:
    """The entry's description if its files are complete and match ``key``, else None."""
    weights, description = _paths(key, root)
    try:
        meta = json.loads(description.read_text(encoding="utf-8"))
        size = weights.stat().st_size
        if meta.get("digest") != key.digest or meta.get("bytes") != size or _header_end(weights) != size:
            return None
        if not isinstance(meta.get("quantization_map"), dict):
            return None
        return meta
    except (OSError, ValueError, KeyError, TypeError, AttributeError, struct.error):
        return None


def load(key: EntryKey, root: Path | None = None):
    """``(state_dict, quantization_map, bytes)`` of a valid entry, or None (missing, stale or broken).

    The tensors are mapped copy-on-write from the file: nothing is read until used.
    """
    meta = valid(key, root)
    if meta is None:
        return None
    weights, _ = _paths(key, root)
    try:
        state_dict = map_weights(weights)
    except Exception:  # a file that changed under us: treat as missing
        return None
    if len(state_dict) != meta.get("tensors"):
        return None
    return state_dict, meta["quantization_map"], meta["bytes"]


ALIGN = 64
_PAD = "__pad"
# safetensors dtype codes and torch dtype names.
SAFETENSORS_DTYPES = {
    "BF16": "bfloat16", "F16": "float16", "F32": "float32", "F64": "float64", "I64": "int64", "I32": "int32",
    "I16": "int16", "I8": "int8", "U8": "uint8", "BOOL": "bool", "F8_E4M3": "float8_e4m3fn", "F8_E5M2": "float8_e5m2",
}
_CODES = {name: code for code, name in SAFETENSORS_DTYPES.items()}


def map_weights(path: Path) -> dict:
    """The file's tensors, mapped privately (copy-on-write) from the file.

    Each tensor of a file written by :func:`_write` starts on a 64-byte
    boundary: torch's int8-weight CPU kernel, which quanto uses, crashes on
    weights that don't (as ``safetensors.torch.load_file`` maps them).
    """
    import torch

    with open(path, "rb") as handle:
        (length,) = struct.unpack("<Q", handle.read(8))
        header = json.loads(handle.read(length))
    header.pop("__metadata__", None)
    base = 8 + length
    storage = torch.UntypedStorage.from_file(str(path), shared=False, nbytes=path.stat().st_size)
    raw = torch.empty(0, dtype=torch.uint8).set_(storage)
    tensors = {}
    for name, entry in header.items():
        if name.startswith(_PAD):
            continue
        start, end = entry["data_offsets"]
        dtype = getattr(torch, SAFETENSORS_DTYPES[entry["dtype"]])
        chunk = raw[base + start:base + end]
        if (base + start) % ALIGN:  # not written by us: copy it to aligned memory
            chunk = chunk.clone()
        tensors[name] = chunk.view(dtype).reshape(entry["shape"])
    return tensors


def _write(tensors: dict, handle) -> None:
    """Write ``tensors`` to the open file ``handle`` as a .safetensors file whose every tensor starts on a 64-byte boundary.

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
    handle.write(struct.pack("<Q", len(text)))
    handle.write(text)
    for item in layout:
        if isinstance(item, bytes):
            handle.write(item)
        elif item.numel():
            handle.write(memoryview(item.detach().contiguous().reshape(-1).view(torch.uint8).numpy()))


def save(key: EntryKey, module, root: Path | None = None) -> int:
    """Write ``module`` (quantized and frozen) as ``key``'s entry; return its size in bytes.

    Older entries of the same component from the same folder, of the same
    flavour (weight type and dtype), are removed.
    Failing to write (a full or read-only disk) raises OSError and leaves no
    partial entry behind.
    """
    from optimum.quanto import quantization_map

    weights, description = _paths(key, root)
    weights.parent.mkdir(parents=True, exist_ok=True)
    state = {name: tensor.contiguous() for name, tensor in module.state_dict().items()}
    qmap = quantization_map(module)
    atomic_write(weights, lambda handle: _write(state, handle), overwrite=True)
    size = weights.stat().st_size
    meta = {"digest": key.digest, "component": key.component, "source": key.source, "flavour": key.flavour,
            "bytes": size,
            "tensors": len(state), "quantization_map": qmap, "format": FORMAT}
    atomic_write(description, json.dumps(meta, indent=1).encode(), overwrite=True)
    for other in entries(root):
        if (other.stem != key.stem and other.component == key.component and other.source == key.source
                and other.flavour == key.flavour):
            remove(other.stem, root)
    return size


@dataclass(frozen=True)
class Entry:
    stem: str
    component: str
    source: str
    bytes: int
    complete: bool
    flavour: str = ""


def entries(root: Path | None = None) -> list[Entry]:
    """Every entry in the cache folder, complete or not."""
    folder = (root or cache_root()) / SUBDIR
    found = []
    for weights in sorted(folder.glob("*.safetensors")) if folder.is_dir() else []:
        description = weights.with_suffix(".json")
        if weights.name.startswith("."):
            continue
        try:
            meta = json.loads(description.read_text(encoding="utf-8"))
            complete = meta.get("bytes") == weights.stat().st_size
            found.append(Entry(weights.stem, meta.get("component", "?"), meta.get("source", ""),
                               weights.stat().st_size, complete, meta.get("flavour", "")))
        except (OSError, ValueError):
            found.append(Entry(weights.stem, weights.stem.split("-")[0], "", weights.stat().st_size, False))
    return found


def remove(stem: str, root: Path | None = None) -> None:
    folder = (root or cache_root()) / SUBDIR
    for path in (folder / f"{stem}.json", folder / f"{stem}.safetensors"):
        path.unlink(missing_ok=True)


def clear(root: Path | None = None) -> tuple[int, int]:
    """Delete every entry and leftover temporary file; return (files, bytes) removed."""
    folder = (root or cache_root()) / SUBDIR
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
