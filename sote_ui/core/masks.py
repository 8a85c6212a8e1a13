"""Inpainting and outpainting as image work: masks, their feather, the crop around them, the outpaint canvas.

Pure Pillow: no torch, no gradio. White in a mask is what gets repainted.
The engine generates the repainted area; everything here decides which
pixels it may change and puts the result back (A1111's way: outside the mask
the source's pixels, the mask's blur as a feather between them).

Example::

    source, mask = outpaint_canvas(fit_to(start, 1024, 1024, "crop"), parse_outpaint("right:256"))
    plan = plan_inpaint(source, mask, blur=4, area="whole", width=1280, height=1024)
    # ... generate plan.generate_size from plan.image / plan.mask, then:
    final = paste_back(plan, generated)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageFilter, ImageOps

from .errors import InputError

INPAINT_AREAS = ("whole", "masked")  # A1111's "Whole picture" and "Only masked"
AREA_NAMES = {"whole": "Whole picture", "masked": "Only masked"}  # A1111's infotext values
OUTPAINT_SIDES = ("left", "right", "up", "down")
OUTPAINT_STEP = 128  # the canvas stays a size the prior can sample
MAX_MASK_BLUR = 64
MASKED_PADDING = 32  # pixels kept around the mask's box in "masked" mode (A1111's default)


def parse_outpaint(text: str) -> dict[str, int]:
    """``"left:256,down:128"`` as {"left": 256, "down": 128}: each side a multiple of 128 (InputError otherwise)."""
    sides: dict[str, int] = {}
    for part in (text or "").replace(";", ",").split(","):
        part = part.strip()
        if not part:
            continue
        name, colon, value = part.partition(":")
        name = name.strip().lower()
        if not colon or name not in OUTPAINT_SIDES:
            raise InputError(f"outpaint takes side:pixels pairs like left:256,down:128 (sides: "
                             f"{', '.join(OUTPAINT_SIDES)}), got {part[:40]!r}")
        try:
            pixels = int(value.strip())
        except ValueError:
            raise InputError(f"outpaint {name} must be a whole number of pixels, got {value.strip()[:20]!r}") from None
        if pixels < 0 or pixels % OUTPAINT_STEP:
            raise InputError(f"outpaint {name} {pixels} is not a multiple of {OUTPAINT_STEP}; try "
                             f"{max(OUTPAINT_STEP, pixels // OUTPAINT_STEP * OUTPAINT_STEP)}")
        if name in sides:
            raise InputError(f"outpaint names {name} twice")
        if pixels:
            sides[name] = pixels
    return sides


def format_outpaint(sides: dict[str, int]) -> str:
    """The request's text for ``sides`` (the inverse of :func:`parse_outpaint`), in a fixed side order."""
    return ",".join(f"{side}:{sides[side]}" for side in OUTPAINT_SIDES if sides.get(side))


def canvas_size(width: int, height: int, sides: dict[str, int]) -> tuple[int, int]:
    """The outpainted canvas's (width, height) for a ``width`` x ``height`` picture."""
    return (width + sides.get("left", 0) + sides.get("right", 0),
            height + sides.get("up", 0) + sides.get("down", 0))


def outpaint_canvas(image: Image.Image, sides: dict[str, int]) -> tuple[Image.Image, Image.Image]:
    """(canvas, mask): ``image`` on a canvas grown by ``sides``, the new area masked (white).

    The new area is filled by stretching the picture's edge rows and columns
    outwards: a prior that starts from the canvas sees a continuation of the
    picture rather than a flat band.
    """
    image = image.convert("RGB")
    left, top = sides.get("left", 0), sides.get("up", 0)
    width, height = canvas_size(image.width, image.height, sides)
    right, bottom = width - left - image.width, height - top - image.height
    wide = Image.new("RGB", (width, image.height))
    wide.paste(image, (left, 0))
    if left:
        wide.paste(image.crop((0, 0, 1, image.height)).resize((left, image.height)), (0, 0))
    if right:
        wide.paste(image.crop((image.width - 1, 0, image.width, image.height)).resize((right, image.height)),
                   (left + image.width, 0))
    canvas = Image.new("RGB", (width, height))
    canvas.paste(wide, (0, top))
    if top:
        canvas.paste(wide.crop((0, 0, width, 1)).resize((width, top)), (0, 0))
    if bottom:
        canvas.paste(wide.crop((0, image.height - 1, width, image.height)).resize((width, bottom)),
                     (0, top + image.height))
    mask = Image.new("L", (width, height), 255)
    mask.paste(0, (left, top, left + image.width, top + image.height))
    return canvas, mask


def binary(mask: Image.Image) -> Image.Image:
    """``mask`` as L with only 0 and 255: white (>= 128 in grey, or opaque where it has transparency) repaints.

    A mask drawn on a transparent layer (an editor's brush layer) marks its
    strokes by their opacity; any other image by its brightness.
    """
    mask = ImageOps.exif_transpose(mask)
    if mask.mode in ("RGBA", "LA", "PA") or (mask.mode == "P" and "transparency" in mask.info):
        alpha = mask.convert("RGBA").getchannel("A")
        if alpha.getextrema()[0] < 255:
            return alpha.point(lambda v: 255 if v >= 128 else 0)
    return mask.convert("L").point(lambda v: 255 if v >= 128 else 0)


def load_mask(path: str, size: tuple[int, int] | None) -> tuple[Image.Image, str | None]:
    """(the mask at ``size``, a note when it had to be resized). InputError: unreadable, empty or all over.

    A mask of another size is resized to the picture's (nearest, so it stays
    black and white) and the note says so; ``size`` None keeps its own.
    """
    name = Path(path.replace("\x00", "")).name[:80]
    try:
        with Image.open(Path(path).expanduser()) as opened:
            opened.load()
            mask = binary(opened)
    except FileNotFoundError:
        raise InputError(f"mask {name!r} does not exist") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        raise InputError(f"mask {name!r} is not an image Pillow can read (PNG, JPEG, WebP...)") from None
    note = None
    if size is not None and mask.size != size:
        note = f"the mask {name!r} is {mask.width}x{mask.height}; it was resized to the picture's {size[0]}x{size[1]}"
        mask = mask.resize(size, Image.NEAREST)
    check_mask(mask, name)
    return mask, note


def check_mask(mask: Image.Image, name: str = "the mask") -> None:
    """InputError when ``mask`` (binary L) repaints nothing."""
    if mask.getbbox() is None:
        raise InputError(f"{name if name == 'the mask' else 'mask ' + repr(name)} is empty: nothing to repaint "
                         "(white marks what to repaint)")


def feather(mask: Image.Image, blur: int) -> Image.Image:
    """``mask`` blurred by ``blur`` pixels (Gaussian radius, as A1111's "Mask blur"); 0 keeps it sharp."""
    return mask if blur <= 0 else mask.filter(ImageFilter.GaussianBlur(blur))


def feather_reach(blur: int) -> int:
    """How far (pixels) outside the mask its feather can change a pixel: the blur's kernel half-width."""
    # Pillow's GaussianBlur runs three box blurs whose total half-width is at most 3 * radius + 1.
    return 0 if blur <= 0 else 3 * blur + 1


def crop_box(mask: Image.Image, width: int, height: int, padding: int = MASKED_PADDING) -> tuple[int, int, int, int]:
    """The box around the mask's white, padded by ``padding`` and grown to ``width``:``height``'s aspect.

    Kept inside the image; where the image is too small for the aspect the box
    takes the whole side (the generated crop is then resized, as A1111 does).
    """
    box = mask.getbbox()
    if box is None:
        raise InputError("the mask is empty: nothing to repaint (white marks what to repaint)")
    left, top, right, bottom = box[0] - padding, box[1] - padding, box[2] + padding, box[3] + padding
    box_w, box_h = right - left, bottom - top
    aspect = width / height
    if box_w / box_h < aspect:  # too narrow: widen around the centre
        grow = round(box_h * aspect) - box_w
        left, right = left - grow // 2, right + grow - grow // 2
    else:
        grow = round(box_w / aspect) - box_h
        top, bottom = top - grow // 2, bottom + grow - grow // 2

    def shift(low: int, high: int, limit: int) -> tuple[int, int]:
        if high - low >= limit:
            return 0, limit
        if low < 0:
            return 0, high - low
        if high > limit:
            return limit - (high - low), limit
        return low, high

    left, right = shift(left, right, mask.width)
    top, bottom = shift(top, bottom, mask.height)
    return left, top, right, bottom


@dataclass(frozen=True)
class InpaintPlan:
    """What one inpainting generates and how it goes back.

    ``source``: the whole picture (the output's size); ``mask``: its binary
    mask; ``feathered``: the mask as the composite uses it; ``box``: the crop
    that is generated ("masked" area), or None for the whole picture;
    ``image``/``crop_mask``: what the generation starts from and is
    controlled by, at ``generate_size``.
    """

    source: Image.Image
    mask: Image.Image
    feathered: Image.Image
    box: tuple[int, int, int, int] | None
    image: Image.Image
    crop_mask: Image.Image

    @property
    def generate_size(self) -> tuple[int, int]:
        return self.image.size


def plan_inpaint(source: Image.Image, mask: Image.Image, blur: int, area: str, width: int, height: int,
                 padding: int = MASKED_PADDING) -> InpaintPlan:
    """The plan for repainting ``mask`` of ``source``: the whole picture, or (``area`` "masked") the crop
    around the mask, generated at ``width`` x ``height``."""
    if area not in INPAINT_AREAS:
        raise InputError(f"inpaint_area must be one of {', '.join(INPAINT_AREAS)}, got {str(area)[:40]!r}")
    source = source.convert("RGB")
    mask = binary(mask) if mask.mode != "L" else mask
    check_mask(mask)
    feathered = feather(mask, blur)
    if area == "whole":
        return InpaintPlan(source, mask, feathered, None, source, mask)
    box = crop_box(mask, width, height, padding)
    image = source.crop(box).resize((width, height), Image.LANCZOS)
    crop_mask = mask.crop(box).resize((width, height), Image.NEAREST)
    return InpaintPlan(source, mask, feathered, box, image, crop_mask)


def paste_back(plan: InpaintPlan, generated: Image.Image) -> Image.Image:
    """``generated`` put back into the source: inside the (feathered) mask the new pixels, outside the source's.

    With a crop box the generated crop is resized to the box and placed there
    first. Pixels where the feathered mask is 0 are exactly the source's.
    """
    generated = generated.convert("RGB")
    if plan.box is None:
        full = generated if generated.size == plan.source.size else generated.resize(plan.source.size, Image.LANCZOS)
    else:
        left, top, right, bottom = plan.box
        full = plan.source.copy()
        full.paste(generated.resize((right - left, bottom - top), Image.LANCZOS), (left, top))
    return Image.composite(full, plan.source, plan.feathered)


__all__ = ["AREA_NAMES", "INPAINT_AREAS", "InpaintPlan", "MAX_MASK_BLUR", "OUTPAINT_SIDES", "OUTPAINT_STEP",
           "binary", "canvas_size", "check_mask", "crop_box", "feather", "feather_reach", "format_outpaint",
           "load_mask", "outpaint_canvas", "parse_outpaint", "paste_back", "plan_inpaint"]
