"""The Gradio app. Importing this package does not import torch or diffusers."""
