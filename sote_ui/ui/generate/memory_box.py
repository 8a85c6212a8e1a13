"""The memory mode box: the device, the mode in use, what each mode needs, and switching without a restart.

Switching frees the old mode's memory first. Modes this device can't run are
listed once with their reason, and the picker offers only the others.
"""

from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from ...core.memory import MODE_HELP, Mode
from ...service.studio import Studio
from ..wiring import user_error


@dataclass
class MemoryBox:
    mode: gr.Dropdown
    device_info: gr.Markdown


def build_memory_box(studio: Studio) -> MemoryBox:
    with gr.Accordion("Memory mode", open=False):
        mode = gr.Dropdown([(f"{m.value}: {MODE_HELP[m]}", m.value) for m in Mode],
                           value=studio.config.mode, label="Memory mode", elem_id="mode",
                           interactive=studio.config.mode_switch)
        device_info = gr.Markdown(elem_id="device_info")
    return MemoryBox(mode, device_info)


def device_markdown(studio: Studio) -> str:
    """The device, the mode, and a table of the modes this device can run with what each needs."""
    report = studio.device_report()
    lines = [f"**Device:** {report['device']}  \n**Mode:** {report['mode']}"]
    if report.get("reason"):
        lines.append(f"  \n{report['reason']}")
    usable = [(m, need) for m, need, note in report["modes"] if not note]
    refused: dict[str, list[str]] = {}
    for m, _need, note in report["modes"]:
        if note:  # reasons name their mode ("offload-fp8 moves models..."): group by the rest
            reason = note[len(m):].strip() if note.startswith(m) else note
            refused.setdefault(reason, []).append(f"`{m}`")
    if usable:
        lines.append("\n\n| mode | needs at 1024x1536 |\n|---|---|")
        lines += [f"| `{m}` | {need} |" for m, need in usable]
    if refused:
        lines.append("\n\n*Not on this device:*")
        lines += [f"\n- {', '.join(modes)}: {reason}" for reason, modes in refused.items()]
    return "".join(lines[:2]) + "\n".join(lines[2:])


def mode_choices(studio: Studio):
    """The picker's choices (auto, the current mode, and the modes this device can run) and its value."""
    report = studio.device_report()
    usable = {m for m, _need, note in report["modes"] if not note} if report["modes"] else None
    current = report["mode"] if report["mode"] not in ("not loaded", "not detected yet") else studio.config.mode
    choices = [(f"{m.value}: {MODE_HELP[m]}", m.value) for m in Mode
               if usable is None or m.value in usable or m == Mode.AUTO or m.value == current]
    return gr.update(choices=choices, value=current)


def wire_memory_box(studio: Studio, box: MemoryBox, status) -> None:
    """The picker switches the mode on the page; ``/set_mode`` does the same for API clients."""

    def switch_mode(new_mode: str, progress=gr.Progress()):
        progress(0, desc=f"switching to {new_mode}")
        try:
            studio.set_mode(new_mode)
        except Exception as exc:
            raise user_error(exc) from None
        return device_markdown(studio), studio.status()

    def switch_mode_in_page(new_mode: str, progress=gr.Progress()):
        """As /set_mode, but a refused mode puts the picker back on the mode the engine is in."""
        try:
            return (*switch_mode(new_mode, progress), mode_choices(studio))
        except gr.Error as exc:
            gr.Warning(exc.message)
            return device_markdown(studio), f"⚠️ {exc.message}", mode_choices(studio)

    box.mode.input(switch_mode_in_page, box.mode, [box.device_info, status, box.mode], api_visibility="private",
                   concurrency_id="gpu")
    gr.Button(visible=False).click(switch_mode, box.mode, [box.device_info, status], api_name="set_mode",
                                   concurrency_id="gpu")
