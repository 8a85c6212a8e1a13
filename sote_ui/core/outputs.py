"""Saving and opening images: atomic writes that never replace a file, and
uploads checked before they are trusted.

Pure data and logic (Pillow only): no torch, no gradio.

Example::

    path = save_png(image, parameters, unique_path(Path("outputs") / "sote-42.png"))
"""

from __future__ import annotations

import io
import itertools
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from .errors import InputError
from .files import atomic_write
from .metadata import png_bytes

MAX_UPLOAD_BYTES = 50 * 1024 * 1024
MAX_UPLOAD_PIXELS = 64 * 1024 * 1024


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
