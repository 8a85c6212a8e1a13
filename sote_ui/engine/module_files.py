"""Stability-layout modules kept as single safetensors files (the EfficientNet encoder, the stage-C
ControlNets): reading one strictly, building the module from it without a random init, writing one.

Every key and shape must match; a damaged or foreign file is a one-line :class:`ModelError` naming the file
(``what``) and the layout it should have (``layout``).

Example::

    tensors, metadata = read_tensors(path, "the ControlNet 'canny.safetensors'")
    model = build_strict(lambda: ControlNet(config), tensors, what, "Stability's ControlNet", "cpu", torch.float32)
    save_module(model, path, {"my.table": config.to_json()})
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, TypeVar

import torch
from torch import nn

from ..core.errors import ModelError

M = TypeVar("M", bound=nn.Module)


def read_tensors(path: Path, what: str, hint: str = "") -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Every tensor of the safetensors file and its metadata; ``hint`` ends the error of a damaged file."""
    from safetensors import safe_open

    try:
        tensors = {}
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
            for key in handle.keys():
                tensors[key] = handle.get_tensor(key)
        return tensors, metadata
    except Exception as exc:  # safetensors raises its own error type, or OSError, for a damaged file
        raise ModelError(f"{what} is not a readable safetensors file ({type(exc).__name__})"
                         + (f"; {hint}" if hint else "")) from None


def _names(keys, limit: int = 3) -> str:
    keys = sorted(keys)
    more = f" and {len(keys) - limit} more" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


def check_state_dict(model: nn.Module, tensors: dict[str, torch.Tensor], what: str, layout: str) -> None:
    """ModelError unless ``tensors`` has exactly ``model``'s keys, each with its shape."""
    expected = {key: tuple(value.shape) for key, value in model.state_dict().items()}
    missing = expected.keys() - tensors.keys()
    unexpected = tensors.keys() - expected.keys()
    if missing or unexpected:
        parts = ([f"missing {_names(missing)}"] if missing else []) + \
                ([f"unexpected {_names(unexpected)}"] if unexpected else [])
        raise ModelError(f"{what} is not {layout} layout: {'; '.join(parts)}")
    wrong = [key for key in sorted(expected) if tuple(tensors[key].shape) != expected[key]]
    if wrong:
        key = wrong[0]
        raise ModelError(f"{what} has {len(wrong)} tensor(s) of the wrong shape, e.g. {key} is "
                         f"{tuple(tensors[key].shape)}, expected {expected[key]}")


def build_strict(make: Callable[[], M], tensors: dict[str, torch.Tensor], what: str, layout: str,
                 device: str | torch.device, dtype: torch.dtype) -> M:
    """``make()``'s module (built on the meta device: every weight comes from ``tensors``), checked against
    the file, on ``device`` in ``dtype``, frozen, in eval mode."""
    with torch.device("meta"):
        model = make()
    check_state_dict(model, tensors, what, layout)
    model.load_state_dict(tensors, strict=True, assign=True)
    model.requires_grad_(False)
    return model.to(device=device, dtype=dtype).eval()


def save_module(model: nn.Module, path: str | Path, metadata: dict[str, str] | None = None) -> Path:
    """Write ``model``'s weights as a safetensors file (with ``metadata``, if any); returns the path."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {key: value.detach().contiguous() for key, value in model.state_dict().items()}
    save_file(tensors, str(path), metadata=metadata)
    return path
