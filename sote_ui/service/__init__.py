"""What the app, the command line and the benchmarks share to run work.

The :class:`~sote_ui.service.studio.Studio` adapter (typed requests in, files
and reports out), the GPU job runner (queued, or inside ZeroGPU's worker),
Spaces hosting, and A/B and grid planning. No gradio; the engine (torch) is
imported lazily, when the first job needs it.
"""
