"""Choosing the numeric precision per device: fast where the hardware supports it, exact elsewhere."""

from __future__ import annotations

from pathlib import Path

import torch

from competition.errors import CompetitionError

PRECISIONS = ("auto", "no", "fp16", "bf16")


def cpu_has_native_bf16() -> bool:
    """AVX512-BF16 or AMX: without them, bf16 autocast on a CPU is emulated and ~30× slower than fp32."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return any(flag in flags for flag in ("avx512_bf16", "amx_bf16"))


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
