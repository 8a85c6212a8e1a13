"""Detecting the device this machine has, and refusing the ones it has not."""

from __future__ import annotations

import platform

import pytest
import torch

from sote_ui.core.errors import InputError
from sote_ui.core.memory import FULL_SIZE, GiB, Weights, choose_mode
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


# --------------------------------------------------------------------------- simulated GPUs
# torch's device queries are patched to describe each machine; what detect_device makes of them,
# and what auto then picks for the full-size pair, is the real code.

class FakeProps:
    def __init__(self, name, major=0, minor=0, arch="", total_gb=16):
        self.name, self.major, self.minor, self.gcnArchName = name, major, minor, arch
        self.total_memory = int(total_gb * GiB)


def simulate_gpus(monkeypatch, gpus, hip=None, bf16_says=True):
    """Make torch see ``gpus`` (FakeProps by index); return the list of indexes queried."""
    queried = []

    def props(index):
        index = torch.device(index).index if not isinstance(index, int) else index
        queried.append(index)
        return gpus[index]

    monkeypatch.setattr(torch.version, "hip", hip)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: len(gpus))
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "get_device_properties", props)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda index=0: (gpus[index].total_memory - GiB,
                                                                      gpus[index].total_memory))
    # ROCm's torch says yes whatever the GPU; CUDA's answers for the current device only
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: bf16_says)
    return queried


@pytest.mark.parametrize("arch, bf16", [
    ("gfx1030", False),                 # RDNA2: RX 6800/6900
    ("gfx1031", False),                 # RDNA2: RX 6700 XT
    ("gfx1010:xnack-", False),          # RDNA1: RX 5700
    ("gfx906:sramecc+:xnack-", False),  # Vega 20: MI50, Radeon VII
    ("gfx803", False),                  # Polaris
    ("gfx908:sramecc+:xnack-", True),   # CDNA1: MI100
    ("gfx90a:sramecc+:xnack-", True),   # CDNA2: MI210/MI250
    ("gfx942:sramecc+:xnack-", True),   # CDNA3: MI300
    ("gfx950", True),                   # CDNA4: MI350
    ("gfx1100", True),                  # RDNA3: RX 7900 XTX
    ("gfx1201", True),                  # RDNA4: RX 9070
])
def test_rocm_bf16_follows_the_gpu_architecture(monkeypatch, arch, bf16):
    simulate_gpus(monkeypatch, [FakeProps("AMD Radeon", 11, 0, arch, total_gb=16)], hip="6.2")
    info = devices.detect_device("auto")
    assert (info.kind, info.bf16) == ("rocm", bf16)
    plan = choose_mode("auto", info, FULL_SIZE)
    assert plan.compute_dtype == ("bfloat16" if bf16 else "float32")
    assert plan.mode.weights in ((Weights.BF16, Weights.FP8) if bf16 else (Weights.FP32, Weights.FP8))


def test_rocm_with_an_unknown_architecture_name_trusts_torch(monkeypatch):
    simulate_gpus(monkeypatch, [FakeProps("AMD Radeon", 11, 0, "", total_gb=16)], hip="6.2", bf16_says=True)
    assert devices.detect_device("cuda").bf16 is True


def test_cuda_n_is_the_gpu_queried(monkeypatch):
    # GPU 0 is an RTX 4090, GPU 1 a Turing card: asking for cuda:1 must describe GPU 1.
    queried = simulate_gpus(monkeypatch, [FakeProps("RTX 4090", 8, 9, total_gb=24),
                                          FakeProps("Quadro RTX 6000", 7, 5, total_gb=24)], bf16_says=True)
    info = devices.detect_device("cuda:1")
    assert queried and set(queried) == {1}
    assert (info.torch_device, info.name, info.compute_capability, info.bf16) == ("cuda:1", "Quadro RTX 6000",
                                                                                  (7, 5), False)
    assert choose_mode("auto", info, FULL_SIZE).compute_dtype == "float32"
    queried.clear()
    first = devices.detect_device("cuda:0")
    assert set(queried) == {0} and first.bf16 is True and first.name == "RTX 4090"


@pytest.mark.parametrize("mac, bf16", [("13.6.1", False), ("12.7", False), ("14.0", True), ("15.2", True),
                                       ("26.0", True)])
def test_mps_bf16_needs_macos_14(monkeypatch, mac, bf16):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    monkeypatch.setattr(torch.mps, "recommended_max_memory", lambda: 16 * GiB)
    monkeypatch.setattr(platform, "mac_ver", lambda: (mac, ("", "", ""), "arm64"))
    if hasattr(torch, "xpu"):
        monkeypatch.setattr(torch.xpu, "is_available", lambda: False)
    info = devices.detect_device("auto")
    assert (info.kind, info.bf16) == ("mps", bf16)
    plan = choose_mode("auto", info, FULL_SIZE)
    assert plan.compute_dtype == ("bfloat16" if bf16 else "float32")
