"""A sentence-transformers retrieval evaluator on a BEIR split, for use during training (the trainer's
``evaluator``); reported figures come from :func:`llara_st.evaluation.evaluate_beir` (MTEB)."""

from __future__ import annotations

from collections.abc import Mapping

from sentence_transformers.sentence_transformer.evaluation import InformationRetrievalEvaluator

from llara_st.data.contrastive import relevant_documents
from llara_st.evaluation.sub_corpus import sub_corpus_ids


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
    """sentence-transformers' :class:`InformationRetrievalEvaluator` (nDCG@10 first) on a BEIR split.

    It embeds queries with ``encode_query`` and the corpus with ``encode_document``, so a LLaRA model gets
    its query and passage templates. ``corpus_size`` keeps the relevant documents plus a seeded random
    sample of the others (a cheaper, easier proxy: use the full corpus for reported figures).

    Args:
        corpus, queries, qrels: As returned by :func:`llara_st.data.load_beir`.
        name: Prefix of the metric names (``{name}_cosine_ndcg@10``).
        corpus_size: Documents to keep; None keeps all.
        batch_size: Encoding batch size.
        seed: Seed of the corpus sample.
        min_relevance: Smallest qrels score that counts as relevant.
    """
    relevant = {query_id: set(doc_ids) for query_id, doc_ids in relevant_documents(qrels, min_relevance).items()}
    if not relevant:
        raise ValueError(f"no query has a document with qrels score >= {min_relevance}")
    keep = sub_corpus_ids(corpus, qrels, corpus_size, seed, min_relevance)
    corpus = {doc_id: text for doc_id, text in corpus.items() if doc_id in keep}
    return InformationRetrievalEvaluator(
        queries={query_id: queries[query_id] for query_id in relevant},
        corpus=dict(corpus),
        relevant_docs=relevant,
        name=name,
        batch_size=batch_size,
        write_csv=False,
    )
