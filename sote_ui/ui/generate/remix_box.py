"""Image remix on the page: one card per reference image, each with its thumbnail and its own strength.

The cards feed two hidden fields, the reference files and their strengths, which are what ``/generate``
and ``/draft`` take (API clients send them directly). A strength belongs to its card: removing an image
takes its strength with it. Adding the first image checks that the image encoder can be had.
"""

from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from ...core.errors import ModelError, describe_error
from ...core.request import MAX_REFERENCES, MAX_STRENGTH
from ...service.studio import Studio


@dataclass
class RemixBox:
    images: list  # one gr.Image per card
    strengths: list  # one gr.Slider per card
    files: gr.File  # hidden: the references as /generate takes them
    strengths_text: gr.Textbox  # hidden: their strengths, in the same order
    note: gr.Markdown


def build_remix_box() -> RemixBox:
    with gr.Accordion("Image remix: steer the composition with reference images", open=False, elem_id="remix_box"):
        gr.Markdown(f"Up to {MAX_REFERENCES} images; each card's strength (0 to {MAX_STRENGTH:g}, 0 leaves the "
                    "image out) goes with its image.", elem_classes=["hint"])
        images, strengths = [], []
        with gr.Row(elem_id="remix_cards"):
            for index in range(MAX_REFERENCES):
                with gr.Column(min_width=120, elem_classes=["remix-card"]):
                    images.append(gr.Image(label=f"Reference {index + 1}", type="filepath", sources=["upload", "clipboard"],
                                           height=140, elem_id=f"remix_image_{index + 1}"))
                    strengths.append(gr.Slider(0, MAX_STRENGTH, value=1.0, step=0.05, label="Strength",
                                               elem_id=f"remix_strength_{index + 1}"))
        note = gr.Markdown(elem_id="remix_note")
        files = gr.File(file_count="multiple", file_types=["image"], type="filepath", visible=False,
                        elem_id="remix_images")
        strengths_text = gr.Textbox(visible=False, elem_id="remix_strengths")
    return RemixBox(images, strengths, files, strengths_text, note)


def card_values(values: list) -> tuple[list[str], str]:
    """(the cards' image files, their strengths as one text) for the images present, in card order."""
    count = len(values) // 2
    pairs = [(path, strength) for path, strength in zip(values[:count], values[count:]) if path]
    return [path for path, _ in pairs], ", ".join(f"{float(strength):g}" for _, strength in pairs)


def wire_remix(studio: Studio, box: RemixBox) -> None:
    cards = box.images + box.strengths

    def sync(*values):
        paths, strengths = card_values(list(values))
        return paths or None, strengths

    for control in cards:
        control.change(sync, cards, [box.files, box.strengths_text], api_visibility="private", queue=False,
                       show_progress="hidden")

    def check_in_page(path):
        """The note for an added image; a refused image also leaves its card (its upload is deleted)."""
        if not path:
            return gr.update(), gr.update()
        try:
            return studio.remix_check(path), gr.update()
        except ModelError as exc:  # the image is fine; the encoder can't be had
            message = describe_error(exc)
            gr.Warning(message)
            return f"⚠️ {message}", gr.update()
        except Exception as exc:
            message = describe_error(exc)
            gr.Warning(message)
            return f"⚠️ {message}", None

    for image in box.images:
        image.upload(check_in_page, image, [box.note, image], api_visibility="private", show_progress="hidden")
