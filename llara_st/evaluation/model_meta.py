"""MTEB model metadata for LLaRA (and other sentence-transformers) models, and an MTEB loader for LLaRA."""

from __future__ import annotations

import datetime
import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from mteb.models import ModelMeta, SentenceTransformerEncoderWrapper
from sentence_transformers import SentenceTransformer

from llara_st.citation import LLARA_CITATION, LLARA_REFERENCE  # noqa: F401  (re-exported)
from llara_st.evaluation.fingerprint import model_fingerprint  # noqa: F401  (re-exported)
from llara_st.model import llara_module, load

logger = logging.getLogger(__name__)


def _parameter_stats(model: SentenceTransformer) -> tuple[int, float]:
    parameters = list(model.parameters())
    megabytes = sum(p.numel() * p.element_size() for p in parameters) / 2**20
    return sum(p.numel() for p in parameters), round(megabytes, 1)


def llara_model_meta(
    name: str,
    revision: str | None = None,
    *,
    model: SentenceTransformer | None = None,
    n_parameters: int | None = None,
    embed_dim: int | None = None,
    max_tokens: int | None = None,
    memory_usage_mb: float | None = None,
    training_datasets: Iterable[str] | None = None,
    adapted_from: str | None = None,
    reference: str | None = LLARA_REFERENCE,
    release_date: str | None = None,
    license: str | None = None,
    languages: Iterable[str] = ("eng-Latn",),
    public_training_code: str | None = None,
    public_training_data: str | bool | None = None,
) -> ModelMeta:
    """MTEB ``ModelMeta`` of a LLaRA embedder (Li et al., 2023, arXiv:2312.15503): dense, cosine similarity, no
    instructions, loaded by :func:`load_llara_for_mteb` (so ``mteb.evaluate(meta, tasks)`` works).

    Args:
        name: ``"organization/model"`` as on the Hugging Face Hub.
        revision: The Hub commit sha of the evaluated weights; default: :func:`model_fingerprint` of ``model``.
        model: A loaded model to read the parameter count, embedding size, max tokens and memory from (the other
            arguments override it).
        training_datasets: MTEB task names whose training data the model saw (``{"SciFact"}``). Empty: no MTEB data;
            None: unknown.
        release_date: ``YYYY-MM-DD``; default today.

    Example::

        >>> from llara_st.evaluation import llara_model_meta
        >>> meta = llara_model_meta("me/llara-scifact", revision="3f2a9c1", model=model, training_datasets={"SciFact"})
        >>> meta.model_name_as_path(), meta.max_tokens == model[0].passage_max_length, meta.similarity_fn_name
        ('me__llara-scifact', True, <ScoringFunction.COSINE: 'cosine'>)
    """
    if model is not None:
        counted, megabytes = _parameter_stats(model)
        n_parameters = n_parameters if n_parameters is not None else counted
        memory_usage_mb = memory_usage_mb if memory_usage_mb is not None else megabytes
        embed_dim = embed_dim if embed_dim is not None else model.get_embedding_dimension()
        if max_tokens is None:
            transformer = llara_module(model)
            max_tokens = transformer.passage_max_length if transformer is not None else model.max_seq_length
        if revision is None:
            revision = model_fingerprint(model)
    return ModelMeta(
        loader=load_llara_for_mteb,
        name=name,
        revision=revision,
        release_date=release_date or datetime.date.today().isoformat(),
        languages=list(languages),
        n_parameters=n_parameters,
        memory_usage_mb=memory_usage_mb,
        max_tokens=max_tokens,
        embed_dim=embed_dim,
        license=license,
        open_weights=True,
        public_training_code=public_training_code,
        public_training_data=public_training_data,
        framework=["Sentence Transformers", "PyTorch"],
        reference=reference,
        similarity_fn_name="cosine",
        use_instructions=False,
        training_datasets=set(training_datasets) if training_datasets is not None else None,
        adapted_from=adapted_from,
        citation=LLARA_CITATION,
    )


def load_llara_for_mteb(
    model_name: str, revision: str | None = None, device: str | None = None, **kwargs: Any
) -> SentenceTransformerEncoderWrapper:
    """MTEB's ``ModelMeta.loader`` for LLaRA models: :func:`llara_st.load` wrapped as an MTEB encoder. Of ``kwargs``
    only ``model_kwargs`` (for the backbone, e.g. ``{"torch_dtype": "bfloat16"}``) is used."""
    model = load(model_name, revision=revision, device=device, model_kwargs=kwargs.pop("model_kwargs", None))
    if kwargs:
        logger.info("load_llara_for_mteb ignores the options %s", sorted(kwargs))
    return SentenceTransformerEncoderWrapper(model)


def model_meta_for(
    model: SentenceTransformer,
    name: str | None = None,
    revision: str | None = None,
    *,
    source: str | Path | None = None,
    **overrides: Any,
) -> ModelMeta:
    """The ``ModelMeta`` under which a loaded model's results are recorded: :func:`llara_model_meta` for LLaRA
    models, MTEB's ``ModelMeta.from_sentence_transformer_model`` for others.

    Args:
        name: Default: the model card's name, else the Hub id or ``local/{folder name}`` of ``source`` (where the
            model was loaded from), else ``local/model``. ``revision``: default :func:`model_fingerprint`.
        **overrides: Further ``ModelMeta`` fields (``training_datasets``, ``license``, ...).
    """
    if name is None:
        card_name = model.model_card_data.model_name
        if card_name and "/" in card_name:
            name = card_name
        elif source is not None and not Path(source).is_dir() and str(source).count("/") == 1:
            name = str(source)  # a Hub id
        elif source is not None:
            name = f"local/{Path(source).name}"
        else:
            name = "local/model"
    if "/" not in name:
        raise ValueError(f"MTEB model names have the form 'organization/model', got {name!r}")
    revision = revision or model_fingerprint(model)
    if llara_module(model) is not None:
        return llara_model_meta(name, revision, model=model, **overrides)
    count, megabytes = _parameter_stats(model)
    updates: dict[str, Any] = {"name": name, "revision": revision, "n_parameters": count, "memory_usage_mb": megabytes}
    if overrides.get("training_datasets") is not None:
        overrides["training_datasets"] = set(overrides["training_datasets"])
    meta = ModelMeta.from_sentence_transformer_model(model, fetch_from_hf=False)
    return meta.model_copy(update=updates | overrides)


class _PoolEncoderWrapper(SentenceTransformerEncoderWrapper):
    """Encodes in a multi-process pool, given here, not in ``encode_kwargs`` (which MTEB writes to its results)."""

    def __init__(self, model: SentenceTransformer, pool: dict[str, Any]) -> None:
        super().__init__(model)
        self.pool = pool

    def encode(self, inputs: Any, **kwargs: Any) -> Any:
        return super().encode(inputs, pool=self.pool, **kwargs)


def mteb_encoder(
    model: SentenceTransformer, meta: ModelMeta, pool: dict[str, Any] | None = None
) -> SentenceTransformerEncoderWrapper:
    """MTEB's SentenceTransformer wrapper around ``model``, recording results under ``meta``, encoding in ``pool``
    (from ``model.start_multi_process_pool``) if given."""
    wrapper = SentenceTransformerEncoderWrapper(model) if pool is None else _PoolEncoderWrapper(model, pool)
    wrapper.mteb_model_meta = meta
    return wrapper


__all__ = [
    "LLARA_CITATION",
    "llara_model_meta",
    "load_llara_for_mteb",
    "model_fingerprint",
    "model_meta_for",
    "mteb_encoder",
]
