"""Where the weights live and in what form: one file per strategy.

- :mod:`.pipelines`: build both pipelines in a plan's memory mode (on the device, model offload, sequential offload).
- :mod:`.fp8`: 8-bit weights, optimum-quanto's or diffusers' layerwise casting, and the layers kept out of them.
- :mod:`.offload`: accelerate's offload hooks: holding models on the device across images, sending them back.
- :mod:`.oom`: telling an out-of-memory error apart and freeing the failed step's activations.
"""
