"""Hard negatives mined with a dense retriever (sentence-transformers' ``mine_hard_negatives``) or BM25 (``bm25s``),
as LLaRA's fine-tuning data uses them (Li et al., 2023, arXiv:2312.15503: top-200 of a retriever for MS MARCO)."""

from __future__ import annotations

import importlib.util
import logging
import random
from collections.abc import Mapping, Sequence
from functools import partial
from typing import Literal, NamedTuple

import numpy as np
from datasets import Dataset
from sentence_transformers import SentenceTransformer
from sentence_transformers.util import mine_hard_negatives

from llara_st.data.contrastive import relevant_documents

logger = logging.getLogger(__name__)


def _follows_root_level(record: logging.LogRecord) -> bool:
    # bm25s sets its logger to DEBUG when imported; a filter also holds for a bm25s imported later (by mteb).
    return record.levelno >= logging.getLogger().getEffectiveLevel()


def quiet_bm25s_logs() -> None:
    """bm25s's logs follow the application's level (WARNING by default, DEBUG with ``llara-st -vv``); idempotent."""
    if _follows_root_level not in logging.getLogger("bm25s").filters:
        logging.getLogger("bm25s").addFilter(_follows_root_level)


quiet_bm25s_logs()  # at import: before bm25s (imported on first use, here or by mteb) logs anything


class _MiningTask(NamedTuple):
    corpus: Mapping[str, str]
    queries: Mapping[str, str]
    relevant: Mapping[str, Sequence[str]]
    range_min: int
    range_max: int
    relative_margin: float | None
    max_score: float | None


def _bm25_windows(task: _MiningTask, language: str) -> dict[str, list[str]]:
    import bm25s  # base dependencies, imported on first use
    import Stemmer

    corpus, query_texts, relevant = task.corpus, task.queries, task.relevant
    doc_ids = list(corpus)
    tokenize = partial(
        bm25s.tokenize, stopwords=language, stemmer=Stemmer.Stemmer(language), return_ids=False, show_progress=False
    )
    index = bm25s.BM25()
    index.index(tokenize([corpus[doc_id] for doc_id in doc_ids]), show_progress=False)
    position = {doc_id: i for i, doc_id in enumerate(doc_ids)}
    query_ids = list(relevant)
    query_tokens = tokenize([query_texts[query_id] for query_id in query_ids])
    windows: dict[str, list[str]] = {}
    for query_id, tokens in zip(query_ids, query_tokens, strict=True):
        scores = index.get_scores(tokens)
        positives = relevant[query_id]
        positive_texts = {corpus[doc_id] for doc_id in positives}
        threshold = np.inf
        if task.relative_margin is not None:
            weakest_positive = min(float(scores[position[doc_id]]) for doc_id in positives)
            threshold = weakest_positive - abs(weakest_positive) * task.relative_margin
        if task.max_score is not None:
            threshold = min(threshold, task.max_score)
        # No shared term means not retrieved at all: a random passage, not a hard negative.
        matched = int(np.count_nonzero(scores > 0))
        depth = min(task.range_max + len(positives), matched)
        while True:
            top = np.argpartition(-scores, depth - 1)[:depth] if depth else np.array([], dtype=int)
            top = top[np.lexsort((top, -scores[top]))]  # by score, ties by corpus order: deterministic
            candidates = [
                doc_ids[i]
                for i in top
                if scores[i] <= threshold and doc_ids[i] not in positives and corpus[doc_ids[i]] not in positive_texts
            ]
            if len(candidates) >= task.range_max or depth == matched:
                break
            depth = min(2 * depth, matched)  # filtered candidates left the window short: look deeper
        windows[query_id] = candidates[task.range_min : task.range_max]
    return windows


def _dense_windows(
    task: _MiningTask, model: SentenceTransformer, batch_size: int, use_faiss: bool
) -> dict[str, list[str]]:
    corpus, query_texts, relevant = task.corpus, task.queries, task.relevant
    pairs = Dataset.from_dict(
        {
            "anchor": [query_texts[query_id] for query_id, doc_ids in relevant.items() for _ in doc_ids],
            "positive": [corpus[doc_id] for doc_ids in relevant.values() for doc_id in doc_ids],
        }
    )
    # sentence-transformers encodes, searches and filters (positives, margin, max_score); it returns the whole
    # window, best first, and the draw happens in mine_hard_negatives_from_qrels with a local seeded generator
    # (its own "random" strategy draws from the global `random` state). It speaks texts: ids are mapped back.
    mined = mine_hard_negatives(
        pairs,
        model,
        corpus=list(corpus.values()),
        range_min=task.range_min,
        range_max=task.range_max,
        relative_margin=task.relative_margin,
        max_score=task.max_score,
        num_negatives=task.range_max - task.range_min,
        sampling_strategy="top",
        output_format="labeled-list",
        batch_size=batch_size,
        use_faiss=use_faiss,
        verbose=False,
    )
    first_id_of_text: dict[str, str] = {}
    for doc_id, text in corpus.items():
        first_id_of_text.setdefault(text, doc_id)
    negatives_of_text: dict[str, list[str]] = {}
    for row in mined:
        documents, labels = row["positive"], row["labels"]
        ranked = [first_id_of_text[text] for text, label in zip(documents, labels, strict=True) if label == 0]
        negatives_of_text.setdefault(row["anchor"], ranked)
    return {query_id: negatives_of_text.get(query_texts[query_id], []) for query_id in relevant}


def mine_hard_negatives_from_qrels(
    corpus: Mapping[str, str],
    queries: Mapping[str, str],
    qrels: Mapping[str, Mapping[str, int]],
    retriever: SentenceTransformer | Literal["bm25"] = "bm25",
    *,
    num_negatives: int = 15,
    range_min: int = 10,
    range_max: int = 200,
    relative_margin: float | None = 0.05,
    max_score: float | None = None,
    sampling_strategy: Literal["random", "top"] = "random",
    min_relevance: int = 1,
    seed: int = 42,
    batch_size: int = 32,
    use_faiss: bool | None = None,
    language: str = "english",
) -> dict[str, list[str]]:
    """Hard negatives ``{query_id: [doc_id, ...]}`` (in the retriever's order) for each query of a BEIR split with a
    relevant document: documents the retriever ranks high, not judged relevant.

    The relevant documents (and their copies) are removed from the retriever's ranking, and so are likely unjudged
    positives: scores ``> s_pos - |s_pos| * relative_margin`` (``s_pos``: the weakest positive's) or above
    ``max_score``. ``num_negatives`` are drawn from ranks ``[range_min, range_max)`` of the rest (docs/finetuning.md).
    A model ranks through :func:`sentence_transformers.util.mine_hard_negatives` (its query and passage templates);
    ``"bm25"`` through ``bm25s`` (stemmed, stop words removed; a document sharing no term is no candidate).

    Args:
        corpus, queries, qrels: As returned by :func:`llara_st.data.load_beir`.
        relative_margin, max_score: The filters above (``max_score``: cosine for a model); None: off.
        sampling_strategy: ``"random"`` draws from the window (seeded by ``seed``), ``"top"`` takes its head.
        use_faiss: Search with faiss (a model only); default: when it is installed.
        language: Stemmer and stop-word language (BM25).

    Example::

        >>> from llara_st.data import load_beir, mine_hard_negatives_from_qrels
        >>> corpus, queries, qrels = load_beir(beir_path, "train")
        >>> mine_hard_negatives_from_qrels(corpus, queries, qrels, "bm25", num_negatives=2, range_min=0)
        {'q1': ['d3'], 'q2': ['d1', 'd5'], 'q3': ['d1', 'd3']}
    """
    if num_negatives < 1:
        raise ValueError(f"num_negatives must be at least 1, got {num_negatives}")
    if sampling_strategy not in ("random", "top"):
        raise ValueError(f"sampling_strategy must be 'random' or 'top', got {sampling_strategy!r}")
    relevant = relevant_documents(qrels, min_relevance)
    if not relevant:
        raise ValueError(f"no query has a document with qrels score >= {min_relevance}")
    if range_min < 0 or range_max <= range_min:
        raise ValueError(f"the rank window needs 0 <= range_min < range_max, got [{range_min}, {range_max})")
    if relative_margin is not None and relative_margin < 0:
        raise ValueError(f"relative_margin must be >= 0 (or None), got {relative_margin}")
    missing = sorted({doc_id for doc_ids in relevant.values() for doc_id in doc_ids} - set(corpus))
    if missing:
        raise KeyError(f"relevant documents missing from the corpus: {missing[:5]}")
    missing = sorted(set(relevant) - set(queries))
    if missing:
        raise KeyError(f"queries of the qrels missing from the queries: {missing[:5]}")
    task = _MiningTask(corpus, queries, relevant, range_min, range_max, relative_margin, max_score)
    if isinstance(retriever, str):
        if retriever != "bm25":
            raise ValueError(f"retriever must be a SentenceTransformer or 'bm25', got {retriever!r}")
        windows = _bm25_windows(task, language)
    elif isinstance(retriever, SentenceTransformer):
        if use_faiss is None:
            use_faiss = importlib.util.find_spec("faiss") is not None
        windows = _dense_windows(task, retriever, batch_size, use_faiss)
    else:
        raise TypeError(f"retriever must be a SentenceTransformer or 'bm25', got {type(retriever).__name__}")

    rng = random.Random(seed)
    negatives = {}
    for query_id in relevant:
        window = windows[query_id]
        if sampling_strategy == "top" or len(window) <= num_negatives:
            negatives[query_id] = window[:num_negatives]
        else:  # a seeded draw, kept in the retriever's order
            negatives[query_id] = [window[rank] for rank in sorted(rng.sample(range(len(window)), num_negatives))]
    sizes = [len(doc_ids) for doc_ids in negatives.values()]
    logger.info(
        "Mined hard negatives for %d queries: %.1f per query on average, %d queries with fewer than %d, %d with none",
        len(sizes),
        float(np.mean(sizes)),
        sum(size < num_negatives for size in sizes),
        num_negatives,
        sizes.count(0),
    )
    return negatives
