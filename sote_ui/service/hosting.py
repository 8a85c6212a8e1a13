"""Running as a Hugging Face Space, ZeroGPU included.

On Spaces (``SPACE_ID`` set) the app binds to all interfaces, keeps images in
a temporary folder only (unless ``SOTE_OUTPUTS`` names one), turns off saving
presets into a folder every visitor shares, and limits image count and size
to what a shared GPU can serve. On ZeroGPU (the ``spaces`` package importable
and ``SPACES_ZERO_GPU`` set) the models sit on ``cuda`` from the start (no CPU
offload, no torch.compile), and :mod:`sote_ui.service.jobs` runs each job
inside ``spaces.GPU``.

No torch, no gradio.

Example::

    config = for_environment(StudioConfig())      # unchanged when not on Spaces
"""

from __future__ import annotations

import os
from dataclasses import replace
from typing import Any

from ..core.request import Limits

SPACES_LIMITS = Limits(max_pixels=2048 * 1152, max_side=2048, max_count=4, max_prior_steps=60,
                       max_decoder_steps=30, max_prompt_chars=4000)


def on_spaces() -> bool:
    return bool(os.environ.get("SPACE_ID"))


def zero_gpu() -> bool:
    """True on a ZeroGPU Space: the ``spaces`` package is importable and the Space asks for ZeroGPU."""
    if not on_spaces() or not os.environ.get("SPACES_ZERO_GPU"):
        return False
    try:
        import spaces  # noqa: F401
    except ImportError:
        return False
    return True


def for_environment(config):
    """The Studio config adjusted for a Space (returned unchanged elsewhere)."""
    if not on_spaces():
        return config
    changes: dict[str, Any] = {
        "outputs": os.environ.get("SOTE_OUTPUTS") or None,
        "presets_dir": None,
        "limits": SPACES_LIMITS,
        "mode_switch": False,  # one visitor must not change the mode for everyone
    }
    if zero_gpu():
        # ZeroGPU attaches a GPU only inside the decorated call; models must sit on cuda from the start.
        changes.update(mode="bf16", device="cuda")
    return replace(config, **changes)


def server_name(requested: str | None) -> str:
    if requested:
        return requested
    return "0.0.0.0" if on_spaces() else "127.0.0.1"
