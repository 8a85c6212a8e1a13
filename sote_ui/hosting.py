"""Running as a Hugging Face Space, ZeroGPU included.

On Spaces (``SPACE_ID`` set) the app binds to all interfaces, keeps images in
a temporary folder only (unless ``SOTE_OUTPUTS`` names one), turns off saving
presets into a folder every visitor shares, and limits image count and size
to what a shared GPU can serve. On ZeroGPU (the ``spaces`` package importable
and ``SPACES_ZERO_GPU`` set) the GPU-bound call is wrapped with
``spaces.GPU``, its duration computed from steps, size and image count; the
models sit on ``cuda`` from the start (no CPU offload, no torch.compile).

No torch, no gradio.

Example::

    config = for_environment(StudioConfig())      # unchanged when not on Spaces
    run = gpu_runner()                            # identity off ZeroGPU
    result = run(lambda: engine.generate(request), gpu_seconds(request))
"""

from __future__ import annotations

import os
from dataclasses import replace
from typing import Any, Callable

from .request import GenerationRequest, Limits

SPACES_LIMITS = Limits(max_pixels=2048 * 1152, max_side=2048, max_count=4, max_prior_steps=60,
                       max_decoder_steps=30, max_prompt_chars=4000)
MAX_GPU_SECONDS = 300


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
    }
    if zero_gpu():
        # ZeroGPU attaches a GPU only inside the decorated call; models must sit on cuda from the start.
        changes.update(mode="bf16", device="cuda")
    return replace(config, **changes)


def server_name(requested: str | None) -> str:
    if requested:
        return requested
    return "0.0.0.0" if on_spaces() else "127.0.0.1"


def gpu_seconds(requests: list[GenerationRequest]) -> int:
    """A generous estimate of GPU seconds for ``requests`` on a ZeroGPU H200 slice."""
    total = 10.0
    for request in requests:
        scale = request.width * request.height / (1024 * 1536)
        prior = request.prior_steps * 0.12 * (2 if request.prior_cfg > 1 else 1)
        decoder = request.decoder_steps * 0.25 * (2 if request.decoder_cfg > 1 else 1)
        total += request.count * ((prior + decoder) * scale + 1.5)
    return int(min(MAX_GPU_SECONDS, total * 1.5))


def _plain(work: Callable[[], Any], seconds: int) -> Any:
    return work()


def gpu_runner() -> Callable[[Callable[[], Any], int], Any]:
    """``run(work, seconds)``: calls ``work()`` inside ``spaces.GPU`` on ZeroGPU, directly elsewhere."""
    if not zero_gpu():
        return _plain
    import spaces

    @spaces.GPU(duration=lambda work, seconds: seconds)
    def run_on_gpu(work: Callable[[], Any], seconds: int) -> Any:
        return work()

    return run_on_gpu
