"""8-bit weights: optimum-quanto (``qfloat8``; ``qint8`` on CPUs and NVIDIA RTX 30+) or diffusers' layerwise casting.

The loader (:mod:`sote_ui.engine.loading`) builds 8-bit components tensor by
tensor and caches them; :func:`to_fp8` converts components that were loaded
in bf16 (the plain ``apply_mode`` path). ``core.memory.fp8_backend`` picks a
quanto format, with a scale per output row, on every device: layerwise
casting (a plain cast, no scale) loses ~22% of the ResBlock output
projections at Stable Cascade's init scale (``bench/bench_fp8_error.py``)
and stays only for an explicit ``fp8="layerwise"``.
"""

from __future__ import annotations

# Layers kept out of fp8: the UNets' input and output convolutions and the conditioning mappers
# (Stable Cascade's counterparts of the patch_embed/proj_out layers diffusers keeps by default).
# They are small, and the prior pipeline reads its dtype from clip_txt_pooled_mapper.
FP8_SKIP = ("embedding", "clf", "clip_", "effnet_mapper", "pixels_mapper")  # module-name prefixes

# optimum-quanto weight types of the 8-bit backends. On a CPU, int8 weights: torch has a fused
# int8-weight matmul there, while fp8 weights must be converted to bf16 at every step, and the
# CPU converts fp8 at ~20 M values/s (minutes per step for the full-size prior).
QUANTO_QTYPES = {"quanto": "qfloat8", "quanto-int8": "qint8"}


def layerwise_skip() -> tuple[str, ...]:
    """diffusers' layerwise-casting skip patterns plus ours."""
    from diffusers.hooks.layerwise_casting import DEFAULT_SKIP_MODULES_PATTERN

    return tuple(DEFAULT_SKIP_MODULES_PATTERN) + tuple("^" + prefix for prefix in FP8_SKIP)


def quanto_exclude(kind: str) -> list[str]:
    """optimum-quanto's ``exclude`` patterns for one component."""
    return [] if kind == "text_encoder" else [prefix + "*" for prefix in FP8_SKIP]


def to_fp8(parts, backend: str, compute_dtype) -> None:
    """Give ``parts`` (loaded in bf16) 8-bit weights with ``backend`` ("quanto", "quanto-int8" or "layerwise")."""
    import torch

    from ..devices import free_memory

    if backend in QUANTO_QTYPES:
        from optimum.quanto import freeze, qtypes, quantize

        for kind in ("text_encoder", "prior", "decoder"):
            module = getattr(parts, kind)
            quantize(module, weights=qtypes[QUANTO_QTYPES[backend]], exclude=quanto_exclude(kind) or None)
            freeze(module)
            free_memory()
    else:
        for module in (parts.prior, parts.decoder):
            module.enable_layerwise_casting(storage_dtype=torch.float8_e4m3fn, compute_dtype=compute_dtype,
                                            skip_modules_pattern=layerwise_skip())


def computed_weights(model) -> dict:
    """Each Linear and Conv2d weight of ``model`` as the layer multiplies with it, in fp32, by module name.

    quanto weights are dequantized (their per-row scales applied); fp8 weights of
    layerwise casting are cast up as its hook does. For measuring what a format
    loses against the bf16 original.
    """
    import torch
    from optimum.quanto import QTensor

    weights = {}
    for name, module in model.named_modules():
        if isinstance(module, (torch.nn.Linear, torch.nn.Conv2d)):
            weight = module.weight
            if isinstance(weight, QTensor):
                weight = weight.dequantize()
            weights[name] = weight.detach().to(torch.float32)
    return weights
