"""Every error the user can act on, and the one line each becomes for the user.

Pure Python: every layer raises and catches these. The UI, the API and the
command line show :func:`describe_error`'s line, never a traceback.
"""

from __future__ import annotations


class InputError(ValueError):
    """Bad user input; the message is one line meant for the user."""


class ModelError(InputError):
    """The model can't be found, fetched or loaded; the message says how to fix it."""


class GenerationError(RuntimeError):
    """Generation failed in a way the user can act on; the message says how."""


class Cancelled(Exception):
    """The caller asked to stop between denoising steps."""


def describe_error(exc: BaseException) -> str:
    """One line for the user, whatever went wrong."""
    if isinstance(exc, (InputError, GenerationError)):
        return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if isinstance(exc, Cancelled):
        return "stopped"
    return f"unexpected error: {type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"


__all__ = ["Cancelled", "GenerationError", "InputError", "ModelError", "describe_error"]
