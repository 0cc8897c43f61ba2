"""LangChain embeddings backed by a LLaRA (or any sentence-transformers) model."""

from __future__ import annotations

import os
from typing import Any

from sentence_transformers import SentenceTransformer

from llara_st.model import load

try:
    from langchain_core.embeddings import Embeddings
except ImportError as error:  # pragma: no cover - depends on the environment
    raise ModuleNotFoundError(
        "llara_st.integrations.langchain needs langchain-core, which is not installed: "
        "pip install 'llara-st[langchain]'",
        name="langchain_core",
    ) from error

# ``model_kwargs`` keys (``SentenceTransformer`` arguments, as in ``HuggingFaceEmbeddings``): those that find the
# folder, those that reach the model, those only a trusted folder's own code takes.
_DOWNLOAD_KEYS = frozenset({"revision", "token", "local_files_only"})
_SAFE_LOAD_KEYS = frozenset(
    {
        "device",
        "trust_remote_code",
        "model_kwargs",
        "truncate_dim",
        "prompts",
        "default_prompt_name",
        "similarity_fn_name",
    }
)
_TRUSTED_ONLY_KEYS = frozenset({"config_kwargs", "processor_kwargs", "backend", "model_card_data"})
# Backbone options a user may put one level too high.
_BACKBONE_KEYS = frozenset({"dtype", "torch_dtype", "attn_implementation", "device_map", "quantization_config"})
# encode() arguments this class decides itself.
_RESERVED_ENCODE_KEYS = frozenset({"task", "convert_to_numpy", "convert_to_tensor", "output_value", "pool"})


class LLaRAEmbeddings(Embeddings):
    """A ``langchain_core.embeddings.Embeddings`` that embeds documents with LLaRA's passage template and queries
    with its query template (Li et al., 2023, arXiv:2312.15503).

    ``embed_documents`` calls the model's ``encode_document`` and ``embed_query`` its ``encode_query``, so any
    sentence-transformers model with query/document prompts works too. The arguments are those of
    langchain-huggingface's ``HuggingFaceEmbeddings``; the model may also be given first, as a path or a model.

    Args:
        model: A loaded ``SentenceTransformer``, or a folder / Hub id (as ``model_name``, loaded with the safe
            :func:`llara_st.load`; with ``trust_remote_code`` the folder's own code runs).
        model_kwargs: ``SentenceTransformer`` arguments (``device``, ``revision``, ``truncate_dim``, ...), and
            ``model_kwargs`` for the backbone (e.g. ``{"dtype": "bfloat16"}``).
        encode_kwargs: ``encode`` arguments for documents, and for queries unless ``query_encode_kwargs`` is given.
        multi_process: Embed document lists with a multi-process pool started and stopped around each call.
        trust_remote_code, device, batch_size: Shortcuts for the same keys of ``model_kwargs`` / ``encode_kwargs``.

    Example::

        >>> from langchain_core.vectorstores import InMemoryVectorStore
        >>> from llara_st.integrations.langchain import LLaRAEmbeddings
        >>> embeddings = LLaRAEmbeddings(model_name=llara_path, model_kwargs={"device": "cpu"})  # a folder or Hub id
        >>> store = InMemoryVectorStore(embeddings)
        >>> ids = store.add_texts(["Tides are caused by the Moon.", "Paris is in France."])
        >>> len(store.similarity_search("what causes tides?", k=1))
        1
    """

    def __init__(
        self,
        model: SentenceTransformer | str | os.PathLike | None = None,
        *,
        model_name: str | os.PathLike | None = None,
        cache_folder: str | os.PathLike | None = None,
        model_kwargs: dict[str, Any] | None = None,
        encode_kwargs: dict[str, Any] | None = None,
        query_encode_kwargs: dict[str, Any] | None = None,
        multi_process: bool = False,
        show_progress: bool = False,
        trust_remote_code: bool | None = None,
        device: str | None = None,
        batch_size: int | None = None,
    ) -> None:
        if model is not None and model_name is not None:
            raise ValueError("Give the model either first or as model_name=, not both")
        model = model if model is not None else model_name
        if model is None:
            raise ValueError("LLaRAEmbeddings needs a model: a folder or Hub id (model_name=...) or a loaded model")
        model_kwargs = dict(model_kwargs or {})
        self.encode_kwargs, self.query_encode_kwargs = dict(encode_kwargs or {}), dict(query_encode_kwargs or {})
        for name, value, where, target in (
            ("trust_remote_code", trust_remote_code, "model_kwargs", model_kwargs),
            ("device", device, "model_kwargs", model_kwargs),
            ("batch_size", batch_size, "encode_kwargs", self.encode_kwargs),
        ):
            if value is not None:
                if target.get(name, value) != value:
                    raise ValueError(f"{name} is given twice with different values: {name}= and {where}")
                target[name] = value
        for name, options in (("encode_kwargs", self.encode_kwargs), ("query_encode_kwargs", self.query_encode_kwargs)):
            if reserved := sorted(_RESERVED_ENCODE_KEYS & set(options)):
                raise ValueError(f"{name} may not set {reserved}: LLaRAEmbeddings picks the template and output")
            size = options.get("batch_size", 32)
            if not isinstance(size, int) or isinstance(size, bool) or size < 1:
                raise ValueError(f"batch_size must be a positive integer, got {size!r} (in {name})")
        self.multi_process = bool(multi_process)
        self.show_progress = bool(show_progress)
        self.cache_folder = None if cache_folder is None else str(cache_folder)
        self.model_kwargs = model_kwargs

        if isinstance(model, SentenceTransformer):
            if model_kwargs or cache_folder is not None:
                raise ValueError(
                    "model_kwargs, cache_folder, device and trust_remote_code apply when loading from a path; "
                    "this model is already loaded"
                )
            self.model, self.model_name = model, None
        elif isinstance(model, str | os.PathLike):
            self.model_name = str(model)
            options = dict(model_kwargs)
            trust_remote_code = bool(options.pop("trust_remote_code", False))
            if misplaced := sorted(_BACKBONE_KEYS & set(options)):
                raise ValueError(
                    f"model_kwargs keys {misplaced} are options of the backbone: put them one level down, "
                    f"model_kwargs={{'model_kwargs': {{'{misplaced[0]}': ...}}}}"
                )
            allowed = _SAFE_LOAD_KEYS | _DOWNLOAD_KEYS | (_TRUSTED_ONLY_KEYS if trust_remote_code else frozenset())
            if unknown := sorted(set(options) - allowed):
                hint = " (they need trust_remote_code=True)" if set(unknown) <= _TRUSTED_ONLY_KEYS else ""
                raise ValueError(f"model_kwargs keys {unknown} are not supported{hint}; supported: {sorted(allowed)}")
            # llara_st.load downloads a Hub id and checks the folder, unless trust_remote_code=True.
            self.model = load(model, cache_folder=self.cache_folder, trust_remote_code=trust_remote_code, **options)
        else:
            raise TypeError(f"model must be a SentenceTransformer or a path, got {type(model).__name__}")

    def _encode_options(self, options: dict[str, Any]) -> dict[str, Any]:
        return {"show_progress_bar": self.show_progress, **options, "convert_to_numpy": True}

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        """Passage-template embeddings of ``texts``."""
        if isinstance(texts, str):
            raise TypeError("embed_documents takes a list of strings; use embed_query for a single query")
        texts = list(texts)
        if not texts:
            return []
        options = self._encode_options(self.encode_kwargs)
        if not self.multi_process:
            return self.model.encode_document(texts, **options).tolist()
        pool = self.model.start_multi_process_pool()
        try:
            return self.model.encode_document(texts, pool=pool, **options).tolist()
        finally:
            self.model.stop_multi_process_pool(pool)

    def embed_query(self, text: str) -> list[float]:
        """Query-template embedding of ``text``."""
        if not isinstance(text, str):
            raise TypeError(f"embed_query takes a string, got {type(text).__name__}")
        options = self._encode_options(self.query_encode_kwargs or self.encode_kwargs)
        return self.model.encode_query([text], **options)[0].tolist()


__all__ = ["LLaRAEmbeddings"]
