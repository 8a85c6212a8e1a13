"""Detecting the device this machine has, and refusing the ones it has not."""

from __future__ import annotations

import pytest
import torch

from sote_ui.core.errors import InputError
from sote_ui.engine import devices


def test_detect_cpu_and_refuse_missing_devices():
    info = devices.detect_device("cpu")
    assert info.kind == "cpu" and info.torch_device == "cpu" and info.total_bytes > 0
    assert 0 < info.free_bytes <= info.total_bytes
    with pytest.raises(InputError, match="unknown device"):
        devices.detect_device("tpu")
    with pytest.raises(InputError, match="cuda, cuda:1"):
        devices.detect_device("cuda:one")
    if not torch.cuda.is_available():
        with pytest.raises(InputError, match="no cuda GPU found"):
            devices.detect_device("cuda")
    if not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        with pytest.raises(InputError, match="MPS"):
            devices.detect_device("mps")
