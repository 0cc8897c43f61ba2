"""FaissIndex: exact search equals numpy, IVF recall, persistence with ids, the MTEB backend, bad input."""

from __future__ import annotations

import numpy as np
import pytest

from llara_st.evaluation import FaissIndex, FaissSearchBackend, default_nlist


def _normalized(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


def _exact_top_k(queries: np.ndarray, corpus: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    scores = queries @ corpus.T
    top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(scores, top, axis=1), top


def _clustered(rng: np.random.Generator, n: int, dim: int, centers: np.ndarray, noise: float) -> np.ndarray:
    labels = rng.integers(len(centers), size=n)
    return _normalized(centers[labels] + noise * rng.standard_normal((n, dim)))


@pytest.fixture(scope="module")
def small_corpus() -> tuple[np.ndarray, list[str], np.ndarray]:
    rng = np.random.default_rng(0)
    corpus = _normalized(rng.standard_normal((500, 32)))
    queries = _normalized(rng.standard_normal((20, 32)))
    return corpus, [f"doc-{i}" for i in range(len(corpus))], queries


def test_flat_search_equals_exact_numpy_search(small_corpus):
    corpus, ids, queries = small_corpus
    index = FaissIndex.build(corpus, ids, "flat")
    scores, found = index.search(queries, k=10)
    exact_scores, exact_rows = _exact_top_k(queries, corpus, 10)
    assert found == [[ids[row] for row in rows] for rows in exact_rows]
    np.testing.assert_allclose(scores, exact_scores, atol=1e-5)


def _recall_at_10(found: list[list[str]], exact_rows: np.ndarray, ids: list[str]) -> float:
    overlaps = [len(set(f) & {ids[r] for r in rows}) for f, rows in zip(found, exact_rows, strict=True)]
    return float(np.mean(overlaps)) / 10


@pytest.mark.slow
def test_ivf_recall_at_10_on_100k_clustered_vectors():
    rng = np.random.default_rng(1)
    dim = 64
    centers = rng.standard_normal((1000, dim))
    # Noise as large as the cluster spread, so that neighbours straddle IVF cells and nprobe matters.
    corpus = _clustered(rng, 100_000, dim, centers, noise=0.8)
    queries = _clustered(rng, 200, dim, centers, noise=0.8)
    ids = [str(i) for i in range(len(corpus))]
    exact_rows = np.argpartition(-(queries @ corpus.T), 10, axis=1)[:, :10]  # the exact top 10, unordered

    index = FaissIndex.build(corpus, ids, "ivf", nlist=256, nprobe=16)
    _, found = index.search(queries, k=10)
    recall = _recall_at_10(found, exact_rows, ids)
    assert recall >= 0.95
    # One probed list is the fast, lossy end of the same knob.
    index.nprobe = 1
    _, found_one_list = index.search(queries, k=10)
    assert _recall_at_10(found_one_list, exact_rows, ids) < recall


@pytest.mark.parametrize("kind", ["flat", "ivf", "ivfpq", "hnsw"])
def test_save_and_load_keep_ids_results_and_settings(small_corpus, tmp_path, kind):
    corpus, ids, queries = small_corpus
    options = {"nlist": 8, "nprobe": 8, "pq_m": 8, "pq_bits": 4} if kind in ("ivf", "ivfpq") else {}
    index = FaissIndex.build(corpus, ids, kind, **options)
    scores, found = index.search(queries, k=5)
    index.save(tmp_path / "index")
    loaded = FaissIndex.load(tmp_path / "index")
    loaded_scores, loaded_found = loaded.search(queries, k=5)
    assert loaded.ids == ids and loaded.kind == kind and loaded.nprobe == index.nprobe
    assert loaded_found == found
    np.testing.assert_allclose(loaded_scores, scores, atol=1e-6)


def test_incremental_adds_keep_the_id_mapping(small_corpus):
    corpus, ids, queries = small_corpus
    index = FaissIndex(corpus.shape[1], "flat")
    index.add(corpus[:200], ids[:200])
    index.add(corpus[200:], ids[200:])
    assert len(index) == len(ids)
    _, found = index.search(corpus[[3, 250]], k=1)  # each document is its own nearest neighbour
    assert found == [["doc-3"], ["doc-250"]]


def test_normalize_turns_inner_product_into_cosine():
    corpus = np.array([[10.0, 0.0], [0.6, 0.8]], dtype=np.float32)
    query = np.array([[0.6, 0.8]], dtype=np.float32)
    raw, raw_ids = FaissIndex.build(corpus, ["long", "aligned"], "flat").search(query, k=1)
    cosine, cosine_ids = FaissIndex.build(corpus, ["long", "aligned"], "flat", normalize=True).search(query, k=1)
    assert raw_ids == [["long"]] and raw[0, 0] == pytest.approx(6.0)
    assert cosine_ids == [["aligned"]] and cosine[0, 0] == pytest.approx(1.0)


def test_k_larger_than_the_corpus_returns_every_document():
    corpus = np.eye(3, dtype=np.float32)
    scores, found = FaissIndex.build(corpus, ["a", "b", "c"]).search(np.array([[0.2, 0.3, 0.1]]), k=10)
    assert found == [["b", "a", "c"]]
    np.testing.assert_allclose(scores, [[0.3, 0.2, 0.1]], atol=1e-6)


def test_mteb_backend_returns_positions_without_missing_hits(small_corpus):
    corpus, ids, queries = small_corpus
    backend = FaissSearchBackend("flat")
    backend.add_documents(corpus, ids)
    scores, positions = backend.search(queries, top_k=7)
    _, exact_rows = _exact_top_k(queries, corpus, 7)
    assert positions == exact_rows.tolist()
    assert all(len(row) == 7 for row in scores)
    with pytest.raises(NotImplementedError, match="reranking"):
        backend.search(queries, top_k=3, top_ranked={"q": ["doc-1"]}, query_idx_to_id={0: "q"})
    backend.clear()
    with pytest.raises(RuntimeError, match="No documents"):
        backend.search(queries, top_k=3)


def test_default_nlist_follows_the_square_root_rule():
    assert default_nlist(8_800_000) == int(4 * np.sqrt(8_800_000))
    assert default_nlist(100) == 2  # at least 39 training points per list
    assert default_nlist(10) == 1


def test_bad_input_is_named(small_corpus, tmp_path):
    corpus, ids, queries = small_corpus
    with pytest.raises(ValueError, match="Unknown faiss index kind 'annoy'"):
        FaissIndex(32, "annoy")
    with pytest.raises(ValueError, match="pq_m=7 must divide"):
        FaissIndex(32, "ivfpq", pq_m=7)
    index = FaissIndex(32, "flat")
    with pytest.raises(RuntimeError, match="empty"):
        index.search(queries, k=3)
    with pytest.raises(ValueError, match="dimension 16, the index expects 32"):
        index.add(corpus[:, :16], ids)
    with pytest.raises(ValueError, match="3 embeddings but 2 ids"):
        index.add(corpus[:3], ids[:2])
    with pytest.raises(ValueError, match="duplicates"):
        index.add(corpus[:2], ["x", "x"])
    with pytest.raises(TypeError, match="must be strings"):
        index.add(corpus[:2], [1, 2])
    with pytest.raises(ValueError, match="NaN"):
        index.add(np.full((1, 32), np.nan, dtype=np.float32), ["nan"])
    index.add(corpus[:2], ["a", "b"])
    with pytest.raises(ValueError, match="already in the index"):
        index.add(corpus[2:3], ["a"])
    with pytest.raises(ValueError, match="2-D"):
        index.search(queries[0], k=3)
    with pytest.raises(RuntimeError, match="must be trained"):
        FaissIndex(32, "ivf", nlist=4).add(corpus, ids)
    with pytest.raises(ValueError, match="at least that many training vectors"):
        FaissIndex(32, "ivf", nlist=64).train(corpus[:10])
    with pytest.raises(FileNotFoundError, match="not a saved FaissIndex"):
        FaissIndex.load(tmp_path)
