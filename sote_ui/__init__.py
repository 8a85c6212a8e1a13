"""Sote Studio: run SoteDiffusion Wuerstchen3 (an anime Stable Cascade finetune) on your own GPU.

Importing the package loads no model and no torch: the engine lives in
``sote_ui.engine``, the UI in ``sote_ui.ui``, the command line in ``sote_ui.cli``.
"""

__version__ = "0.1.0"
