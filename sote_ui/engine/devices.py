"""Find the device to run on: NVIDIA (CUDA), AMD (ROCm), Intel (XPU), Apple (MPS) or CPU.

Example::

    info = detect_device()          # the best available
    info = detect_device("cpu")     # forced
"""

from __future__ import annotations

import os
import platform
import re

from ..core.errors import InputError
from ..core.memory import DeviceInfo


def _system_memory() -> tuple[int, int]:
    try:
        import psutil

        vm = psutil.virtual_memory()
        return int(vm.total), int(vm.available)
    except ImportError:  # pragma: no cover - psutil ships with gradio
        pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        return pages, pages // 2


def rocm_arch_has_bf16(arch: str) -> bool | None:
    """Whether the AMD GPU architecture ``arch`` (``gcnArchName``, e.g. ``gfx1100`` or ``gfx90a:sramecc+:xnack-``)
    computes in bf16; None when the name can't be read.

    AMD's HIP hardware-features table: CDNA1 (gfx908), CDNA2 (gfx90a), CDNA3 (gfx94x) and
    RDNA3 (gfx11xx) have bf16 operations, RDNA1 (gfx101x) and RDNA2 (gfx103x) do not; nor do
    Vega (gfx900-gfx906) and Polaris (gfx80x), which predate them. CDNA4 (gfx95x) and RDNA4
    (gfx12xx) have bf16 matrix instructions.
    """
    match = re.fullmatch(r"gfx(\d{1,2})([0-9a-f])([0-9a-f])", arch.split(":", 1)[0].strip().lower())
    if not match:
        return None
    major, minor, stepping = int(match.group(1)), match.group(2), match.group(3)
    if major >= 11:
        return True
    if major == 9:
        return minor in "456789" or (minor == "0" and stepping in "8a")
    return False


def _cuda(index: int) -> DeviceInfo:
    import torch

    kind = "rocm" if torch.version.hip else "cuda"
    try:
        # Every query names the GPU asked for: torch's is_bf16_supported() describes the current one.
        props = torch.cuda.get_device_properties(index)
        total = int(props.total_memory)
        try:
            free, total = (int(v) for v in torch.cuda.mem_get_info(index))
        except RuntimeError:
            free = total - int(torch.cuda.memory_reserved(index))
        if kind == "rocm":
            # ROCm's torch reports bf16 on every GPU, RDNA2 included, where it is emulated and slow.
            bf16 = rocm_arch_has_bf16(getattr(props, "gcnArchName", "") or "")
            if bf16 is None:
                bf16 = torch.cuda.is_bf16_supported(including_emulation=False)
        else:
            bf16 = props.major >= 8  # Ampere and newer
        return DeviceInfo(kind, f"cuda:{index}", props.name, total, free, bool(bf16), (props.major, props.minor))
    except (RuntimeError, AssertionError):
        # ZeroGPU attaches the GPU only inside the GPU call: nothing can be read at start.
        return DeviceInfo(kind, f"cuda:{index}", "CUDA GPU (not attached yet)", 0, 0, True, None)


def _xpu(index: int) -> DeviceInfo:
    import torch

    props = torch.xpu.get_device_properties(index)
    total = int(props.total_memory)
    free = total - int(torch.xpu.memory_reserved(index))
    if hasattr(torch.xpu, "mem_get_info"):
        free, total = (int(v) for v in torch.xpu.mem_get_info(index))
    # What torch.xpu.is_bf16_supported(including_emulation=False) reads, for the GPU asked for.
    bf16 = getattr(props, "has_bfloat16_conversions", True)
    return DeviceInfo("xpu", f"xpu:{index}", props.name, total, free, bool(bf16))


def macos_has_mps_bf16() -> bool:
    """MPS computes in bf16 from macOS 14 (Sonoma) on; before, torch refuses bf16 tensors there."""
    release = platform.mac_ver()[0]
    try:
        return int(release.split(".")[0]) >= 14
    except ValueError:  # not macOS, or unreadable: no bf16 assumed, fp32 always works
        return False


def _mps() -> DeviceInfo:
    import torch

    total, available = _system_memory()
    budget = int(torch.mps.recommended_max_memory()) if hasattr(torch.mps, "recommended_max_memory") else total
    return DeviceInfo("mps", "mps", "Apple GPU (MPS)", budget, min(budget, available), macos_has_mps_bf16())


def _cpu() -> DeviceInfo:
    total, available = _system_memory()
    return DeviceInfo("cpu", "cpu", "CPU", total, available, True)


def detect_device(requested: str | None = None) -> DeviceInfo:
    """Describe ``requested`` (cuda, cuda:1, xpu, mps, cpu) or the best device present.

    Raises InputError when the requested device is not available.
    """
    import torch

    requested = (requested or "auto").strip().lower()
    kind, _, index_text = requested.partition(":")
    try:
        index = int(index_text) if index_text else 0
    except ValueError:
        raise InputError(f"device {requested!r} is not like cuda, cuda:1, xpu, mps or cpu") from None
    xpu = hasattr(torch, "xpu") and torch.xpu.is_available()
    mps = hasattr(torch.backends, "mps") and torch.backends.mps.is_available()
    if kind == "auto":
        if torch.cuda.is_available():
            return _cuda(0)
        if xpu:
            return _xpu(0)
        if mps:
            return _mps()
        return _cpu()
    if kind in ("cuda", "rocm"):
        if not torch.cuda.is_available() or index >= torch.cuda.device_count():
            raise InputError(f"no {requested} GPU found (torch {torch.__version__} sees "
                             f"{torch.cuda.device_count() if torch.cuda.is_available() else 0}); use --device cpu")
        return _cuda(index)
    if kind == "xpu":
        if not xpu:
            raise InputError("no Intel XPU found; install torch with XPU support or use --device cpu")
        return _xpu(index)
    if kind == "mps":
        if not mps:
            raise InputError("Apple MPS is not available here; use --device cpu")
        return _mps()
    if kind == "cpu":
        return _cpu()
    raise InputError(f"unknown device {requested!r}; use auto, cuda, cuda:N, xpu, mps or cpu")


def free_memory(device: DeviceInfo | None = None) -> None:
    """Collect garbage and give freed memory back: the accelerator's cached blocks, then the host's heap.

    On the host, glibc keeps the memory of freed tensors for reuse and the
    process's footprint stays at its peak; ``malloc_trim`` hands it back to
    the OS (on Linux; musl and others have no ``malloc_trim``).
    """
    import ctypes
    import ctypes.util
    import gc
    import sys

    import torch

    gc.collect()
    kind = device.kind if device is not None else "cpu"
    if kind in ("cuda", "rocm") and torch.cuda.is_available():
        torch.cuda.empty_cache()
    elif kind == "xpu" and hasattr(torch, "xpu") and torch.xpu.is_available():
        torch.xpu.empty_cache()
    elif kind == "mps" and hasattr(torch, "mps"):
        torch.mps.empty_cache()
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim = libc.malloc_trim
    except (OSError, AttributeError):
        return
    trim.argtypes = [ctypes.c_size_t]
    trim(0)


def refresh(device: DeviceInfo) -> DeviceInfo:
    """The same device with its free memory read again."""
    return detect_device(device.torch_device if device.kind != "cpu" else "cpu")


def all_devices() -> list[str]:
    """Every accelerator torch sees (``cuda:0``, ``cuda:1``... or ``xpu:0``...; ``mps``), else ``["cpu"]``."""
    import torch

    if torch.cuda.is_available() and torch.cuda.device_count():
        return [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    if hasattr(torch, "xpu") and torch.xpu.is_available() and torch.xpu.device_count():
        return [f"xpu:{i}" for i in range(torch.xpu.device_count())]
    if hasattr(torch.backends, "mps") and torch.backends.mps.is_available():
        return ["mps"]
    return ["cpu"]


def use_threads(count: int) -> None:
    """Run this thread's CPU work on ``count`` intra-op threads.

    torch keeps the count per thread (OpenMP's setting of the calling thread),
    so two CPU engines driven from two threads each get their share of the cores.
    """
    import torch

    if torch.get_num_threads() != count:
        torch.set_num_threads(count)
