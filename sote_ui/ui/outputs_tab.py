"""The Outputs tab: every image of the outputs folder, newest first, 24 to a page; an image's settings, "Reuse
settings" to Generate, "Send to image-to-image", and delete to the folder's trash with Undo.

Only names of images directly in the outputs folder are acted on (the studio resolves and checks each);
where the server keeps no outputs folder (a Space), the tab says so and shows nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import gradio as gr

from ..core.errors import describe_error
from ..core.outputs_index import TRASH_DAYS
from ..core.request import FIELD_NAMES
from ..service.studio import Studio
from .form import form_updates
from .generate import GenerateTab
from .wiring import wire

NO_FOLDER = ("**This server keeps no outputs folder:** images live only for the session. Download the ones you "
             "want to keep from the Generate tab's gallery.")
MAX_UNDO = 20


@dataclass
class OutputsView:
    """What one browser session's Outputs tab shows: its page, the names on it, the selection, what Undo brings back."""

    page: int = 1
    names: list[str] = field(default_factory=list)
    selected: str | None = None
    trashed: list[tuple[str, str]] = field(default_factory=list)  # (token, name), the last deleted last


def describe(values: dict, name: str) -> str:
    """The line about a selected image: seed, size, steps and its file name."""
    parts = [f"seed {values['seed']}" if "seed" in values else "no seed stored"]
    if "width" in values and "height" in values:
        parts.append(f"{values['width']}x{values['height']}")
    if "prior_steps" in values:
        parts.append(f"prior {values['prior_steps']} steps at CFG {values.get('prior_cfg', '?')}")
    if "decoder_steps" in values:
        parts.append(f"decoder {values['decoder_steps']} steps at CFG {values.get('decoder_cfg', '?')}")
    return f"selected: {', '.join(parts)} · `{name}`"


def build_outputs_tab(studio: Studio, generate: GenerateTab, tabs: gr.Tabs, generate_tab_id: str,
                      tab: gr.Tab) -> None:
    """Lay out the tab; it lists the folder each time it is opened."""
    if studio.outputs_folder is None:
        gr.Markdown(NO_FOLDER, elem_id="outputs_none")
        return
    studio.empty_old_trash()  # at start: what was deleted more than 7 days ago goes for good
    view = gr.State(OutputsView())
    with gr.Row(equal_height=True, elem_id="outputs_pager"):
        newer = gr.Button("◀ Newer", size="sm", elem_id="outputs_newer", min_width=90)
        where = gr.Markdown(elem_id="outputs_page")
        older = gr.Button("Older ▶", size="sm", elem_id="outputs_older", min_width=90)
        refresh = gr.Button("↻ Refresh", size="sm", elem_id="outputs_refresh", min_width=90)
    gallery = gr.Gallery(label="The outputs folder, newest first", columns=4, height=560, format="png",
                         object_fit="contain", preview=False, elem_id="outputs_gallery",
                         buttons=["download", "fullscreen"])
    with gr.Row(elem_id="outputs_actions"):
        reuse = gr.Button("Reuse settings", size="sm", elem_id="outputs_reuse", min_width=100)
        to_img2img = gr.Button("Send to image-to-image", size="sm", elem_id="outputs_to_img2img", min_width=100)
        deletable = studio.outputs_deletable
        delete = gr.Button("Delete", size="sm", variant="stop", elem_id="outputs_delete", min_width=100,
                           visible=deletable)
        undo = gr.Button("Undo delete", size="sm", elem_id="outputs_undo", min_width=100, interactive=False,
                         visible=deletable)
    info = gr.Markdown(elem_id="outputs_info")
    prompt = gr.Textbox(label="Prompt of the selected image", interactive=False, lines=2, buttons=["copy"],
                        elem_id="outputs_prompt")
    note = gr.Markdown(elem_id="outputs_note")

    def show(state: OutputsView, page: int):
        listing = studio.list_outputs(page)
        state.page, state.selected = listing.page, None
        state.names = [f.name for f in listing.files]
        items = [(str(f.path), f.name) for f in listing.files]
        line = (f"page {listing.page} of {listing.pages} · {listing.total} images" if listing.total
                else "no images in the outputs folder yet")
        return (state, gr.Gallery(value=items, selected_index=None), line, "", "",
                gr.update(interactive=listing.page > 1), gr.update(interactive=listing.page < listing.pages),
                gr.update(interactive=bool(state.trashed)))

    listed = [view, gallery, where, info, prompt, newer, older, undo]

    def opened(state: OutputsView | None):
        state = state or OutputsView()
        return show(state, state.page)

    def turn(step: int):
        def page(state: OutputsView | None):
            state = state or OutputsView()
            return show(state, state.page + step)
        return page

    wire(tab.select, opened, view, listed, note=3)
    wire(refresh.click, opened, view, listed, note=3)
    wire(newer.click, turn(-1), view, listed, note=3)
    wire(older.click, turn(1), view, listed, note=3)

    def select(state: OutputsView, evt: gr.SelectData):
        if not state or evt.index is None or evt.index >= len(state.names):
            return state, gr.update(), gr.update()
        name = state.names[evt.index]
        state.selected = name
        try:
            _, _, values = studio.output_settings(name)
        except Exception as exc:  # an image without stored settings (or one just removed) is still listed
            return state, f"`{name}`: {describe_error(exc)}", ""
        return state, describe(values, name), values.get("prompt", "")

    gallery.select(select, view, [view, info, prompt], api_visibility="private", show_progress="hidden")

    def chosen(state: OutputsView | None) -> str:
        if not state or not state.selected:
            raise gr.Error("select an image first", print_exception=False)
        return state.selected

    def reuse_settings(state: OutputsView | None):
        name = chosen(state)
        _, _, values = studio.output_settings(name)
        updates, notes = form_updates({k: v for k, v in values.items() if k in FIELD_NAMES})
        message = " · ".join([f"applied the settings of {name}"] + notes)
        return (*updates, message, message, gr.Tabs(selected=generate_tab_id))

    wire(reuse.click, reuse_settings, view, generate.form + [generate.image_note, note, tabs],
         note=len(generate.form) + 1)

    def send_to_img2img(state: OutputsView | None):
        name = chosen(state)
        path, _, _ = studio.output_settings(name)
        message = f"`{name}` is the start image of image to image"
        return (*generate.send_to_img2img(path, f"`{name}`"), message, gr.Tabs(selected=generate_tab_id))

    wire(to_img2img.click, send_to_img2img, view, generate.img2img_outputs + [note, tabs],
         note=len(generate.img2img_outputs))

    def delete_selected(state: OutputsView | None):
        name = chosen(state)
        token = studio.trash_output(name)
        state.trashed = (state.trashed + [(token, name)])[-MAX_UNDO:]
        return (*show(state, state.page),
                f"moved `{name}` to the outputs folder's trash: Undo brings it back (the trash is emptied of "
                f"what is older than {TRASH_DAYS} days at each start)")

    def undo_delete(state: OutputsView | None):
        if not state or not state.trashed:
            raise gr.Error("nothing to undo", print_exception=False)
        token, name = state.trashed.pop()
        restored = studio.restore_output(token)
        again = "" if restored == name else f" as `{restored}` (the name was taken)"
        return (*show(state, state.page), f"brought `{name}` back{again}")

    wire(delete.click, delete_selected, view, listed + [note], note=len(listed))
    wire(undo.click, undo_delete, view, listed + [note], note=len(listed))
