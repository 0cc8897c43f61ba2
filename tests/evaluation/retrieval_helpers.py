"""Helpers for evaluation tests: models with hand-set embeddings, independent retrieval metrics."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from sentence_transformers import SentenceTransformer
from sentence_transformers.sentence_transformer.modules import StaticEmbedding
from tokenizers import Tokenizer, models, pre_tokenizers


def static_embedding_model(vectors: Mapping[str, Sequence[float]]) -> SentenceTransformer:
    """A real SentenceTransformer whose embedding of a one-word text is the vector given for that word.

    A word-level tokenizer maps each word to one row of a ``StaticEmbedding`` whose weights are ``vectors``, so
    the scores (cosine) and rankings MTEB computes are known in advance.
    """
    words = list(vectors)
    vocab = {"[UNK]": 0, "[PAD]": 1, **{word: i + 2 for i, word in enumerate(words)}}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    dim = len(next(iter(vectors.values())))
    weights = np.zeros((len(vocab), dim), dtype=np.float32)
    for word in words:
        weights[vocab[word]] = vectors[word]
    return SentenceTransformer(modules=[StaticEmbedding(tokenizer, embedding_weights=weights)], device="cpu")


# A corpus of five documents d1..d5 with one-hot embeddings e1..e5; a query's vector weights the documents, so
# its ranking is the order of its weights (cosine = weight / |weights|).
FIXED_DOC_VECTORS = {f"d{i}": [1.0 if j == i else 0.0 for j in range(1, 6)] for i in range(1, 6)}
FIXED_QUERY_VECTORS = {
    "q1": [5.0, 4.0, 3.0, 2.0, 1.0],  # ranks d1 d2 d3 d4 d5
    "q2": [1.0, 2.0, 3.0, 4.0, 5.0],  # ranks d5 d4 d3 d2 d1
    "q3": [3.0, 5.0, 1.0, 4.0, 2.0],  # ranks d2 d4 d1 d5 d3
    "q4": [1.0, 1.5, 2.0, 2.5, 3.0],  # in queries.jsonl but in no qrels: not evaluated
}
FIXED_QRELS = [
    ("q1", "d2", 1),
    ("q1", "d4", 1),
    ("q2", "d5", 1),
    ("q2", "d1", 0),  # judged non-relevant
    ("q3", "d3", 2),  # graded relevance
    ("q3", "d1", 1),
]


def ndcg_at_k(ranking: Sequence[str], relevance: Mapping[str, int], k: int = 10) -> float:
    """nDCG@k with linear gains (trec_eval's, hence BEIR's), written independently of MTEB."""
    gains = [relevance.get(doc, 0) for doc in ranking[:k]]
    dcg = sum(gain / np.log2(rank + 2) for rank, gain in enumerate(gains) if gain > 0)
    ideal = sorted((g for g in relevance.values() if g > 0), reverse=True)[:k]
    idcg = sum(gain / np.log2(rank + 2) for rank, gain in enumerate(ideal))
    return dcg / idcg if idcg > 0 else 0.0


def mrr_at_k(ranking: Sequence[str], relevance: Mapping[str, int], k: int = 10) -> float:
    for rank, doc in enumerate(ranking[:k]):
        if relevance.get(doc, 0) > 0:
            return 1.0 / (rank + 1)
    return 0.0


def recall_at_k(ranking: Sequence[str], relevance: Mapping[str, int], k: int) -> float:
    relevant = {doc for doc, gain in relevance.items() if gain > 0}
    return len(relevant & set(ranking[:k])) / len(relevant)


def ranking_from_scores(doc_scores: Mapping[str, float]) -> list[str]:
    # trec_eval breaks score ties by document id, descending
    return [doc for doc, _ in sorted(doc_scores.items(), key=lambda item: (item[1], item[0]), reverse=True)]
