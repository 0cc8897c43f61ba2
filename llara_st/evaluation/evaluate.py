"""Retrieval evaluation through MTEB: a local BEIR folder (offline) or MTEB's own tasks (Hub)."""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import mteb
import torch
from mteb.abstasks import AbsTask
from mteb.models import CachedEmbeddingWrapper, SearchEncoderWrapper
from sentence_transformers import SentenceTransformer
from torch.utils.data import DataLoader

from llara_st.data.mining import quiet_bm25s_logs
from llara_st.evaluation.beir_task import BEIRFolderRetrieval
from llara_st.evaluation.faiss_index import FaissSearchBackend
from llara_st.evaluation.model_meta import model_fingerprint, model_meta_for, mteb_encoder
from llara_st.model import load

logger = logging.getLogger(__name__)

quiet_bm25s_logs()  # MTEB's BM25 baseline (the reproduction's) runs bm25s too

#: The figures ``llara-st evaluate`` prints (MTEB score keys and their labels).
HEADLINE_METRICS: dict[str, str] = {"ndcg_at_10": "nDCG@10", "recall_at_100": "Recall@100", "mrr_at_10": "MRR@10"}


@contextlib.contextmanager
def _mteb_cache_notices_once() -> Iterator[None]:
    """Each notice of mteb's embedding cache once per evaluation, not per cache folder and again as a warning."""
    seen: set[tuple[int, str]] = set()

    def once(record: logging.LogRecord) -> bool:
        key = (record.levelno, record.getMessage())
        first = key not in seen
        seen.add(key)
        return first

    loggers = [
        logging.getLogger(f"mteb.models.cache_wrappers.{name}")
        for name in ("cache_backends.numpy_cache", "cache_wrapper")
    ]
    for cache_logger in loggers:
        cache_logger.addFilter(once)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=UserWarning, module=r"mteb\.models\.cache_wrappers")
            yield
    finally:
        for cache_logger in loggers:
            cache_logger.removeFilter(once)


def _check_devices(devices: Sequence[str] | None, device: str | None) -> list[str] | None:
    if devices is None:
        return None
    if isinstance(devices, str) or not devices:
        raise ValueError(f"devices must be a non-empty list of torch devices (['cuda:0', 'cuda:1']), got {devices!r}")
    if device is not None:
        raise ValueError(f"give device (one process) or devices (several processes), not both: {device!r}, {devices!r}")
    for name in devices:
        try:
            torch.device(name)
        except (RuntimeError, TypeError):
            raise ValueError(f"devices: {name!r} is not a torch device (e.g. 'cpu', 'cuda:1')") from None
    return [str(name) for name in devices]


class _CachedEncoder(CachedEmbeddingWrapper):
    """MTEB's embedding cache fed documents without their ``title``: ``CachedEmbeddingWrapper`` (mteb 2.26) prepares
    rows again, and a prepared ``text`` already starts with the title ("title title text")."""

    def encode(self, inputs: DataLoader, **kwargs: Any) -> Any:
        if "title" in inputs.dataset.column_names:
            inputs = DataLoader(
                inputs.dataset.remove_columns("title"), batch_size=inputs.batch_size, collate_fn=inputs.collate_fn
            )
        return super().encode(inputs, **kwargs)


def evaluate_beir(
    model: SentenceTransformer | str | os.PathLike,
    folder: str | os.PathLike,
    split: str = "test",
    output_folder: str | os.PathLike | None = None,
    *,
    task_name: str | None = None,
    **kwargs: Any,
) -> dict[str, float]:
    """MTEB's scores (``{"ndcg_at_10": ..., "recall_at_100": ..., ...}``) of a retriever on one split of a local BEIR
    folder, offline: :func:`evaluate_mteb` on a :class:`~llara_st.evaluation.BEIRFolderRetrieval` task. Bad data is
    refused, naming file and line, before a model is loaded or a result written.

    Args:
        task_name: Task name in result files (default: the folder's name).
        **kwargs: Further arguments of :func:`evaluate_mteb` (and ``ModelMeta`` fields).

    Example::

        >>> from llara_st.evaluation import evaluate_beir
        >>> scores = evaluate_beir(model, beir_path, "dev", "runs/eval", show_progress_bar=False)
        >>> scores["recall_at_100"]  # 3 queries, 5 documents: every relevant document is in the top 100
        1.0
    """
    task = BEIRFolderRetrieval(folder, [split], name=task_name)
    task.load_data()  # bad data fails here, before a model is loaded or a result written
    return evaluate_mteb(model, [task], output_folder, **kwargs)[task.metadata.name][split]


def evaluate_mteb(
    model: SentenceTransformer | str | os.PathLike,
    tasks: Sequence[str | AbsTask],
    output_folder: str | os.PathLike | None = None,
    *,
    model_name: str | None = None,
    revision: str | None = None,
    batch_size: int = 32,
    show_progress_bar: bool = True,
    embedding_cache: str | os.PathLike | None = None,
    faiss_index: str | FaissSearchBackend | None = None,
    trust_remote_code: bool = False,
    device: str | None = None,
    devices: Sequence[str] | None = None,
    save_predictions: bool = False,
    overwrite: bool = False,
    **meta_overrides: Any,
) -> dict[str, dict[str, dict[str, float]]]:
    """``{task: {split: scores}}`` of a retriever on MTEB tasks given by name (``["SciFact"]``, from the Hub) or as
    task objects; for multilingual tasks the split key is ``"{split}/{subset}"``. Queries go through
    ``encode_query``, documents (``title + " " + text``) through ``encode_document`` (LLaRA's templates, Li et al.,
    2023, arXiv:2312.15503); the result files are what the MTEB leaderboard takes (docs/mteb_leaderboard.md).

    Args:
        model: A SentenceTransformer, or a folder / Hub id loaded with :func:`llara_st.load` (on ``device``).
        output_folder: Where MTEB writes ``results/{org__model}/{revision}/{task}.json`` and ``model_meta.json``.
            Results it holds for this model and revision are returned as they are unless ``overwrite``.
        model_name, revision: For the result files; defaults: see :func:`~llara_st.evaluation.model_meta_for`.
        embedding_cache: Folder for MTEB's embedding cache, keyed by the model's fingerprint.
        faiss_index: Retrieve with faiss (a factory string such as ``"HNSW32"``, or a ``FaissSearchBackend``).
        devices: Encode in one process per device (``["cuda:0", "cuda:1"]``) with a multi-process pool.
        save_predictions: Also write MTEB's rankings (top 1000 per query) to ``output_folder/predictions/``.
        **meta_overrides: ``ModelMeta`` fields (``training_datasets={"SciFact"}``, ``license``, ...).
    """
    task_objects = [task for task in tasks if isinstance(task, AbsTask)]
    names = [task for task in tasks if isinstance(task, str)]
    if len(task_objects) + len(names) != len(tasks):
        raise TypeError("tasks must be MTEB task names or task objects")
    if names:
        task_objects += list(mteb.get_tasks(tasks=names))
    if not task_objects:
        raise ValueError("No tasks to evaluate")
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    devices = _check_devices(devices, device)
    source = None
    if isinstance(model, str | os.PathLike):
        source = Path(model)
        model = load(model, trust_remote_code=trust_remote_code, device="cpu" if devices is not None else device)
    elif not isinstance(model, SentenceTransformer):
        raise TypeError(f"model must be a SentenceTransformer or a path, got {type(model).__name__}")
    output = Path(output_folder) if output_folder is not None else None
    with contextlib.ExitStack() as stack:
        stack.enter_context(_mteb_cache_notices_once())
        pool = None
        if devices is not None:  # sentence-transformers' multi-process pool moves the model to the CPU: put it back
            stack.callback(model.to, model.device)
            pool = model.start_multi_process_pool(devices)
            stack.callback(model.stop_multi_process_pool, pool)
        meta = model_meta_for(model, model_name, revision, source=source, **meta_overrides)
        encoder: Any = mteb_encoder(model, meta, pool)
        if embedding_cache is not None:
            # Keyed by the weights' fingerprint, so a retrained model never reuses stale vectors (MTEB keys each
            # vector by its text's hash inside); "prepared-once": vectors cached before _CachedEncoder are never read.
            cache_path = Path(embedding_cache) / meta.model_name_as_path() / model_fingerprint(model) / "prepared-once"
            encoder = _CachedEncoder(encoder, cache_path)
            logger.info("Embedding cache: %s", cache_path)
        if faiss_index is not None:
            if not isinstance(faiss_index, FaissSearchBackend):
                # Cosine models are scored by inner products of normalised vectors, as MTEB itself scores them.
                faiss_index = FaissSearchBackend(faiss_index, normalize=meta.similarity_fn_name == "cosine")
            encoder = SearchEncoderWrapper(encoder, index_backend=faiss_index)
        result = mteb.evaluate(
            encoder,
            task_objects,
            cache=mteb.ResultCache(output) if output is not None else None,
            encode_kwargs={"batch_size": batch_size, "show_progress_bar": show_progress_bar},
            overwrite_strategy="always" if overwrite else "only-missing",
            prediction_folder=output / "predictions" if (save_predictions and output is not None) else None,
            show_progress_bar=show_progress_bar,
        )
    if result.exceptions:
        raise RuntimeError(f"MTEB failed: {result.exceptions}")
    summary: dict[str, dict[str, dict[str, float]]] = {}
    for task_result in result.task_results:
        per_split = summary.setdefault(task_result.task_name, {})
        for split, subset_scores in task_result.scores.items():
            for scores in subset_scores:
                subset = scores.get("hf_subset", "default")
                key = split if subset == "default" else f"{split}/{subset}"
                per_split[key] = {
                    name: float(value) for name, value in scores.items() if isinstance(value, int | float)
                }
    return summary


def format_scores(scores: dict[str, float], metrics: dict[str, str] = HEADLINE_METRICS) -> str:
    """``nDCG@10 0.6451  Recall@100 0.9253  MRR@10 0.6101`` from MTEB's score dict."""
    return "  ".join(f"{label} {scores[key]:.4f}" for key, label in metrics.items() if key in scores)


__all__ = ["HEADLINE_METRICS", "evaluate_beir", "evaluate_mteb", "format_scores"]
