"""Sote Studio: run SoteDiffusion Wuerstchen3 (an anime Stable Cascade finetune) on your own GPU.

Four layers, imports running downwards only (see docs/layout.md):
``sote_ui.ui`` (the Gradio page) and ``sote_ui.cli`` (``python -m sote_ui``) ->
``sote_ui.service`` (the Studio, the GPU job runner, hosting, compare) ->
``sote_ui.engine`` (torch and diffusers: the Engine) -> ``sote_ui.core`` (the
vocabulary and text work). Importing the package loads no model and no torch.
"""

__version__ = "0.1.0"
