"""Which precision pays on this machine: bfloat16 only where the hardware computes it natively."""

from __future__ import annotations

import torch


def bf16_is_fast() -> bool:
    """True where bfloat16 matrix products run natively: a CUDA device that supports bf16, or a CPU with
    AVX512-BF16 or AMX tiles.

    On CPUs without them (AVX2 only) PyTorch emulates bf16 and a decoder forward is several times *slower* than
    in float32 (``benchmarks/precision_throughput.py`` prints the ratio), so "auto" precision settings resolve
    to float32 there.

    Example::

        >>> from llara_st.training.precision import bf16_is_fast
        >>> isinstance(bf16_is_fast(), bool)
        True
    """
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
    """Whether mixed precision ``"fp16"`` / ``"bf16"`` training can run here: fp16 on CUDA; bf16 on CUDA devices
    that support it, and on the CPU (autocast; fast on CPUs with AVX512-BF16 or AMX, emulated elsewhere)."""
    if not torch.cuda.is_available():
        return precision == "bf16"
    return precision != "bf16" or torch.cuda.is_bf16_supported()
