"""llara_st: LLaRA dense retrievers (EBAE/EBAR-adapted decoder LLMs) for sentence-transformers."""

from llara_st.losses import EBAEEBARDataCollator, EBAEEBARLoss
from llara_st.model import UnsafeModelError, build_llara_model, convert, load
from llara_st.modules import LastKPooling, LLaRATransformer

__version__ = "0.1.0"

__all__ = [
    "EBAEEBARDataCollator",
    "EBAEEBARLoss",
    "LLaRATransformer",
    "LastKPooling",
    "UnsafeModelError",
    "build_llara_model",
    "convert",
    "load",
]
