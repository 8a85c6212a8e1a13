"""A prior's output as plain bytes and back: what is kept beside each PNG so the image can be re-decoded.

The stage-C latent (16 x H/42.67 x W/42.67 values) and the state of the image's generator after its
prior (so the decoder draws the same noise again) become a :class:`~sote_ui.core.outputs.LatentRecord`,
which ``core/outputs.py`` stores as a safetensors file.

Example::

    record = latent_record(image.prior, {"request": "..."})
    prior = prior_output(record)          # a PriorOutput again, on the CPU
"""

from __future__ import annotations

import torch

from ..core.outputs import LatentRecord
from .results import PriorOutput

_NAMES = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16", torch.uint8: "U8"}
_DTYPES = {name: dtype for dtype, name in _NAMES.items()}


def _entry(tensor: torch.Tensor) -> tuple[str, tuple[int, ...], bytes]:
    tensor = tensor.detach().to("cpu").contiguous()
    if tensor.dtype not in _NAMES:
        tensor = tensor.float()
    return _NAMES[tensor.dtype], tuple(tensor.shape), tensor.view(torch.uint8).numpy().tobytes()


def _tensor(entry: tuple[str, tuple[int, ...], bytes]) -> torch.Tensor:
    dtype, shape, data = entry
    return torch.frombuffer(bytearray(data), dtype=torch.uint8).view(_DTYPES[dtype]).reshape(shape)


def latent_record(prior: PriorOutput, meta: dict[str, str]) -> LatentRecord:
    """``prior`` (its latent and generator state) as bytes, with ``meta``."""
    return LatentRecord({"latents": _entry(prior.latents), "generator_state": _entry(prior.generator_state)},
                        dict(meta))


def prior_output(record: LatentRecord) -> PriorOutput:
    """The prior output kept in ``record`` (on the CPU). ValueError if it is not a stage-C latent."""
    try:
        latents, state = _tensor(record.tensors["latents"]), _tensor(record.tensors["generator_state"])
    except KeyError as exc:
        raise ValueError(f"no {exc.args[0]} in the record") from None
    if latents.ndim != 4 or latents.shape[0] != 1 or state.dtype != torch.uint8:
        raise ValueError(f"not one image's stage-C latent: {tuple(latents.shape)}")
    return PriorOutput(latents, state)


__all__ = ["latent_record", "prior_output"]
