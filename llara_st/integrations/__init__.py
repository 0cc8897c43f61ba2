"""Integrations with other libraries, each in its own module so that its optional dependency loads on use:
:mod:`llara_st.integrations.langchain` (``LLaRAEmbeddings`` for LangChain; needs ``langchain-core``)."""

from __future__ import annotations

from typing import Any

__all__ = ["LLaRAEmbeddings"]


def __getattr__(name: str) -> Any:  # lazy: `import llara_st.integrations` works without langchain-core
    if name == "LLaRAEmbeddings":
        from llara_st.integrations.langchain import LLaRAEmbeddings

        return LLaRAEmbeddings
    raise AttributeError(f"module 'llara_st.integrations' has no attribute {name!r}")
