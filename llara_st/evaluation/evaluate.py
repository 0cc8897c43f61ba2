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

# mteb's embedding cache logs each of its notices and warns it again (warnings.warn), per cache folder (queries,
# documents): a fresh cache printed "Dimension file not found" and "No existing files found" three times each.
_MTEB_CACHE_LOGGERS = (
    "mteb.models.cache_wrappers.cache_backends.numpy_cache",
    "mteb.models.cache_wrappers.cache_wrapper",
)

#: The figures ``llara-st evaluate`` prints (MTEB score keys and their labels).
HEADLINE_METRICS: dict[str, str] = {"ndcg_at_10": "nDCG@10", "recall_at_100": "Recall@100", "mrr_at_10": "MRR@10"}


class _OncePerMessage(logging.Filter):
    """Lets each distinct message through once."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: set[tuple[int, str]] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        key = (record.levelno, record.getMessage())
        if key in self.seen:
            return False
        self.seen.add(key)
        return True


@contextlib.contextmanager
def _mteb_cache_notices_once() -> Iterator[None]:
    """Each of mteb's cache notices at most once per evaluation: logged, not warned a second time (issue 18.8)."""
    once = _OncePerMessage()
    loggers = [logging.getLogger(name) for name in _MTEB_CACHE_LOGGERS]
    for cache_logger in loggers:
        cache_logger.addFilter(once)
    try:
        with warnings.catch_warnings():
            # Every warnings.warn of mteb's cache repeats a message its logger has just logged.
            warnings.filterwarnings("ignore", category=UserWarning, module=r"mteb\.models\.cache_wrappers")
            yield
    finally:
        for cache_logger in loggers:
            cache_logger.removeFilter(once)


@contextlib.contextmanager
def _encoding_pool(model: SentenceTransformer, devices: Sequence[str] | None) -> Iterator[dict[str, Any] | None]:
    """sentence-transformers' multi-process pool on ``devices`` (None: no pool), stopped afterwards.

    Each worker receives the model pickled (a LLaRA model's modules are llara_st classes, imported in the worker);
    starting the pool moves the model to the CPU, so it is put back where it was.
    """
    if devices is None:
        yield None
        return
    device = model.device
    pool = model.start_multi_process_pool(list(devices))
    try:
        yield pool
    finally:
        model.stop_multi_process_pool(pool)
        model.to(device)


def _check_devices(devices: Sequence[str] | None, device: str | None) -> list[str] | None:
    if devices is None:
        return None
    if isinstance(devices, str) or not devices:
        raise ValueError(
            f"devices must be a non-empty list of torch devices such as ['cuda:0', 'cuda:1'], got {devices!r}"
        )
    if device is not None:
        raise ValueError(f"give device (one process) or devices (several processes), not both: {device!r}, {devices!r}")
    for name in devices:
        try:
            torch.device(name)
        except (RuntimeError, TypeError):
            raise ValueError(f"devices: {name!r} is not a torch device (e.g. 'cpu', 'cuda:1')") from None
    return [str(name) for name in devices]


def _numeric_scores(scores: dict[str, Any]) -> dict[str, float]:
    return {key: float(value) for key, value in scores.items() if isinstance(value, int | float)}


def _prepare_model(
    model: SentenceTransformer | str | os.PathLike,
    *,
    trust_remote_code: bool,
    device: str | None,
) -> tuple[SentenceTransformer, Path | None]:
    if isinstance(model, SentenceTransformer):
        return model, None
    if isinstance(model, str | os.PathLike):
        return load(model, trust_remote_code=trust_remote_code, device=device), Path(model)
    raise TypeError(f"model must be a SentenceTransformer or a path, got {type(model).__name__}")


class _CachedEncoder(CachedEmbeddingWrapper):
    """MTEB's embedding cache, fed documents as prepared once.

    ``CachedEmbeddingWrapper`` (mteb 2.26) prepares the rows it receives a second time before encoding the uncached
    ones; a prepared document's ``text`` already starts with its title, so the second pass made it "title title
    text" and cached scores differed from uncached ones. Without the ``title`` column the second pass keeps the
    prepared text as it is, so the cache encodes exactly what the plain path encodes.
    """

    def encode(self, inputs: DataLoader, **kwargs: Any) -> Any:
        if "title" in inputs.dataset.column_names:
            inputs = DataLoader(
                inputs.dataset.remove_columns("title"), batch_size=inputs.batch_size, collate_fn=inputs.collate_fn
            )
        return super().encode(inputs, **kwargs)


def _mteb_model(
    model: SentenceTransformer,
    source: Path | None,
    *,
    model_name: str | None,
    revision: str | None,
    embedding_cache: str | os.PathLike | None,
    faiss_index: str | FaissSearchBackend | None,
    meta_overrides: dict[str, Any],
    pool: dict[str, Any] | None = None,
) -> Any:
    meta = model_meta_for(model, model_name, revision, source=source, **meta_overrides)
    encoder: Any = mteb_encoder(model, meta, pool)
    if embedding_cache is not None:
        # Keyed by the weights' fingerprint, not the user's revision label, so a retrained model never reuses
        # stale vectors; inside, MTEB keys each vector by its text's hash (per task and query/document side).
        # "prepared-once": vectors cached before _CachedEncoder (titles doubled) live elsewhere and are never read.
        cache_path = Path(embedding_cache) / meta.model_name_as_path() / model_fingerprint(model) / "prepared-once"
        encoder = _CachedEncoder(encoder, cache_path)
        logger.info("Embedding cache: %s", cache_path)
    if faiss_index is not None:
        backend = faiss_index
        if not isinstance(backend, FaissSearchBackend):
            # Cosine models are scored by inner products of normalised vectors, as MTEB itself scores them.
            backend = FaissSearchBackend(faiss_index, normalize=meta.similarity_fn_name == "cosine")
        encoder = SearchEncoderWrapper(encoder, index_backend=backend)
    return encoder


def evaluate_beir(
    model: SentenceTransformer | str | os.PathLike,
    folder: str | os.PathLike,
    split: str = "test",
    output_folder: str | os.PathLike | None = None,
    *,
    task_name: str | None = None,
    **kwargs: Any,
) -> dict[str, float]:
    """Evaluate a retriever on one split of a local BEIR folder with MTEB, offline; return MTEB's scores.

    :func:`evaluate_mteb` on one :class:`~llara_st.evaluation.BEIRFolderRetrieval` task: queries go through
    ``encode_query`` and documents (``title + " " + text``) through ``encode_document``, so a LLaRA model (Li et
    al., 2023, arXiv:2312.15503) uses its query and passage templates; MTEB ranks by the model's similarity
    (cosine) and computes nDCG, MAP, recall, precision and MRR at 1, 3, 5, 10, 20, 100, 1000. The folder is read
    (and bad data refused, naming file and line) before a model is loaded or a result written.

    Args:
        model: A loaded SentenceTransformer, or a folder / Hub id (see :func:`evaluate_mteb`).
        folder: BEIR folder (``corpus.jsonl``, ``queries.jsonl``, ``qrels/{split}.tsv``).
        split: The qrels split.
        output_folder: If given, MTEB writes ``results/{org__model}/{revision}/{task}.json`` and ``model_meta.json``
            there (the results repository's layout); one task file holds every split of a folder.
        task_name: Task name in result files (default: the BEIR folder's name).
        **kwargs: The keyword arguments of :func:`evaluate_mteb` (``model_name``, ``revision``, ``batch_size``,
            ``embedding_cache``, ``faiss_index``, ``overwrite``, ... and ``ModelMeta`` fields).

    Returns:
        MTEB's scores for the split: ``{"ndcg_at_10": ..., "recall_at_100": ..., "mrr_at_10": ..., ...}``.

    Example::

        >>> from llara_st.evaluation import evaluate_beir
        >>> scores = evaluate_beir(model, beir_path, "dev", "runs/eval", embedding_cache="runs/emb",
        ...                        show_progress_bar=False)
        >>> 0 <= scores["ndcg_at_10"] <= 1 and 0 <= scores["recall_at_100"] <= 1
        True
        >>> scores["recall_at_100"]  # 3 queries, 5 documents: every relevant document is in the top 100
        1.0
    """
    task = BEIRFolderRetrieval(folder, [split], name=task_name)
    task.load_data()  # bad data fails here, naming file and line, before a model is loaded or a result written
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
    """Evaluate a retriever on MTEB tasks by name (``["SciFact", "NFCorpus"]``; data from the Hub) or task objects.

    Queries go through ``encode_query`` and documents through ``encode_document`` (MTEB's SentenceTransformer
    wrapper), so a LLaRA model uses its query and passage templates. The result files are what the MTEB
    leaderboard's results repository takes (see docs/mteb_leaderboard.md). Existing results in ``output_folder``
    are kept unless ``overwrite``, so an interrupted run resumes. :func:`evaluate_beir` is this on a local folder.

    Args:
        model: A loaded SentenceTransformer, or a folder / Hub id (loaded with the safe :func:`llara_st.load`, or
            with remote code if ``trust_remote_code``).
        tasks: MTEB task names or task objects (e.g. :class:`~llara_st.evaluation.BEIRFolderRetrieval`).
        output_folder: If given, MTEB writes ``results/{org__model}/{revision}/{task}.json`` and ``model_meta.json``
            there (the results repository's layout).
        model_name: ``"organization/model"`` for the result files (default: model card name or ``local/{folder}``).
        revision: Revision label (default: :func:`~llara_st.evaluation.model_fingerprint`).
        batch_size: Encoding batch size.
        show_progress_bar: Show encoding progress.
        embedding_cache: Folder for MTEB's embedding cache: each text is encoded once per model (fingerprint),
            so a second split or rerun of the same corpus skips the corpus encoding.
        faiss_index: Retrieve with faiss (a factory string such as ``"Flat"``, ``"HNSW32"``, ``"IVF1024,SQ8"``, or a
            configured :class:`~llara_st.evaluation.FaissSearchBackend`) instead of MTEB's exact chunked search.
        trust_remote_code: See :func:`llara_st.load`.
        device: Device when loading from a path.
        devices: Encode in several processes, one per device (``["cuda:0", "cuda:1"]``, ``["cpu", "cpu"]``), with
            sentence-transformers' multi-process pool (``start_multi_process_pool``): each process encodes its share
            of the texts; scores are those of one process up to rounding. A model given by path loads on the CPU
            first; a loaded model is put back on its device afterwards.
        save_predictions: Also write MTEB's rankings (top 1000 per query) to ``output_folder/predictions/``.
        overwrite: Recompute even if ``output_folder`` already holds a split's results for this model (name and
            revision) and replace the task's result file. By default existing results are returned as they are
            and a new split is added to the task's file.
        **meta_overrides: ``ModelMeta`` fields (``training_datasets={"SciFact"}``, ``license``, ...).

    Returns:
        ``{task: {split: scores}}``; for multilingual tasks the split key is ``"{split}/{subset}"``.
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
    loaded, source = _prepare_model(
        model, trust_remote_code=trust_remote_code, device="cpu" if devices is not None else device
    )
    output = Path(output_folder) if output_folder is not None else None
    with _encoding_pool(loaded, devices) as pool, _mteb_cache_notices_once():
        mteb_model = _mteb_model(
            loaded,
            source,
            model_name=model_name,
            revision=revision,
            embedding_cache=embedding_cache,
            faiss_index=faiss_index,
            meta_overrides=meta_overrides,
            pool=pool,
        )
        result = mteb.evaluate(
            mteb_model,
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
                per_split[key] = _numeric_scores(scores)
    return summary


def format_scores(scores: dict[str, float], metrics: dict[str, str] = HEADLINE_METRICS) -> str:
    """``nDCG@10 0.6451  Recall@100 0.9253  MRR@10 0.6101`` from MTEB's score dict."""
    return "  ".join(f"{label} {scores[key]:.4f}" for key, label in metrics.items() if key in scores)


__all__ = ["HEADLINE_METRICS", "evaluate_beir", "evaluate_mteb", "format_scores"]
