"""A retrieval evaluator on a BEIR split for use during training, and :func:`run_on_main_process`: a computation
once in a data-parallel run."""

from __future__ import annotations

import contextlib
import traceback
from collections.abc import Callable, Mapping
from typing import TypeVar

import torch.distributed as dist
from sentence_transformers import SentenceTransformer
from sentence_transformers.sentence_transformer.evaluation import InformationRetrievalEvaluator
from sentence_transformers.util import get_rank, get_world_size
from sentence_transformers.util.distributed import distributed_evaluation

from llara_st.data.contrastive import relevant_documents
from llara_st.evaluation.sub_corpus import sub_corpus_ids

T = TypeVar("T")


def beir_ir_evaluator(
    corpus: Mapping[str, str],
    queries: Mapping[str, str],
    qrels: Mapping[str, Mapping[str, int]],
    name: str = "dev",
    corpus_size: int | None = None,
    batch_size: int = 32,
    seed: int = 42,
    min_relevance: int = 1,
) -> InformationRetrievalEvaluator:
    """sentence-transformers' :class:`InformationRetrievalEvaluator` on a BEIR split, its metrics named
    ``{name}_cosine_ndcg@10``, ..., on the documents :func:`~llara_st.evaluation.sub_corpus_ids` keeps (all if
    ``corpus_size`` is None); ``min_relevance``: the smallest qrels score that counts as relevant."""
    relevant = {query_id: set(doc_ids) for query_id, doc_ids in relevant_documents(qrels, min_relevance).items()}
    if not relevant:
        raise ValueError(f"no query has a document with qrels score >= {min_relevance}")
    keep = sub_corpus_ids(corpus, qrels, corpus_size, seed, min_relevance)
    return InformationRetrievalEvaluator(
        queries={query_id: queries[query_id] for query_id in relevant},
        corpus={doc_id: text for doc_id, text in corpus.items() if doc_id in keep},
        relevant_docs=relevant,
        name=name,
        batch_size=batch_size,
        write_csv=False,
    )


def run_on_main_process(
    compute: Callable[[], T], model: SentenceTransformer | None = None, *, share_encoding: bool = True
) -> T:
    """``compute()`` (hard-negative mining, a dev evaluation) once in a data-parallel (torchrun) run, its result
    (or rank 0's error) broadcast to every process (call it on every process). With the ``model`` that ``compute``
    encodes with, the texts are shared among the processes by sentence-transformers' ``distributed_evaluation``.

    Args:
        share_encoding: False where the processes cannot encode apart (DeepSpeed, FSDP): then every process
            computes and rank 0's result is kept.

    Example::

        >>> from functools import partial
        >>> from llara_st.evaluation.ir_evaluator import run_on_main_process
        >>> run_on_main_process(partial(sum, [1, 2, 3]))  # one process: just the call
        6
    """
    if get_world_size() == 1:
        return compute()
    sharing = (
        distributed_evaluation(model, enabled=share_encoding)
        if model is not None
        else contextlib.nullcontext(get_rank() == 0)
    )
    outcome: list[tuple[bool, object]] = [(False, None)]
    error: Exception | None = None
    with sharing as runs_here:
        if runs_here:
            try:
                outcome = [(True, compute())]
            except Exception as exception:  # the others must learn of it, or they would wait for the broadcast
                error = exception
                outcome = [(False, traceback.format_exc())]
    dist.broadcast_object_list(outcome, src=0)
    if error is not None:
        raise error
    succeeded, value = outcome[0]
    if not succeeded:
        raise RuntimeError(f"the main process failed:\n{value}")
    return value  # type: ignore[return-value]
