"""Image to image and the hi-res fix on the Generate tab.

The "Image to image" panel takes a start image (dropped, pasted, or sent from the gallery or the Outputs
tab), its denoise and how it meets the chosen size (crop, fit or stretch), with a small preview of that;
removing the image goes back to text to image. The "Hi-res fix" box sits with the size controls: a
checkbox, the upscale factor, the second pass's denoise and prior steps, and the final size line.

The request's ``hires_scale`` (1.0 = off) is one hidden number, so presets, PNG info and the API set it
like any other field; the checkbox and the factor slider follow it and write it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import gradio as gr
from PIL import Image

from ...core.errors import InputError, describe_error
from ...core.request import HIRES_SCALES, RESIZE_MODES, GenerationRequest, Limits, check_start_image, final_size

RESIZE_CHOICES = [("crop to fill", "crop"), ("fit inside (edges extended)", "fit"), ("stretch", "stretch")]
PREVIEW_SIDE = 160  # the longer side of the preview of how the start image meets the size
EXIF_ORIENTATION, QUARTER_TURNS = 274, (5, 6, 7, 8)  # orientations that swap width and height
DEFAULT_FACTOR = 1.5  # the factor slider's value while the fix is off


@dataclass
class Img2ImgBox:
    """The start image, its denoise and resize mode, and what the page says about them."""

    init_image: gr.Image
    denoise: gr.Slider
    resize_mode: gr.Radio
    preview: gr.Image  # the start image as it meets width x height, small
    note: gr.Markdown
    accordion: gr.Accordion


@dataclass
class HiresBox:
    """The hi-res fix: ``hires_scale`` is the request's field, ``enabled`` and ``factor`` what a person sets."""

    enabled: gr.Checkbox
    factor: gr.Slider
    hires_scale: gr.Number  # hidden: 1.0 when off, else the factor
    hires_denoise: gr.Slider
    hires_steps: gr.Slider
    final_size: gr.Markdown


def build_img2img_box(defaults: GenerationRequest) -> Img2ImgBox:
    """The "Image to image" accordion, laid out where it is called."""
    assert tuple(value for _, value in RESIZE_CHOICES) == RESIZE_MODES
    with gr.Accordion("Image to image: start from a picture", open=False, elem_id="img2img_box") as accordion:
        gr.Markdown("Drop or paste a start image, or send one from the gallery. Remove it to go back to text to "
                    "image.", elem_classes=["hint"])
        with gr.Row(equal_height=True):
            init_image = gr.Image(label="Start image", type="filepath", sources=["upload", "clipboard"],
                                  image_mode=None, height=220, elem_id="init_image", scale=3, min_width=160)
            preview = gr.Image(label="As it meets the size", type="pil", interactive=False, height=220,
                               buttons=[], elem_id="init_preview", scale=2, min_width=120)
        denoise = gr.Slider(0, 1, value=defaults.denoise, step=0.01, label="Denoise",
                            info="0 keeps the start image as it is; 1 ignores it", elem_id="denoise")
        resize_mode = gr.Radio(RESIZE_CHOICES, value=defaults.resize_mode, label="Resize to the size",
                               elem_id="resize_mode")
        note = gr.Markdown(elem_id="init_note")
    return Img2ImgBox(init_image, denoise, resize_mode, preview, note, accordion)


def build_hires_box(defaults: GenerationRequest, limits: Limits) -> HiresBox:
    """The hi-res fix's controls and the final size line, laid out where it is called (with the size)."""
    on = defaults.hires_scale != 1.0
    final_line = gr.Markdown(final_size_text(defaults.width, defaults.height, defaults.hires_scale, limits),
                             elem_id="final_size")
    with gr.Group(elem_id="hires_box"):
        enabled = gr.Checkbox(on, label="Hi-res fix: a second pass at a larger size", elem_id="hires_on")
        hires_scale = gr.Number(defaults.hires_scale, visible=False, elem_id="hires_scale")
        with gr.Row():
            factor = gr.Slider(HIRES_SCALES[0], HIRES_SCALES[1], value=defaults.hires_scale if on else DEFAULT_FACTOR,
                               step=0.05, label="Upscale by", elem_id="hires_factor", min_width=160)
            hires_denoise = gr.Slider(0, 1, value=defaults.hires_denoise, step=0.01, label="Hi-res denoise",
                                      elem_id="hires_denoise", min_width=160)
            hires_steps = gr.Slider(0, min(limits.max_prior_steps, 80), value=defaults.hires_steps, step=1,
                                    label="Hi-res steps", info="0 = as many as the prior's", elem_id="hires_steps",
                                    min_width=160)
    return HiresBox(enabled, factor, hires_scale, hires_denoise, hires_steps, final_line)


def scale_of(enabled: bool, factor: float | None) -> float:
    """The request's ``hires_scale`` from the checkbox and the factor: 1.0 when the fix is off."""
    if not enabled or factor is None:
        return 1.0
    return min(max(float(factor), HIRES_SCALES[0]), HIRES_SCALES[1])


def final_size_text(width: float | None, height: float | None, scale: float | None, limits: Limits) -> str:
    """The line under the size: the image's final size (what the hi-res fix makes of width x height)."""
    try:
        request = GenerationRequest(width=int(width), height=int(height), hires_scale=float(scale or 1.0))
    except (TypeError, ValueError):
        return ""
    if not request.hires:
        return f"Final size: **{request.width}x{request.height}**"
    out_w, out_h = final_size(request)
    line = (f"Final size: **{out_w}x{out_h}** (hi-res fix: first pass {request.width}x{request.height}, "
            f"upscaled x{request.hires_scale:g})")
    if max(out_w, out_h) > limits.max_side or out_w * out_h > limits.max_pixels:
        line += (f" · ⚠️ over the limit of {limits.max_pixels / 1e6:.1f} MP and {limits.max_side} per side: lower "
                 "the factor or the size")
    return line


def _small_upright(path: str) -> tuple[Image.Image, tuple[int, int]]:
    """The start image turned upright (EXIF), shrunk for a preview, and its upright full size."""
    from ...core.images import upright

    with Image.open(path) as source:
        width, height = source.size
        if source.getexif().get(EXIF_ORIENTATION, 1) in QUARTER_TURNS:
            width, height = height, width
        source.draft("RGB", (PREVIEW_SIDE * 2, PREVIEW_SIDE * 2))  # JPEG: decode small, it is only a preview
        image = upright(source)
    image.thumbnail((PREVIEW_SIDE * 4, PREVIEW_SIDE * 4))
    return image, (width, height)


def fit_preview(path: str | None, width: float, height: float, mode: str) -> Image.Image | None:
    """A small picture of the start image as it meets width x height (None without an image)."""
    from ...core.images import fit_to

    if not path:
        return None
    image, _ = _small_upright(path)
    # The same geometry at a small size: fit_to works on ratios, so the preview shows what the run will do.
    shrink = PREVIEW_SIDE / max(float(width), float(height))
    return fit_to(image, max(1, round(float(width) * shrink)), max(1, round(float(height) * shrink)), mode)


def start_note(path: str | None, width: float, height: float, mode: str, denoise: float, prior_steps: float) -> str:
    """What the run will do with the start image, in one line ('' for text to image)."""
    if not path:
        return ""
    _, size = _small_upright(path)
    how = {"crop": "cropped to fill", "fit": "fitted inside", "stretch": "stretched to"}.get(mode, mode)
    steps = round(float(prior_steps) * float(denoise))
    return (f"image to image: the {size[0]}x{size[1]} start image is {how} {int(width)}x{int(height)}; denoise "
            f"{float(denoise):g} runs about {steps} of {int(prior_steps)} prior steps")


def check_start_upload(path: str) -> tuple[int, int]:
    """Check an uploaded start image as it arrives; a refused upload is deleted from the upload cache."""
    try:
        return check_start_image(path)
    except InputError:
        Path(path).unlink(missing_ok=True)
        raise


def wire_img2img(box: Img2ImgBox, width: gr.Slider, height: gr.Slider, prior_steps: gr.Slider) -> None:
    """The preview and the note follow the image, the size, the mode and the denoise."""
    inputs = [box.init_image, width, height, box.resize_mode, box.denoise, prior_steps]

    def shown(path, width_v, height_v, mode, denoise, steps):
        if not path:
            return None, ""
        try:
            note = start_note(path, width_v, height_v, mode, denoise, steps)
            return fit_preview(path, width_v, height_v, mode), note
        except Exception as exc:  # an unreadable file: say so, the run refuses it with the same line
            return None, f"⚠️ {describe_error(exc)}"

    gr.on([box.init_image.change, width.change, height.change, box.resize_mode.change, box.denoise.change,
           prior_steps.change], shown, inputs, [box.preview, box.note], api_visibility="private", queue=False,
          show_progress="hidden", trigger_mode="always_last")

    def checked(path):
        """A refused start image leaves the panel at once (its upload is deleted), with the reason."""
        if not path:
            return gr.update(), gr.update()
        try:
            check_start_upload(path)
        except Exception as exc:
            message = describe_error(exc)
            gr.Warning(message)
            return None, f"⚠️ {message}"
        return gr.update(), gr.update()

    box.init_image.upload(checked, box.init_image, [box.init_image, box.note], api_visibility="private",
                          show_progress="hidden")


def sent_to_panel(path: str, what: str) -> tuple:
    """Updates of (the start image, the panel's accordion, the note) for an image sent to the panel."""
    return path, gr.Accordion(open=True), f"{what} is the start image of image to image"


def wire_hires(box: HiresBox, width: gr.Slider, height: gr.Slider, limits: Limits) -> None:
    """The checkbox and the factor write ``hires_scale``; a value set from elsewhere (a preset, PNG info,
    a reload) is shown on them; the final size line follows the size and the scale."""

    def written(enabled, factor):
        return scale_of(enabled, factor)

    # Only a person's changes write the field, so setting the field from elsewhere never loops back.
    gr.on([box.enabled.input, box.factor.input, box.factor.release], written, [box.enabled, box.factor],
          box.hires_scale, api_visibility="private", queue=False, show_progress="hidden", trigger_mode="always_last")

    def follow(scale):
        try:
            scale = float(scale)
        except (TypeError, ValueError):
            return gr.update(), gr.update()
        if scale == 1.0:
            return False, gr.update()
        return True, scale

    box.hires_scale.change(follow, box.hires_scale, [box.enabled, box.factor], api_visibility="private",
                           queue=False, show_progress="hidden")

    def line(width_v, height_v, scale):
        return final_size_text(width_v, height_v, scale, limits)

    gr.on([width.change, height.change, box.hires_scale.change], line, [width, height, box.hires_scale],
          box.final_size, api_visibility="private", queue=False, show_progress="hidden", trigger_mode="always_last")


__all__ = ["HiresBox", "Img2ImgBox", "build_hires_box", "build_img2img_box", "check_start_upload",
           "final_size_text", "fit_preview", "scale_of", "sent_to_panel", "start_note", "wire_hires", "wire_img2img"]
