"""Choosing the numeric precision per device: fast where the hardware supports it, exact elsewhere.
Also the number of CPU cores this process may use, for threads and loader workers, and the C allocator's
settings for batch-sized CPU tensors."""

from __future__ import annotations

import ctypes
import os
from pathlib import Path

import torch

from competition.errors import CompetitionError

PRECISIONS = ("auto", "no", "fp16", "bf16")


def available_cores() -> int:
    """Cores this process may run on (its CPU affinity, which containers narrow), not the machine's count."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


# glibc hands out blocks above its mmap threshold (128 KiB to start) as fresh pages from the kernel and
# unmaps them on free, so every batch-sized CPU tensor pays page faults and zeroing again: half the time
# of the 128-px in-memory loader here. Raised thresholds keep such blocks in the heap for the next batch.
MALLOC_MMAP_THRESHOLD = 64 << 20
MALLOC_TRIM_THRESHOLD = 256 << 20  # freed heap kept before it is given back to the system
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # mallopt parameter numbers in glibc's malloc.h


def reuse_freed_cpu_memory() -> bool:
    """Let glibc reuse freed batch-sized blocks instead of returning them to the kernel (see above).

    Affects this process only; False where the C library is not glibc (macOS, musl), which keeps its own policy."""
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, MALLOC_MMAP_THRESHOLD)) and bool(mallopt(_M_TRIM_THRESHOLD, MALLOC_TRIM_THRESHOLD))


def cpu_has_native_bf16() -> bool:
    """AMX tiles: the CPU feature that makes bf16 training reliably faster than fp32.

    Without bf16 instructions autocast is emulated (~30× slower). AVX512-BF16 alone is not enough:
    on this project's 2-core AVX512-BF16 machine bf16 autocast ran resnet20 at 0.91× and a CIFAR-stem
    ResNet-18 at 0.56× the fp32 speed (timm resnet18 at 64 px: 1.41×), so fp32 stays the default there.
    """
    try:
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return False
    return "amx_bf16" in flags


def resolve_mixed_precision(requested: str, use_cpu: bool = False) -> str:
    """`auto` → bf16 on CUDA GPUs that support it, fp16 on older CUDA GPUs, bf16 on CPUs with native
    bf16, and fp32 ("no") otherwise. An explicit choice is kept, unless the device cannot do it at all."""
    if requested not in PRECISIONS:
        raise CompetitionError(f"mixed_precision must be one of {', '.join(PRECISIONS)}; got {requested!r}.")
    on_cuda = torch.cuda.is_available() and not use_cpu
    if requested == "auto":
        if on_cuda:
            return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        return "bf16" if cpu_has_native_bf16() else "no"
    if requested == "fp16" and not on_cuda:
        raise CompetitionError(
            "mixed_precision=fp16 needs a CUDA GPU (fp16 loss scaling is GPU-only); use auto, no or bf16 on a CPU."
        )
    return requested
