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
    result = run_task("generate", ([request],), {}, engine)          # anywhere
    on_gpu = gpu_runner()                                             # ZeroGPU only, else None
    register_engine(engine)
    result = on_gpu("generate", ([request],), {}, gpu_seconds([request]))
"""

from __future__ import annotations

import os
from dataclasses import replace
from typing import Any, Callable

from ..core.request import GenerationRequest, Limits

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


def gpu_seconds(requests: list[GenerationRequest]) -> int:
    """A generous estimate of GPU seconds for ``requests`` on a ZeroGPU H200 slice."""
    total = 10.0
    for request in requests:
        scale = request.width * request.height / (1024 * 1536)
        prior = request.prior_steps * 0.12 * (2 if request.prior_cfg > 1 else 1)
        decoder = request.decoder_steps * 0.25 * (2 if request.decoder_cfg > 1 else 1)
        total += request.count * ((prior + decoder) * scale + 1.5)
    return int(min(MAX_GPU_SECONDS, total * 1.5))


def run_task(task: str, args: tuple, kwargs: dict, engine, on_progress: Callable | None = None,
             should_stop: Callable | None = None) -> Any:
    """Run one GPU job on ``engine``: ``generate`` (engine.generate_many), ``compare`` or ``grid``."""
    if task == "generate":
        return engine.generate_many(*args, on_progress=on_progress, should_stop=should_stop, **kwargs)
    from .compare import compare, run_grid

    work = {"compare": compare, "grid": run_grid}[task]
    return work(engine, *args, on_progress=on_progress, should_stop=should_stop, **kwargs)


# ZeroGPU runs the decorated function in a worker process and pickles its arguments, so they are
# plain data (the task's name and its requests); the engine is reached through this module.
_ENGINE = None


def register_engine(engine) -> None:
    global _ENGINE
    _ENGINE = engine


def _gpu_seconds_of(task: str, args: tuple, kwargs: dict, seconds: int) -> int:
    return seconds


def _run_on_gpu(task: str, args: tuple, kwargs: dict, seconds: int) -> Any:
    return run_task(task, args, kwargs, _ENGINE)


def gpu_runner() -> Callable[[str, tuple, dict, int], Any] | None:
    """On ZeroGPU, ``run(task, args, kwargs, seconds)`` inside ``spaces.GPU``; elsewhere None.

    There is no progress or stop inside the GPU worker: callbacks can't cross processes.
    """
    if not zero_gpu():
        return None
    import spaces

    return spaces.GPU(duration=_gpu_seconds_of)(_run_on_gpu)
