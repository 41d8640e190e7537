"""Which floating-point type autocast runs in: ``--dtype float32 | bfloat16 | float16 | auto``.

``auto`` picks bfloat16 where the hardware computes it natively (CUDA GPUs that support it; CPUs with the
``avx512_bf16`` or ``amx_bf16`` instructions) and float32 elsewhere: on a CPU without them bf16 matrix
products are emulated, so no speed-up is expected there, and the choice is made per machine, not per recipe.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch

DTYPES = ("float32", "bfloat16", "float16", "auto")
NATIVE_BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")


def cpu_flags(cpuinfo: Optional[str] = None) -> set[str]:
    """The CPU feature flags listed in ``/proc/cpuinfo`` (or in ``cpuinfo``, its text); empty where unknown."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return set()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return set(value.split())
    return set()


def cpu_has_native_bf16(cpuinfo: Optional[str] = None) -> bool:
    return any(flag in cpu_flags(cpuinfo) for flag in NATIVE_BF16_CPU_FLAGS)


def autocast_dtype(name: str, device: torch.device, cpuinfo: Optional[str] = None) -> Optional[torch.dtype]:
    """The autocast dtype for ``--dtype name`` on ``device``; None means plain float32 (autocast off)."""
    if name not in DTYPES:
        raise ValueError(f"--dtype must be one of {', '.join(DTYPES)}, not {name!r}")
    if name == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        name = "bfloat16" if device.type == "cpu" and cpu_has_native_bf16(cpuinfo) else "float32"
    if name == "float16" and device.type != "cuda":
        raise ValueError("--dtype float16 needs CUDA; use bfloat16 (or auto) on CPU")
    return {"float32": None, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]
