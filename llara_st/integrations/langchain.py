"""LangChain embeddings backed by a LLaRA (or any sentence-transformers) model."""

from __future__ import annotations

import os
from typing import Any

from sentence_transformers import SentenceTransformer

try:
    from langchain_core.embeddings import Embeddings
except ImportError as error:  # pragma: no cover - depends on the environment
    raise ImportError(
        "llara_st.integrations.langchain needs langchain-core: `pip install langchain-core` "
        "(or `pip install llara-st[langchain]`)"
    ) from error


class LLaRAEmbeddings(Embeddings):
    """A ``langchain_core.embeddings.Embeddings`` that embeds documents with LLaRA's passage template and queries
    with its query template (Li et al., 2023, "Making Large Language Models A Better Foundation For Dense
    Retrieval", arXiv:2312.15503).

    ``embed_documents`` calls the model's ``encode_document`` and ``embed_query`` its ``encode_query``, so any
    sentence-transformers model with query/document prompts works too. Embeddings are L2-normalised by the
    model (LLaRA's ``Normalize`` module), so LangChain's cosine and inner-product stores rank alike.

    Args:
        model: A loaded ``SentenceTransformer``, or a folder / Hub id loaded with the safe :func:`llara_st.load`.
        trust_remote_code: Load a folder with custom module code through ``SentenceTransformer(...,
            trust_remote_code=True)`` instead (only for folders you trust).
        device: Device when loading from a path.
        batch_size: Encoding batch size.
        encode_kwargs: Further keyword arguments for ``encode_query`` / ``encode_document``.

    Example::

        from langchain_core.vectorstores import InMemoryVectorStore
        from llara_st.integrations.langchain import LLaRAEmbeddings

        embeddings = LLaRAEmbeddings("models/llara-scifact")
        store = InMemoryVectorStore(embeddings)
        store.add_texts(["Tides are caused by the Moon.", "Paris is in France."])
        store.similarity_search("what causes tides?", k=1)
    """

    def __init__(
        self,
        model: SentenceTransformer | str | os.PathLike,
        *,
        trust_remote_code: bool = False,
        device: str | None = None,
        batch_size: int = 32,
        encode_kwargs: dict[str, Any] | None = None,
    ) -> None:
        if isinstance(model, SentenceTransformer):
            self.model = model
        elif isinstance(model, str | os.PathLike):
            from llara_st.evaluation.loading import load_sentence_transformer

            self.model = load_sentence_transformer(model, trust_remote_code=trust_remote_code, device=device)
        else:
            raise TypeError(f"model must be a SentenceTransformer or a path, got {type(model).__name__}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self.batch_size = batch_size
        self.encode_kwargs = dict(encode_kwargs or {})
        reserved = {"convert_to_numpy", "convert_to_tensor", "batch_size"} & set(self.encode_kwargs)
        if reserved:
            raise ValueError(f"encode_kwargs may not set {sorted(reserved)}; LLaRAEmbeddings sets them")

    def _encode_options(self) -> dict[str, Any]:
        return {"batch_size": self.batch_size, "convert_to_numpy": True, **self.encode_kwargs}

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        """Passage-template embeddings of ``texts``."""
        if isinstance(texts, str):
            raise TypeError("embed_documents takes a list of strings; use embed_query for a single query")
        texts = list(texts)
        if not texts:
            return []
        return self.model.encode_document(texts, **self._encode_options()).tolist()

    def embed_query(self, text: str) -> list[float]:
        """Query-template embedding of ``text``."""
        if not isinstance(text, str):
            raise TypeError(f"embed_query takes a string, got {type(text).__name__}")
        return self.model.encode_query([text], **self._encode_options())[0].tolist()


__all__ = ["LLaRAEmbeddings"]
