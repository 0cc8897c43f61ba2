"""llara_st: LLaRA dense retrievers (EBAE/EBAR-adapted decoder LLMs) for sentence-transformers.

Names load on first use, so that ``import llara_st`` (and ``llara-st --help``) does not import torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # for type checkers and IDEs; at run time the names load lazily below
    from llara_st.losses import EBAEEBARDataCollator, EBAEEBARLoss
    from llara_st.model import UnsafeModelError, build_llara_model, convert, load
    from llara_st.modules import LastKPooling, LLaRATransformer

__version__ = "0.1.0"

# Public name -> the submodule that defines it.
_SUBMODULE_OF: dict[str, str] = {
    **dict.fromkeys(["EBAEEBARDataCollator", "EBAEEBARLoss"], "llara_st.losses"),
    **dict.fromkeys(["UnsafeModelError", "build_llara_model", "convert", "load"], "llara_st.model"),
    **dict.fromkeys(["LastKPooling", "LLaRATransformer"], "llara_st.modules"),
}


def __getattr__(name: str) -> Any:
    submodule = _SUBMODULE_OF.get(name)
    if submodule is None:
        raise AttributeError(f"module 'llara_st' has no attribute {name!r}")
    value = getattr(importlib.import_module(submodule), name)
    globals()[name] = value  # later look-ups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_SUBMODULE_OF])


__all__ = ["EBAEEBARDataCollator", "EBAEEBARLoss", "LLaRATransformer", "LastKPooling", "UnsafeModelError"]
__all__ += ["build_llara_model", "convert", "load"]
