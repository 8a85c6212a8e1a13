"""The engine: torch and diffusers. :class:`Engine` owns the pipelines, the memory mode and the caches.

Importing this package (or a torch-free module of it, such as ``models``)
loads no torch: :class:`Engine` is imported on first use of the name.

Example::

    from sote_ui.engine import Engine
    from sote_ui.core.request import build_request

    engine = Engine()                      # the default model; loads on first use
    result = engine.generate(build_request({"prompt": "1girl, solo, smile", "seed": 42}))
"""

from __future__ import annotations


def __getattr__(name: str):
    if name == "Engine":
        from .facade import Engine

        return Engine
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["Engine"]
