"""The Gradio page: one module or folder per tab, composed in ``app.py``.

It reaches the engine only through :mod:`sote_ui.service`; importing it loads no torch or diffusers.
"""
