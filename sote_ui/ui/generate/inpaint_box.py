"""Inpainting, outpainting and ControlNets on the Generate tab: the "Inpaint / control" panel.

A mask editor over the start image (brush, eraser and brush size from Gradio's editor; "Use drawn mask"
turns the strokes into the mask, "Invert" and "Clear" work on it), or an uploaded mask (white = repaint);
the mask's blur and "masked area only"; outpaint buttons that grow the canvas by 128 pixels a side; the
ControlNet (canny, inpaint, super-resolution) with its image, strength, step range and canny's thresholds,
and for canny a preview of the edge map the run follows.

Every request field here is one control, in the request's vocabulary, so presets, PNG info and the API
set them like any other.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import gradio as gr
from PIL import Image, ImageChops, ImageOps

from ...core.errors import InputError, describe_error
from ...core.masks import (
    AREA_NAMES,
    INPAINT_AREAS,
    MAX_MASK_BLUR,
    OUTPAINT_SIDES,
    OUTPAINT_STEP,
    binary,
    format_outpaint,
    parse_outpaint,
)
from ...core.request import CANNY_RANGE, CONTROLS, MAX_STRENGTH, GenerationRequest
from ...service.studio import Studio

CONTROL_CHOICES = [("none (a mask or outpaint uses inpaint)", "none"), ("canny: follow the edges", "canny"),
                   ("inpaint", "inpaint"), ("super-resolution (2x of the control image)", "sr")]
ARROWS = {"left": "← 128", "right": "128 →", "up": "↑ 128", "down": "↓ 128"}


@dataclass
class InpaintBox:
    """The request's inpaint and control fields, and the editor and buttons that fill them."""

    mask: gr.Image
    mask_blur: gr.Slider
    inpaint_area: gr.Radio
    outpaint: gr.Textbox
    control: gr.Dropdown
    control_image: gr.Image
    control_strength: gr.Slider
    control_start: gr.Slider
    control_end: gr.Slider
    canny_low: gr.Slider
    canny_high: gr.Slider
    editor: gr.ImageEditor
    use_drawn: gr.Button
    invert: gr.Button
    clear: gr.Button
    grow: dict  # side -> gr.Button
    no_outpaint: gr.Button
    note: gr.Markdown
    accordion: gr.Accordion
    canny_preview: gr.Image


def build_inpaint_box(defaults: GenerationRequest) -> InpaintBox:
    """The "Inpaint / control" accordion, laid out where it is called."""
    assert tuple(value for _, value in CONTROL_CHOICES) == CONTROLS
    with gr.Accordion("Inpaint / control", open=False, elem_id="inpaint_box") as accordion:
        gr.Markdown("Paint over the start image what to repaint, then **Use drawn mask**; or upload a mask "
                    "(white = repaint). Outside the mask the start image's pixels are kept.", elem_classes=["hint"])
        editor = gr.ImageEditor(label="Draw the mask", type="pil", sources=(), elem_id="mask_editor", height=320,
                                brush=gr.Brush(colors=["#ffffff"], color_mode="fixed", default_size=32),
                                eraser=gr.Eraser(default_size=32), layers=False)
        with gr.Row():
            use_drawn = gr.Button("Use drawn mask", size="sm", elem_id="use_drawn_mask")
            invert = gr.Button("Invert mask", size="sm", elem_id="invert_mask")
            clear = gr.Button("Clear mask", size="sm", elem_id="clear_mask")
        with gr.Row(equal_height=True):
            mask = gr.Image(label="Mask (white = repaint)", type="filepath", sources=["upload", "clipboard"],
                            image_mode=None, height=180, elem_id="mask", min_width=160)
            with gr.Column(min_width=200):
                mask_blur = gr.Slider(0, MAX_MASK_BLUR, value=defaults.mask_blur, step=1, label="Mask blur",
                                      info="the feather between new and kept pixels", elem_id="mask_blur")
                inpaint_area = gr.Radio([(AREA_NAMES[a], a) for a in INPAINT_AREAS], value=defaults.inpaint_area,
                                        label="Inpaint area", elem_id="inpaint_area",
                                        info="Only masked: a crop around the mask at the full size, pasted back")
        with gr.Row(equal_height=True):
            outpaint = gr.Textbox(defaults.outpaint, label="Outpaint (extend the canvas)", elem_id="outpaint",
                                  placeholder="left:256,down:128", min_width=200, scale=3)
            grow = {side: gr.Button(ARROWS[side], size="sm", elem_id=f"outpaint_{side}", min_width=60, scale=1)
                    for side in OUTPAINT_SIDES}
            no_outpaint = gr.Button("none", size="sm", elem_id="outpaint_none", min_width=60, scale=1)
        with gr.Row(equal_height=True):
            control = gr.Dropdown(CONTROL_CHOICES, value=defaults.control, label="ControlNet", elem_id="control",
                                  min_width=200)
            control_image = gr.Image(label="Control image (default: the start image)", type="filepath",
                                     sources=["upload", "clipboard"], image_mode=None, height=180,
                                     elem_id="control_image", min_width=160)
        with gr.Row():
            control_strength = gr.Slider(0, MAX_STRENGTH, value=defaults.control_strength, step=0.05,
                                         label="Control strength", elem_id="control_strength", min_width=160)
            control_start = gr.Slider(0, 1, value=defaults.control_start, step=0.05, label="Control from",
                                      elem_id="control_start", min_width=160)
            control_end = gr.Slider(0, 1, value=defaults.control_end, step=0.05, label="Control until",
                                    elem_id="control_end", min_width=160)
        with gr.Row():
            canny_low = gr.Slider(CANNY_RANGE[0], 500, value=defaults.canny_low, step=1, label="Canny low",
                                  elem_id="canny_low", min_width=160)
            canny_high = gr.Slider(CANNY_RANGE[0], 500, value=defaults.canny_high, step=1, label="Canny high",
                                   elem_id="canny_high", min_width=160)
        canny_preview = gr.Image(label="Canny edge map (what the ControlNet follows)", type="pil",
                                 interactive=False, visible=False, height=240, elem_id="canny_preview",
                                 format="png", buttons=[])
        note = gr.Markdown(elem_id="inpaint_note")
    return InpaintBox(mask, mask_blur, inpaint_area, outpaint, control, control_image, control_strength,
                      control_start, control_end, canny_low, canny_high, editor, use_drawn, invert, clear, grow,
                      no_outpaint, note, accordion, canny_preview)


def drawn_mask(value) -> tuple[Image.Image | None, str]:
    """The editor's strokes as a mask (white where painted), or None and why."""
    layers = (value or {}).get("layers") or []
    mask = None
    for layer in layers:
        if layer is None:
            continue
        strokes = binary(layer.convert("RGBA"))  # a brush layer: its opacity marks the strokes
        mask = strokes if mask is None else ImageChops.lighter(mask, strokes)
    if mask is None or mask.getbbox() is None:
        return None, "nothing is painted yet: paint over what to repaint, then Use drawn mask"
    return mask, "the painted strokes are the mask"


def inverted(path: str | None) -> tuple[Image.Image | None, str]:
    """The mask at ``path`` inverted (what was kept is repainted), or None and why."""
    if not path:
        return None, "there is no mask to invert"
    try:
        with Image.open(path) as image:
            return ImageOps.invert(binary(image)), "the mask is inverted"
    except OSError:
        return None, describe_error(InputError("the mask is not an image Pillow can read"))


def grown(text: str, side: str) -> tuple[str, str]:
    """``text`` (the outpaint field) with ``side`` grown by 128 pixels, and a note."""
    try:
        sides = parse_outpaint(text)
    except InputError as exc:
        return gr.update(), describe_error(exc)
    sides[side] = sides.get(side, 0) + OUTPAINT_STEP
    return format_outpaint(sides), f"outpaint: {format_outpaint(sides)}"


CONTROL_IMAGE_REFUSED = "⚠️ control image "


def canny_preview(studio: Studio, kind: str, control_path: str | None, init_path: str | None, low: float,
                  high: float, width: int, height: int, resize_mode: str, shown: str) -> tuple:
    """(the preview's update, the note): the edge map a canny run follows (of the control image, else the
    start image, fitted to the size) at the thresholds; hidden for other ControlNets or without an image."""
    path = control_path or init_path
    if kind != "canny" or not path:
        return gr.update(value=None, visible=False), gr.update()
    try:
        # Only the control image is this panel's upload to remove; the start image panel checks its own.
        edges = studio.edge_map(path, low, high, size=(int(width), int(height)), resize_mode=resize_mode,
                                remove_if_refused=bool(control_path))
    except InputError as exc:
        return gr.update(value=None, visible=False), f"⚠️ {describe_error(exc)}"
    # A refusal's line stays until an image is read; other notes are not this preview's to clear.
    return gr.update(value=edges, visible=True), ("" if (shown or "").startswith(CONTROL_IMAGE_REFUSED)
                                                   else gr.update())


def wire_inpaint(box: InpaintBox, init_image: gr.Image, studio: Studio, size: list[gr.Component]) -> None:
    """Page-only events: the editor follows the start image; the buttons fill the mask and outpaint fields;
    the canny preview follows the ControlNet, its image, both thresholds and ``size`` (the width, height and
    resize mode sliders and radio)."""
    private = dict(api_visibility="private", queue=False, show_progress="hidden")
    init_image.change(lambda path: path, init_image, box.editor, **private)
    box.use_drawn.click(drawn_mask, box.editor, [box.mask, box.note], **private)
    box.invert.click(inverted, box.mask, [box.mask, box.note], **private)
    box.clear.click(lambda: (None, "the mask is cleared"), None, [box.mask, box.note], **private)
    for side, button in box.grow.items():
        button.click(lambda text, side=side: grown(text, side), box.outpaint, [box.outpaint, box.note], **private)
    box.no_outpaint.click(lambda: ("", "no outpaint"), None, [box.outpaint, box.note], **private)
    # Not queued, so a run holding the GPU never delays it; a dragged threshold draws only its last value.
    sources = [box.control, box.control_image, init_image, box.canny_low, box.canny_high, *size]
    gr.on([source.change for source in sources], functools.partial(canny_preview, studio),
          sources + [box.note], [box.canny_preview, box.note], trigger_mode="always_last", **private)


__all__ = ["InpaintBox", "build_inpaint_box", "canny_preview", "drawn_mask", "grown", "inverted", "wire_inpaint"]
