"""The vocabulary and the text work: requests, tags, prompts, metadata, presets, history, files.

Pure Python (and Pillow): no torch, no diffusers, no gradio, and nothing from
the other layers of the package. Every other layer speaks these types.
"""
