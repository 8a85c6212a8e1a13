"""The request's controls: the prompt box, the trained-tag pickers, size (with the hi-res fix and the final
size), steps, CFG, seed and count, the "Image to image" panel, and the prompt padding and each stage's
sampler and shift under "Advanced".

The controls come in the request's field order (:data:`~sote_ui.core.request.FIELD_NAMES`),
so a list of values maps onto them one to one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import gradio as gr

from ...core import tags
from ...core.request import DECODER_SAMPLERS, FIELD_NAMES, PRIOR_SAMPLERS, PROMPT_PADDINGS, SHIFTS, GenerationRequest
from ...service.studio import Studio
from ..form import RESOLUTIONS, size_to_resolution, snap_side
from .img2img_box import HiresBox, Img2ImgBox, build_hires_box, build_img2img_box, wire_hires, wire_img2img
from .inpaint_box import InpaintBox, build_inpaint_box, wire_inpaint
from .lora_box import LoraBox, build_lora_box

INPAINT_FIELDS = ("mask", "mask_blur", "inpaint_area", "outpaint", "control", "control_image", "control_strength",
                  "control_start", "control_end", "canny_low", "canny_high")

RANDOM_SEED_LABEL = "Seed (-1 = random)"
PADDING_CHOICES = [("unmasked: as the model was trained (default)", PROMPT_PADDINGS[0]),
                   ("masked: as diffusers and the model card's script", PROMPT_PADDINGS[1])]
SAMPLER_LABELS = {"ddpm": "DDPM (default)", "dpmpp_2m": "DPM++ 2M (SGM uniform)",
                  "euler_a": "Euler a", "lcm": "LCM"}


def sampler_choices(names) -> list[tuple[str, str]]:
    return [(SAMPLER_LABELS.get(name, name), name) for name in names]


def _choices(values) -> list[tuple[str, str]]:
    return [("none", tags.NONE)] + [(v, v) for v in values]


@dataclass
class Controls:
    """The request controls, in the request's field order."""

    prompt: gr.Textbox
    negative_prompt: gr.Textbox
    aesthetic: gr.Dropdown
    quality: gr.Dropdown
    date: gr.Dropdown
    custom: gr.Dropdown
    rating: gr.Dropdown
    artist: gr.Textbox
    width: gr.Slider
    height: gr.Slider
    seed: gr.Number
    prior_steps: gr.Slider
    prior_cfg: gr.Slider
    decoder_steps: gr.Slider
    decoder_cfg: gr.Slider
    count: gr.Slider
    prompt_padding: gr.Radio
    init_image: gr.Image
    denoise: gr.Slider
    resize_mode: gr.Radio
    hires_scale: gr.Number  # hidden: the hi-res box's checkbox and factor write it
    hires_denoise: gr.Slider
    hires_steps: gr.Slider
    prior_sampler: gr.Dropdown
    decoder_sampler: gr.Dropdown
    prior_shift: gr.Slider
    decoder_shift: gr.Slider
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
    resolution_picker: gr.Dropdown  # not a request field: it sets width and height
    composed: gr.Markdown  # the prompt as sent and its token count, under the prompt box
    random_seed: gr.Button
    reuse_seed: gr.Button
    size_note: gr.Markdown
    img2img: Img2ImgBox  # the start image's panel: its preview and note besides the fields above
    hires: HiresBox  # the hi-res fix's checkbox, factor and final size line
    inpaint: InpaintBox  # the mask editor, outpaint and ControlNet panel
    # LoRA: the request's ``loras`` control lives in the picker's box
    lora_box: LoraBox | None = None

    @property
    def loras(self) -> gr.Dropdown:
        return self.lora_box.value

    def as_list(self) -> list:
        return [getattr(self, name) for name in FIELD_NAMES]

    def form(self) -> list:
        """Every request control, then the Resolution picker (kept in step with the sizes)."""
        return self.as_list() + [self.resolution_picker]


def updates_for(values: dict[str, Any]) -> list:
    """gr.update per request control for the keys present in ``values`` (others untouched)."""
    return [gr.update(value=values[name]) if name in values else gr.update() for name in FIELD_NAMES]


def build_controls(studio: Studio, defaults: GenerationRequest,
                   under_prompt: Callable[[], None] | None = None) -> Controls:
    """Lay out the controls; ``under_prompt`` places more (the prompt fixer) under the prompt box's line."""
    limits = studio.config.limits
    with gr.Group():
        prompt = gr.Textbox(label="Your tags", placeholder="1girl, solo, cowboy shot, smile, hoodie, indoors",
                            lines=3, value=defaults.prompt, elem_id="prompt")
        composed = gr.Markdown(elem_id="composed", padding=True)
        if under_prompt is not None:
            under_prompt()
        with gr.Row(equal_height=True):
            aesthetic = gr.Dropdown(_choices(tags.AESTHETIC), value=defaults.aesthetic, label="Aesthetic",
                                    elem_id="aesthetic", min_width=200)
            quality = gr.Dropdown(_choices(tags.QUALITY), value=defaults.quality, label="Quality",
                                  elem_id="quality", min_width=200)
            date = gr.Dropdown([("none", tags.NONE)] + [(f"{k} ({v})", k) for k, v in tags.DATE.items()],
                               value=defaults.date, label="Date", elem_id="date", min_width=200)
        with gr.Row(equal_height=True):
            rating = gr.Dropdown(_choices(tags.RATING), value=defaults.rating, label="Rating", elem_id="rating",
                                 min_width=200)
            custom = gr.Dropdown(_choices(tags.CUSTOM), value=defaults.custom, label="Source tag",
                                 elem_id="custom", min_width=200)
            artist = gr.Textbox(label="Pixiv artist ('art by NAME')", value=defaults.artist, elem_id="artist",
                                min_width=200)
        negative_prompt = gr.Textbox(label="Negative prompt", value=defaults.negative_prompt, lines=2,
                                     elem_id="negative_prompt")
    lora_box = build_lora_box(defaults.loras)
    with gr.Accordion("Size, steps, CFG and seed", open=True, elem_id="size_steps"):
        resolution = gr.Dropdown(RESOLUTIONS, value=size_to_resolution(defaults.width, defaults.height),
                                 label="Resolution", elem_id="resolution")
        with gr.Row():
            width = gr.Slider(limits.min_side, min(limits.max_side, 2560), value=defaults.width, step=128,
                              label="Width", elem_id="width")
            height = gr.Slider(limits.min_side, min(limits.max_side, 2560), value=defaults.height, step=128,
                               label="Height", elem_id="height")
        size_note = gr.Markdown(elem_id="size_note")
        hires = build_hires_box(defaults, limits)
        with gr.Row():
            prior_steps = gr.Slider(1, min(limits.max_prior_steps, 80), value=defaults.prior_steps, step=1,
                                    label="Prior steps (stage C)")
            prior_cfg = gr.Slider(0, min(limits.max_cfg, 20), value=defaults.prior_cfg, step=0.1,
                                  label="Prior CFG")
        with gr.Row():
            decoder_steps = gr.Slider(1, min(limits.max_decoder_steps, 40), value=defaults.decoder_steps, step=1,
                                      label="Decoder steps (stage B)")
            decoder_cfg = gr.Slider(0, min(limits.max_cfg, 5), value=defaults.decoder_cfg, step=0.1,
                                    label="Decoder ('secondary') CFG; applied above 1")
        with gr.Row(equal_height=True, elem_id="seed_row"):
            seed = gr.Number(value=defaults.seed, label=RANDOM_SEED_LABEL, minimum=-1, step=1, elem_id="seed",
                             min_width=180, scale=4)
            with gr.Column(scale=0, min_width=110, elem_classes=["seed-tools"]):
                random_seed = gr.Button("⚄ random", elem_id="random_seed", size="sm", min_width=100)
                reuse_seed = gr.Button("♻ last seed", elem_id="reuse_seed", size="sm", min_width=100)
            count = gr.Slider(1, limits.max_count, value=defaults.count, step=1, label="Images", scale=4,
                              min_width=180)
    img2img = build_img2img_box(defaults)
    inpaint = build_inpaint_box(defaults)
    with gr.Accordion("Advanced", open=False, elem_id="advanced"):
        prompt_padding = gr.Radio(PADDING_CHOICES, value=defaults.prompt_padding, label="Prompt padding",
                                  info="How the text encoder sees the padding after your prompt's end",
                                  elem_id="prompt_padding")
        with gr.Row(equal_height=True):
            prior_sampler = gr.Dropdown(sampler_choices(PRIOR_SAMPLERS), value=defaults.prior_sampler,
                                        label="Prior sampler (stage C)", elem_id="prior_sampler", min_width=200)
            prior_shift = gr.Slider(SHIFTS[0], SHIFTS[1], value=defaults.prior_shift, step=0.05,
                                    label="Prior shift", info="1 = none; Stability's code: 2", elem_id="prior_shift", min_width=200)
        with gr.Row(equal_height=True):
            decoder_sampler = gr.Dropdown(sampler_choices(DECODER_SAMPLERS), value=defaults.decoder_sampler,
                                          label="Decoder sampler (stage B)", elem_id="decoder_sampler",
                                          min_width=200)
            decoder_shift = gr.Slider(SHIFTS[0], SHIFTS[1], value=defaults.decoder_shift, step=0.05,
                                      label="Decoder shift", info="1 = none, as Stability's code",
                                      elem_id="decoder_shift", min_width=200)
    random_seed.click(lambda: -1, None, seed, api_visibility="private", queue=False, show_progress="hidden")
    resolution.input(_resolution_to_size, resolution, [width, height, size_note], api_visibility="private",
                     queue=False, show_progress="hidden")
    # A typed size that is not a multiple of 128 snaps when the field is left; the picker follows.
    # Each handler writes only its own slider, so a stale value of the other one is never written back.
    width.release(_snap_width, [width, height], [width, resolution, size_note], api_visibility="private",
                  queue=False, show_progress="hidden")
    height.release(_snap_height, [width, height], [height, resolution, size_note], api_visibility="private",
                   queue=False, show_progress="hidden")
    wire_img2img(img2img, width, height, prior_steps)
    wire_inpaint(inpaint, img2img.init_image, studio, [width, height, img2img.resize_mode])
    wire_hires(hires, width, height, limits)
    return Controls(
        prompt=prompt, negative_prompt=negative_prompt, aesthetic=aesthetic, quality=quality, date=date,
        custom=custom, rating=rating, artist=artist, width=width, height=height, seed=seed,
        prior_steps=prior_steps, prior_cfg=prior_cfg, decoder_steps=decoder_steps, decoder_cfg=decoder_cfg,
        count=count, prompt_padding=prompt_padding, init_image=img2img.init_image, denoise=img2img.denoise,
        resize_mode=img2img.resize_mode, hires_scale=hires.hires_scale, hires_denoise=hires.hires_denoise,
        hires_steps=hires.hires_steps, prior_sampler=prior_sampler, decoder_sampler=decoder_sampler,
        prior_shift=prior_shift, decoder_shift=decoder_shift, resolution_picker=resolution, composed=composed,
        random_seed=random_seed, reuse_seed=reuse_seed, size_note=size_note, img2img=img2img, hires=hires,
        lora_box=lora_box, inpaint=inpaint, **{name: getattr(inpaint, name) for name in INPAINT_FIELDS})


def _snap(key: str, value: float, width: float, height: float):
    snapped = snap_side(value or 128)
    sizes = {"width": width, "height": height, key: snapped}
    picker = size_to_resolution(sizes["width"], sizes["height"])
    if snapped == value:
        return gr.update(), picker, gr.update()
    return snapped, picker, f"{key} {value:g} snapped to {snapped} (sizes are multiples of 128)"


def _snap_width(width: float, height: float):
    return _snap("width", width, width, height)


def _snap_height(width: float, height: float):
    return _snap("height", height, width, height)


def _resolution_to_size(choice: str):
    if not choice or choice == "custom" or "x" not in choice:
        return gr.update(), gr.update(), ""
    width, height = (int(v) for v in choice.split("x"))
    return width, height, ""

