"""Out of memory: tell it apart, and free what the failed step held before saying so."""

from __future__ import annotations

import traceback


def is_oom(exc: BaseException) -> bool:
    """True for torch's out-of-memory error and the RuntimeErrors other backends raise for it."""
    import torch

    if isinstance(exc, torch.OutOfMemoryError):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and ("out of memory" in text or "not enough memory" in text)


def forget_frames(exc: BaseException) -> None:
    """Clear the locals of every frame an exception (and those it chains) keeps alive.

    A traceback holds each frame of the failed call, and with them every
    activation the pipeline had made: they are only freed once the frames are.
    """
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        traceback.clear_frames(exc.__traceback__)
        exc = exc.__cause__ or exc.__context__
