"""Saving and opening images: atomic writes that never replace a file, uploads
checked before they are trusted, and the stage-C latent kept beside each PNG.

Pure data and logic (Pillow only): no torch, no gradio. A latent is plain
bytes here (:class:`LatentRecord`); the engine turns it into tensors.

Example::

    path = save_png(image, parameters, unique_path(Path("outputs") / "sote-42.png"))
    save_latent(path, record)          # outputs/.latents/sote-42.safetensors, oldest dropped past the cap
    load_latent(path)                  # the record again, or None
"""

from __future__ import annotations

import io
import itertools
import json
import re
import struct
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from .errors import InputError
from .files import atomic_write
from .metadata import png_bytes

MAX_UPLOAD_BYTES = 50 * 1024 * 1024
MAX_UPLOAD_PIXELS = 64 * 1024 * 1024
LATENT_FOLDER = ".latents"
# A 1024x1536 latent with its generator state is about 60 KB in fp32 (33 KB in bf16): the caps keep the
# latest thousand images re-decodable in at most 128 MB.
MAX_LATENTS = 1000
MAX_LATENT_BYTES = 128 * 1024 * 1024
_LATENT_DTYPES = {"F32": 4, "F16": 2, "BF16": 2, "U8": 1}
_SAFE_NAME = re.compile(r"^[\w.+-]+$")


def unique_path(path: Path) -> Path:
    """``path``, or ``name-1.png``, ``name-2.png``... if it is taken."""
    path = Path(path)
    if not path.exists():
        return path
    for n in itertools.count(1):
        candidate = path.with_name(f"{path.stem}-{n}{path.suffix}")
        if not candidate.exists():
            return candidate
    raise AssertionError("unreachable")


def save_png(image: Image.Image, parameters: str, path: Path) -> Path:
    """Write ``image`` with its ``parameters`` text atomically; never replaces a file.

    If ``path`` is taken (also by a writer racing this one), the next free
    ``name-N.png`` is used. Returns the path written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = png_bytes(image, parameters)
    while True:
        target = unique_path(path)
        try:
            return atomic_write(target, data, overwrite=False)
        except InputError:
            continue  # someone took the name between the check and the write


def open_image(source) -> Image.Image:
    """Open an uploaded image (path, bytes or file object) or raise a one-line InputError."""
    try:
        if isinstance(source, (str, Path)):
            path = Path(source)
            if not path.is_file():
                raise InputError(f"{path.name} is not a file")
            if path.stat().st_size > MAX_UPLOAD_BYTES:
                raise InputError(f"{path.name} is larger than {MAX_UPLOAD_BYTES // 2**20} MB")
            data = path.read_bytes()
        elif isinstance(source, bytes):
            data = source
        else:
            data = source.read(MAX_UPLOAD_BYTES + 1)
        if len(data) > MAX_UPLOAD_BYTES:
            raise InputError(f"the file is larger than {MAX_UPLOAD_BYTES // 2**20} MB")
        image = Image.open(io.BytesIO(data))
        if image.width * image.height > MAX_UPLOAD_PIXELS:
            raise InputError(f"the image is {image.width}x{image.height}, too large to read")
        image.load()
        return image
    except InputError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        raise InputError("the file is not an image this app can read (PNG, JPEG or WebP)") from None


# The stage-C latent beside each PNG ----------------------------------------------------------------


@dataclass(frozen=True)
class LatentRecord:
    """Tensors as plain bytes, ``name -> (dtype, shape, data)`` (dtype in safetensors' words: F32, BF16,
    F16, U8), and string metadata; stored as one safetensors file."""

    tensors: dict[str, tuple[str, tuple[int, ...], bytes]]
    meta: dict[str, str]


def latent_path(png: str | Path, folder: str | Path | None = None) -> Path:
    """Where the latent of ``png`` is kept: ``.latents/<its name>.safetensors`` in ``folder`` (the PNG's own
    folder by default). Only the PNG's name is used, so a copy elsewhere (an upload) finds it too."""
    png = Path(png)
    if not _SAFE_NAME.match(png.stem) or png.stem.strip(".") == "":
        raise InputError(f"{png.name[:60]!r} is not the name of a saved image")
    return Path(folder if folder is not None else png.parent) / LATENT_FOLDER / f"{png.stem}.safetensors"


def latent_bytes(record: LatentRecord) -> bytes:
    """``record`` in the safetensors format (the header, then each tensor's bytes)."""
    header: dict = {"__metadata__": dict(record.meta)}
    offset = 0
    for name, (dtype, shape, data) in record.tensors.items():
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # the format aligns the data to 8 bytes
    return struct.pack("<Q", len(text)) + text + b"".join(data for _, _, data in record.tensors.values())


def record_of(raw: bytes) -> LatentRecord:
    """Read a safetensors file's bytes back into a record (ValueError if it is not one)."""
    if len(raw) < 8:
        raise ValueError("too short")
    size = struct.unpack("<Q", raw[:8])[0]
    if size > len(raw) - 8:
        raise ValueError("header past the end")
    header = json.loads(raw[8:8 + size])
    data = raw[8 + size:]
    meta = {str(k): str(v) for k, v in header.pop("__metadata__", {}).items()}
    tensors = {}
    for name, entry in header.items():
        dtype, shape, (begin, end) = entry["dtype"], tuple(int(n) for n in entry["shape"]), entry["data_offsets"]
        count = 1
        for n in shape:
            count *= n
        if dtype not in _LATENT_DTYPES or not 0 <= begin <= end <= len(data) or end - begin != count * _LATENT_DTYPES[dtype]:
            raise ValueError(f"bad entry {name}")
        tensors[name] = (dtype, shape, data[begin:end])
    return LatentRecord(tensors, meta)


def save_latent(png: str | Path, record: LatentRecord, *, max_count: int = MAX_LATENTS,
                max_bytes: int = MAX_LATENT_BYTES) -> Path:
    """Keep ``record`` as the latent of ``png`` (written atomically), then drop the oldest latents of its
    folder past ``max_count`` files or ``max_bytes``. Returns the file written."""
    path = latent_path(png)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, latent_bytes(record), overwrite=True)
    prune_latents(Path(png).parent, max_count=max_count, max_bytes=max_bytes)
    return path


def load_latent(png: str | Path, folder: str | Path | None = None) -> LatentRecord | None:
    """The latent kept for ``png`` (looked up by name in ``folder``, the PNG's own by default), None if none
    is; InputError if the file is damaged."""
    path = latent_path(png, folder)
    try:
        raw = path.read_bytes()
    except (FileNotFoundError, NotADirectoryError):
        return None
    try:
        return record_of(raw)
    except (ValueError, KeyError, TypeError, AttributeError, struct.error):
        raise InputError(f"the stored composition of {Path(png).name} is damaged") from None


def prune_latents(folder: str | Path, *, max_count: int = MAX_LATENTS, max_bytes: int = MAX_LATENT_BYTES) -> int:
    """Drop the oldest latents in ``folder``'s ``.latents`` until at most ``max_count`` files and
    ``max_bytes`` are left; returns how many went."""
    files = []
    for path in (Path(folder) / LATENT_FOLDER).glob("*.safetensors"):
        try:
            stat = path.stat()
        except FileNotFoundError:  # dropped meanwhile by another writer
            continue
        files.append((stat.st_mtime, path.name, stat.st_size, path))
    files.sort(reverse=True)  # newest first
    kept_bytes, dropped = 0, 0
    for number, (_, _, size, path) in enumerate(files):
        kept_bytes += size
        if number >= max_count or kept_bytes > max_bytes:
            path.unlink(missing_ok=True)
            dropped += 1
    return dropped
