"""Errors the user can act on. Torch-free, so any layer can catch them."""

from __future__ import annotations

from .request import InputError


class GenerationError(RuntimeError):
    """Generation failed in a way the user can act on; the message says how."""


class Cancelled(Exception):
    """The caller asked to stop between denoising steps."""


__all__ = ["Cancelled", "GenerationError", "InputError"]
