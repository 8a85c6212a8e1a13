"""accelerate's CPU-offload hooks, as diffusers' ``enable_model_cpu_offload`` places them.

With model offload each pipeline call moves its models to the device and
back; :func:`held_on_device` keeps them there across several calls (all of a
run's priors, then all its decoders), and :func:`send_back` evicts them after
a stop or a failure mid-pipeline.
"""

from __future__ import annotations

from contextlib import contextmanager


def offload_hooks(pipe) -> list:
    """accelerate's CPU-offload hooks of the pipeline's models (one per model under model offload)."""
    found = []
    for module in pipe.components.values():
        hook = getattr(module, "_hf_hook", None)
        for one in getattr(hook, "hooks", None) or ([hook] if hook is not None else []):
            if hasattr(one, "prev_module_hook"):
                found.append(one)
    return found


@contextmanager
def held_on_device(pipe):
    """Keep an offloaded pipeline's models on the device across several calls; offload once at the end.

    With model CPU offload, diffusers sends every model back to the CPU at the
    end of each pipeline call, and each model's hook sends the previous one in
    the pipeline back when it starts (the decoder when the VQGAN decodes), so
    each image's call moves the big model over again. Both are paused here.
    """
    saved = pipe.__dict__.get("maybe_free_model_hooks")
    pipe.maybe_free_model_hooks = lambda: None
    chained = [(hook, hook.prev_module_hook) for hook in offload_hooks(pipe)]
    for hook, _ in chained:
        hook.prev_module_hook = None
    try:
        yield
    finally:
        for hook, previous in chained:
            hook.prev_module_hook = previous
        if saved is None:
            del pipe.maybe_free_model_hooks
        else:
            pipe.maybe_free_model_hooks = saved
        pipe.maybe_free_model_hooks()


def send_back(*pipes) -> None:
    """Move offloaded models back to the CPU now (diffusers does it only at the end of a pipeline call).

    Each pipeline's hooks evict only its own models: without this, a decoder
    stopped mid-run would stay on the GPU next to the next job's prior.
    """
    for pipe in pipes:
        if pipe is not None:
            pipe.maybe_free_model_hooks()
