"""Which precision pays on this machine: bfloat16 only where the hardware computes it natively."""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any

import torch
from transformers.utils import is_torch_bf16_gpu_available


def bf16_is_fast() -> bool:
    """True where bfloat16 matrix products run natively: a CUDA device that supports bf16, or a CPU with AVX512-BF16
    or AMX tiles. Elsewhere bf16 is emulated, several times *slower* than float32, so "auto" means float32 there."""
    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    # torch.cpu's capability probes are the only portable way to ask (the public get_cpu_capability() reports
    # "AVX512" without saying whether its bf16 extension is there).
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in probes)


def resolve_bf16(setting: bool | str) -> bool:
    """A ``bf16`` setting of ``True``, ``False`` or ``"auto"`` (:func:`bf16_is_fast`) as a bool."""
    if isinstance(setting, str):
        if setting.lower() == "auto":
            return bf16_is_fast()
        if setting.lower() in ("true", "false"):
            return setting.lower() == "true"
        raise ValueError(f"bf16 must be true, false or 'auto', got {setting!r}")
    return bool(setting)


def autocast_available(precision: str) -> bool:
    """Whether ``"fp16"`` / ``"bf16"`` mixed precision training can run here: fp16 on CUDA; bf16 on accelerators
    that support it (transformers' check) and on the CPU when there is no accelerator."""
    if not torch.accelerator.is_available():
        return precision == "bf16"
    return is_torch_bf16_gpu_available() if precision == "bf16" else torch.cuda.is_available()


#: CPU flags that decide the speed of a decoder's matrix products (bfloat16 is native only with the last three).
SPEED_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "amx_tile", "amx_bf16")


def describe_machine() -> dict[str, Any]:
    """What a run's wall times depend on: CPU model, cores, the CPU flags of :data:`SPEED_FLAGS` it has, whether
    bfloat16 is native (:func:`bf16_is_fast`), the CUDA device if any, and the torch version.

    Example::

        >>> from llara_st.training.precision import describe_machine
        >>> sorted(describe_machine())
        ['bf16_native', 'cores', 'cpu', 'cpu_flags', 'cuda_device', 'torch']
    """
    cpu, flags = platform.processor() or platform.machine(), set()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                cpu = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
    return {
        "cpu": cpu,
        "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "cpu_flags": [flag for flag in SPEED_FLAGS if flag in flags],
        "bf16_native": bf16_is_fast(),
        "cuda_device": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "torch": torch.__version__,
    }
