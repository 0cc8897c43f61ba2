"""LangChain embeddings backed by a LLaRA (or any sentence-transformers) model."""

from __future__ import annotations

import os
from typing import Any

from sentence_transformers import SentenceTransformer

try:
    from langchain_core.embeddings import Embeddings
except ImportError as error:  # pragma: no cover - depends on the environment
    raise ModuleNotFoundError(
        "llara_st.integrations.langchain needs langchain-core, which is not installed: "
        "pip install 'llara-st[langchain]'",
        name="langchain_core",
    ) from error

# ``model_kwargs`` keys, as in langchain-huggingface's ``HuggingFaceEmbeddings``: arguments of the
# ``SentenceTransformer`` constructor. Those that choose where the files come from are used to find the folder;
# the rest reach the model.
_DOWNLOAD_KEYS = frozenset({"revision", "token", "local_files_only"})
_SAFE_LOAD_KEYS = frozenset(
    {"device", "trust_remote_code", "model_kwargs", "truncate_dim", "prompts", "default_prompt_name"}
    | {"similarity_fn_name"}
)
_TRUSTED_ONLY_KEYS = frozenset({"config_kwargs", "processor_kwargs", "backend", "model_card_data"})
# Backbone options a user may put one level too high.
_BACKBONE_KEYS = frozenset({"dtype", "torch_dtype", "attn_implementation", "device_map", "quantization_config"})
# encode() arguments this class decides itself.
_RESERVED_ENCODE_KEYS = frozenset({"task", "convert_to_numpy", "convert_to_tensor", "output_value", "pool"})


class LLaRAEmbeddings(Embeddings):
    """A ``langchain_core.embeddings.Embeddings`` that embeds documents with LLaRA's passage template and queries
    with its query template (Li et al., 2023, "Making Large Language Models A Better Foundation For Dense
    Retrieval", arXiv:2312.15503).

    ``embed_documents`` calls the model's ``encode_document`` and ``embed_query`` its ``encode_query``, so any
    sentence-transformers model with query/document prompts works too. Embeddings are L2-normalised by the
    model (LLaRA's ``Normalize`` module), so LangChain's cosine and inner-product stores rank alike.

    The arguments are those of langchain-huggingface's ``HuggingFaceEmbeddings`` (``model_name``,
    ``cache_folder``, ``model_kwargs``, ``encode_kwargs``, ``query_encode_kwargs``, ``multi_process``,
    ``show_progress``), with the same meaning; the model may also be given first, as a path or a loaded model.

    Args:
        model: A loaded ``SentenceTransformer``, or a folder / Hub id (same as ``model_name``).
        model_name: A folder or Hub id, loaded with the safe :func:`llara_st.load` (safetensors and
            llara_st/sentence-transformers classes only, no code from the folder).
        cache_folder: Where a Hub model is downloaded (default: the Hugging Face cache).
        model_kwargs: ``SentenceTransformer`` arguments: ``device``, ``trust_remote_code`` (load through
            ``SentenceTransformer(..., trust_remote_code=True)``, running the folder's code: only for folders you
            trust), ``revision``, ``token``, ``local_files_only``, ``truncate_dim``, ``prompts``, and
            ``model_kwargs`` for the backbone's ``from_pretrained`` (e.g. ``{"dtype": "bfloat16"}``).
        encode_kwargs: Further ``encode`` arguments (``batch_size``, ``precision``, ``truncate_dim``, ...), for
            documents, and for queries unless ``query_encode_kwargs`` is given.
        query_encode_kwargs: ``encode`` arguments for queries; when given they replace ``encode_kwargs`` for
            queries, as in ``HuggingFaceEmbeddings``.
        multi_process: Embed document lists with a sentence-transformers multi-process pool (one process per GPU,
            or several CPU processes), started and stopped around each call. Queries stay in-process.
        show_progress: Show a progress bar while embedding.
        trust_remote_code: Shortcut for ``model_kwargs={"trust_remote_code": True}``.
        device: Shortcut for ``model_kwargs={"device": ...}``.
        batch_size: Shortcut for ``encode_kwargs={"batch_size": ...}`` (sentence-transformers' default: 32).

    Example::

        >>> from langchain_core.vectorstores import InMemoryVectorStore
        >>> from llara_st.integrations.langchain import LLaRAEmbeddings
        >>> embeddings = LLaRAEmbeddings(
        ...     model_name=llara_path,  # a LLaRA folder or Hub id, e.g. a fine-tuned "models/llara-scifact"
        ...     model_kwargs={"device": "cpu", "model_kwargs": {"dtype": "bfloat16"}},
        ...     encode_kwargs={"batch_size": 16},
        ... )
        >>> store = InMemoryVectorStore(embeddings)
        >>> ids = store.add_texts(["Tides are caused by the Moon.", "Paris is in France."])
        >>> hits = store.similarity_search("what causes tides?", k=1)  # a trained model finds the Moon
        >>> len(hits), len(embeddings.embed_query("what causes tides?"))
        (1, 64)
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
        for name, value in (("trust_remote_code", trust_remote_code), ("device", device)):
            if value is not None:
                if name in model_kwargs and model_kwargs[name] != value:
                    raise ValueError(f"{name} is given twice with different values: {name}= and model_kwargs")
                model_kwargs[name] = value
        self.encode_kwargs = self._checked_encode_kwargs(encode_kwargs, "encode_kwargs")
        self.query_encode_kwargs = self._checked_encode_kwargs(query_encode_kwargs, "query_encode_kwargs")
        if batch_size is not None:
            if "batch_size" in self.encode_kwargs and self.encode_kwargs["batch_size"] != batch_size:
                raise ValueError("batch_size is given twice with different values: batch_size= and encode_kwargs")
            self.encode_kwargs["batch_size"] = batch_size
        for name, options in (("encode_kwargs", self.encode_kwargs), ("query_encode_kwargs", self.query_encode_kwargs)):
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
            self.model = model
            self.model_name = None
        elif isinstance(model, str | os.PathLike):
            self.model_name = str(model)
            self.model = _load(model, cache_folder=self.cache_folder, model_kwargs=model_kwargs)
        else:
            raise TypeError(f"model must be a SentenceTransformer or a path, got {type(model).__name__}")

    @staticmethod
    def _checked_encode_kwargs(options: dict[str, Any] | None, name: str) -> dict[str, Any]:
        options = dict(options or {})
        reserved = _RESERVED_ENCODE_KEYS & set(options)
        if reserved:
            raise ValueError(
                f"{name} may not set {sorted(reserved)}: embed_query uses the query template and embed_documents "
                "the passage template, and both return lists of floats"
            )
        return options

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


def _load(path: str | os.PathLike, *, cache_folder: str | None, model_kwargs: dict[str, Any]) -> SentenceTransformer:
    """Load a folder or Hub id with the arguments ``HuggingFaceEmbeddings`` takes, through :func:`llara_st.load`."""
    options = dict(model_kwargs)
    trust_remote_code = bool(options.pop("trust_remote_code", False))
    misplaced = sorted(_BACKBONE_KEYS & set(options))
    if misplaced:
        raise ValueError(
            f"model_kwargs keys {misplaced} are options of the backbone, not of SentenceTransformer: put them one "
            f"level down, as with HuggingFaceEmbeddings: model_kwargs={{'model_kwargs': {{'{misplaced[0]}': ...}}}}"
        )
    allowed = _SAFE_LOAD_KEYS | _DOWNLOAD_KEYS | (_TRUSTED_ONLY_KEYS if trust_remote_code else frozenset())
    unknown = sorted(set(options) - allowed)
    if unknown:
        hint = " (they need trust_remote_code=True)" if set(unknown) <= _TRUSTED_ONLY_KEYS else ""
        raise ValueError(f"model_kwargs keys {unknown} are not supported{hint}; supported: {sorted(allowed)}")
    from llara_st.model import load

    # llara_st.load downloads a Hub id (revision, token, local_files_only, cache_folder) and checks the folder;
    # with trust_remote_code=True it loads with SentenceTransformer(..., trust_remote_code=True) instead.
    return load(path, cache_folder=cache_folder, trust_remote_code=trust_remote_code, **options)


__all__ = ["LLaRAEmbeddings"]
