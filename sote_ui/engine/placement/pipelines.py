"""Both pipelines, built in a plan's memory mode with diffusers' and accelerate's own APIs."""

from __future__ import annotations

from ...core.memory import Placement, Plan, Weights
from .fp8 import to_fp8


def torch_dtype(name: str):
    """The torch dtype of a plan's ``compute_dtype`` name."""
    import torch

    return {"bfloat16": torch.bfloat16, "float32": torch.float32}[name]


def apply_mode(parts, plan: Plan, torch_device: str):
    """Build the prior and decoder pipelines from ``parts`` in ``plan``'s mode: ``(prior_pipe, decoder_pipe)``.

    Uses diffusers', accelerate's and optimum-quanto's own APIs: quanto
    ``qfloat8`` weights or diffusers layerwise fp8 casting, then
    ``.to(device)``, ``enable_model_cpu_offload`` or
    ``enable_sequential_cpu_offload``. Parts that ``load_components(...,
    fp8=...)`` already made fp8 (the engine's way: lighter and cached) are
    used as they are; bf16 parts are converted here.
    """
    from diffusers import StableCascadeDecoderPipeline, StableCascadePriorPipeline

    if plan.mode.weights == Weights.FP8 and parts.fp8 != plan.fp8_backend:
        to_fp8(parts, plan.fp8_backend, torch_dtype(plan.compute_dtype))
    prior_pipe = StableCascadePriorPipeline(
        tokenizer=parts.tokenizer, text_encoder=parts.text_encoder, prior=parts.prior,
        scheduler=parts.prior_scheduler,
    )
    # The decoder takes the prior's embeddings; its own text encoder never runs.
    decoder_pipe = StableCascadeDecoderPipeline(
        decoder=parts.decoder, tokenizer=parts.tokenizer, text_encoder=None,
        scheduler=parts.decoder_scheduler, vqgan=parts.vqgan,
    )
    for pipe in (prior_pipe, decoder_pipe):
        pipe.set_progress_bar_config(disable=True)
        if plan.mode.placement == Placement.DEVICE:
            pipe.to(torch_device)
        elif plan.mode.placement == Placement.OFFLOAD:
            pipe.enable_model_cpu_offload(device=torch_device)
        else:
            pipe.enable_sequential_cpu_offload(device=torch_device)
    return prior_pipe, decoder_pipe
