"""Integrations with other libraries, each loading its optional dependency on use (``LLaRAEmbeddings``: LangChain)."""

from __future__ import annotations

from typing import Any

__all__ = ["LLaRAEmbeddings"]


def __getattr__(name: str) -> Any:  # lazy: `import llara_st.integrations` works without langchain-core
    if name == "LLaRAEmbeddings":
        from llara_st.integrations.langchain import LLaRAEmbeddings

        return LLaRAEmbeddings
    raise AttributeError(f"module 'llara_st.integrations' has no attribute {name!r}")
