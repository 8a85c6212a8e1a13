"""Start images for image to image: upright, opaque, and fitted to the generation's size.

Pure Pillow: no torch, no gradio. The engine encodes what :func:`fit_to`
returns (``Engine.encode_image``).

Example::

    image = fit_to(open_start_image("photo.jpg"), 1024, 1536, "crop")   # 1024x1536, RGB
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageOps

from .errors import InputError
from .outputs import open_image

RESIZE_MODES = ("crop", "fit", "stretch")
MIN_SIDE = 16  # smaller start images hold no picture to start from, only a colour or two


def flatten(image: Image.Image) -> Image.Image:
    """``image`` in RGB, transparent areas on white.

    White, not black: art with a transparent background is drawn for a light
    page, and a black backdrop would turn its outlines' antialiasing into
    dark halos. Image remix's references are flattened the same way.
    """
    if image.mode == "RGB":
        return image
    if image.has_transparency_data:
        rgba = image.convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba).convert("RGB")
    return image.convert("RGB")


def upright(image: Image.Image) -> Image.Image:
    """``image`` turned as its EXIF orientation says (phones store portraits sideways), flattened to RGB."""
    return flatten(ImageOps.exif_transpose(image))


def open_start_image(path) -> Image.Image:
    """The start image at ``path``, upright and in RGB; a one-line InputError naming the file otherwise."""
    try:
        return upright(open_image(path))
    except InputError as exc:
        raise InputError(f"start image {Path(path).name[:80]!r}: {exc}") from None


def _edge_extend(inner: Image.Image, width: int, height: int) -> Image.Image:
    """``inner`` centred on a ``width`` x ``height`` canvas, the margins filled by stretching its edge rows
    and columns outwards."""
    left = (width - inner.width) // 2
    top = (height - inner.height) // 2
    wide = Image.new("RGB", (width, inner.height))
    wide.paste(inner, (left, 0))
    if left > 0:
        wide.paste(inner.crop((0, 0, 1, inner.height)).resize((left, inner.height)), (0, 0))
    right = width - left - inner.width
    if right > 0:
        wide.paste(inner.crop((inner.width - 1, 0, inner.width, inner.height)).resize((right, inner.height)),
                   (left + inner.width, 0))
    canvas = Image.new("RGB", (width, height))
    canvas.paste(wide, (0, top))
    if top > 0:
        canvas.paste(wide.crop((0, 0, width, 1)).resize((width, top)), (0, 0))
    bottom = height - top - inner.height
    if bottom > 0:
        canvas.paste(wide.crop((0, inner.height - 1, width, inner.height)).resize((width, bottom)),
                     (0, top + inner.height))
    return canvas


def fit_to(image: Image.Image, width: int, height: int, mode: str = "crop") -> Image.Image:
    """``image`` upright, in RGB and exactly ``width`` x ``height``.

    - ``crop``: scaled to cover the size, the overflow cut evenly from both
      sides (the centre is kept).
    - ``fit``: scaled to fit inside, the margins filled by stretching the
      image's edge rows and columns outwards. Not a flat colour: image to
      image keeps the start image's layout at denoise below 1, so a grey band
      would come back as a grey band, where stretched edge colours give the
      prior a continuation of the picture to repaint.
    - ``stretch``: scaled to the size, the aspect ratio not kept.

    Lanczos throughout. A start image smaller than ``MIN_SIDE`` on a side,
    or an unknown mode, is an InputError.
    """
    if mode not in RESIZE_MODES:
        raise InputError(f"unknown resize mode {mode!r}; choose one of: {', '.join(RESIZE_MODES)}")
    if width < 1 or height < 1:
        raise InputError(f"the size {width}x{height} has no pixels")
    if min(image.size) < MIN_SIDE:
        raise InputError(f"the start image is {image.width}x{image.height}; it needs at least "
                         f"{MIN_SIDE}x{MIN_SIDE} pixels")
    image = upright(image)
    if mode == "stretch":
        return image if image.size == (width, height) else image.resize((width, height), Image.LANCZOS)
    if mode == "crop":
        return ImageOps.fit(image, (width, height), Image.LANCZOS, centering=(0.5, 0.5))
    scale = min(width / image.width, height / image.height)
    inner_size = (max(1, min(width, round(image.width * scale))), max(1, min(height, round(image.height * scale))))
    inner = image if image.size == inner_size else image.resize(inner_size, Image.LANCZOS)
    return _edge_extend(inner, width, height)


__all__ = ["MIN_SIDE", "RESIZE_MODES", "fit_to", "flatten", "open_start_image", "upright"]
