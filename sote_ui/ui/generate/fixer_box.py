"""The prompt fixer under the prompt box: one click per fix, "Fix all", and an undo.

The findings (:mod:`sote_ui.core.fixer`) follow the prompt as it is typed; a
click on one applies its fix, "Fix all" every fix, "Undo fix" puts the prompt
back as it was before the last fix. ``/fix_prompt`` (text in; the fixed text
and the findings out) is the same fixer for scripts.

Example::

    box = build_fixer_box()                            # components made, not yet placed
    controls = build_controls(studio, defaults, under_prompt=box.render)
    wire_fixer_box(studio, box, tag_inputs(controls))
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import gradio as gr

from ...core import fixer, tags
from ...service.studio import Studio

LIST_LABEL = "Fixes: click one to apply it"


@dataclass
class FixerBox:
    fix_all: gr.Button
    undo: gr.Button
    fixes: gr.Dataset
    before: gr.State  # the prompt as it was before the last fix

    def render(self) -> None:
        """Place the box where it is called (under the prompt box)."""
        with gr.Row(elem_id="fixer_box"):
            self.fix_all.render()
            self.undo.render()
        self.fixes.render()
        self.before.render()


def build_fixer_box() -> FixerBox:
    """The box's components, placed later by :meth:`FixerBox.render`."""
    return FixerBox(
        gr.Button("Fix all", size="sm", elem_id="fix_all", render=False, interactive=False),
        gr.Button("Undo fix", size="sm", elem_id="fix_undo", render=False, interactive=False),
        gr.Dataset(components=["textbox"], samples=[], headers=[LIST_LABEL], type="index", samples_per_page=12,
                   label=LIST_LABEL, elem_id="fix_list", visible=False, render=False),
        gr.State(None, render=False),
    )


def counter_for(studio: Studio, picks: tuple) -> Callable[[str], list[int] | None]:
    """Chunk counts of the prompt as it is sent (the picked tags first), for the tags past the third chunk."""

    def counts(text: str) -> list[int] | None:
        aesthetic, quality, date, custom, rating, artist = picks
        try:
            return studio.chunk_counts(tags.compose_prompt(text, aesthetic=aesthetic, quality=quality, date=date,
                                                           custom=custom, rating=rating, artist=artist))
        except ValueError:  # a pick the request refuses: Generate says so
            return None

    return counts


WHY = {"unknown": "not a Danbooru tag", "spelling": "as the model was trained", "alias": "Danbooru's alias",
       "untrained": "not trained with", "duplicate": "a repeat", "past_chunks": "past the third chunk",
       "lora": "no such LoRA here, or not supported"}


def row_text(finding: fixer.Finding) -> str:
    """One short line per fix (the list cuts long ones): ``“lnog hair” → “long hair” (not a Danbooru tag)``."""
    change = f"drop “{finding.tag}”" if finding.fix == "" else f"“{finding.tag}” → “{finding.fix}”"
    return f"{change} ({WHY.get(finding.kind, finding.kind)})"


def listing(findings: list[fixer.Finding]) -> tuple[Any, Any]:
    """The Dataset's update and Fix all's, for these findings."""
    rows = [[row_text(f)] for f in findings if f.fix is not None]
    return (gr.Dataset(samples=rows or [[""]], visible=bool(rows)), gr.Button(interactive=bool(rows)))


def fix_prompt(text: str, studio: Studio | None = None) -> tuple[str, list[dict]]:
    """``(fixed text, findings)`` for ``text``: each finding has ``kind``, ``tag``, ``fix``, ``action``
    (replace, drop or none), ``message`` and ``options`` (see :mod:`sote_ui.core.fixer`)."""
    return fixer.fix_prompt(str(text or ""), studio.chunk_counts if studio is not None else None)


def wire_fixer_box(studio: Studio, box: FixerBox, tag_inputs: list) -> None:
    """Keep the list in step with the prompt and wire the fixes; add ``/fix_prompt``.

    ``tag_inputs`` are the prompt box and then the tag pickers, in
    :func:`sote_ui.core.tags.compose_prompt`'s order.
    """
    prompt = tag_inputs[0]

    def fixable(text: str, *picks) -> list[fixer.Finding]:
        # typing: as on the line above, the tag still being typed is not offered a fix yet
        return [f for f in fixer.analyze(text, counter_for(studio, picks), typing=True) if f.fix is not None]

    def refresh(text, *picks):
        if not fixer.ready():  # the lookups are still being built: the list comes with the next change
            return gr.Dataset(), gr.Button()
        return listing(fixable(text, *picks))

    def apply_one(index, text, *picks):
        findings = fixable(text, *picks)
        if index is None or not 0 <= int(index) < len(findings):
            return gr.update(), gr.update(), gr.update()
        return fixer.apply(text, [findings[int(index)]]), text, gr.Button(interactive=True)

    def apply_all(text, *picks):
        fixed = fixer.fix_all(text, counter_for(studio, picks))
        if fixed == text:
            return gr.update(), gr.update(), gr.update()
        return fixed, text, gr.Button(interactive=True)

    def undo(before):
        if before is None:
            return gr.update(), None, gr.Button(interactive=False)
        return before, None, gr.Button(interactive=False)

    private = {"api_visibility": "private", "queue": False, "show_progress": "hidden"}
    for component in tag_inputs:
        component.change(refresh, tag_inputs, [box.fixes, box.fix_all], trigger_mode="always_last", **private)
    box.fixes.click(apply_one, [box.fixes, *tag_inputs], [prompt, box.before, box.undo], **private)
    box.fix_all.click(apply_all, tag_inputs, [prompt, box.before, box.undo], **private)
    box.undo.click(undo, box.before, [prompt, box.before, box.undo], **private)

    def fix_prompt_api(text: str) -> tuple[str, list[dict[str, Any]]]:
        """The prompt with every fix applied, and the findings (kind, tag, fix, action, message, options)."""
        return fix_prompt(text, studio)

    gr.api(fix_prompt_api, api_name="fix_prompt", queue=False)
    fixer.warm_up()


__all__ = ["FixerBox", "build_fixer_box", "fix_prompt", "wire_fixer_box"]
