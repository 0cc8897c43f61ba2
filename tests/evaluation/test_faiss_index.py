"""FaissIndex: factory strings, ParameterSpace parameters, RFlat refinement, persistence with ids, the MTEB backend."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

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


def _recall(found: list[list[str]], exact_rows: np.ndarray, ids: list[str]) -> float:
    overlaps = [len(set(f) & {ids[r] for r in rows}) for f, rows in zip(found, exact_rows, strict=True)]
    return float(np.mean(overlaps)) / exact_rows.shape[1]


@pytest.fixture(scope="module")
def small_corpus() -> tuple[np.ndarray, list[str], np.ndarray]:
    rng = np.random.default_rng(0)
    corpus = _normalized(rng.standard_normal((500, 32)))
    queries = _normalized(rng.standard_normal((20, 32)))
    return corpus, [f"doc-{i}" for i in range(len(corpus))], queries


@pytest.fixture(scope="module")
def clustered_corpus() -> tuple[np.ndarray, list[str], np.ndarray]:
    rng = np.random.default_rng(1)
    centers = rng.standard_normal((50, 32))
    # Noise as large as the cluster spread, so that neighbours straddle IVF cells and nprobe matters.
    corpus = _clustered(rng, 5_000, 32, centers, noise=0.8)
    queries = _clustered(rng, 100, 32, centers, noise=0.8)
    return corpus, [str(i) for i in range(len(corpus))], queries


def test_flat_search_equals_exact_numpy_search(small_corpus):
    corpus, ids, queries = small_corpus
    index = FaissIndex.build(corpus, ids, "Flat")
    scores, found = index.search(queries, k=10)
    exact_scores, exact_rows = _exact_top_k(queries, corpus, 10)
    assert found == [[ids[row] for row in rows] for rows in exact_rows]
    np.testing.assert_allclose(scores, exact_scores, atol=1e-5)


def test_ivf_recall_follows_nprobe_set_through_parameter_space(clustered_corpus):
    corpus, ids, queries = clustered_corpus
    _, exact_rows = _exact_top_k(queries, corpus, 10)
    index = FaissIndex.build(corpus, ids, "IVF64,Flat", search_parameters="nprobe=16")
    assert index.search_parameters == {"nprobe": 16}
    _, found = index.search(queries, k=10)
    recall = _recall(found, exact_rows, ids)
    assert recall >= 0.9
    index.set_search_parameters({"nprobe": 1})  # one probed list: the fast, lossy end of the same knob
    _, found_one_list = index.search(queries, k=10)
    assert _recall(found_one_list, exact_rows, ids) < recall
    index.set_search_parameters("nprobe=64")  # every list: exact
    _, found_all_lists = index.search(queries, k=10)
    assert _recall(found_all_lists, exact_rows, ids) == 1.0


@pytest.mark.slow
def test_ivf_recall_at_10_on_100k_clustered_vectors():
    rng = np.random.default_rng(1)
    centers = rng.standard_normal((1000, 64))
    corpus = _clustered(rng, 100_000, 64, centers, noise=0.8)
    queries = _clustered(rng, 200, 64, centers, noise=0.8)
    ids = [str(i) for i in range(len(corpus))]
    exact_rows = np.argpartition(-(queries @ corpus.T), 10, axis=1)[:, :10]  # the exact top 10, unordered
    index = FaissIndex.build(corpus, ids, "IVF256,Flat", search_parameters="nprobe=16")
    _, found = index.search(queries, k=10)
    recall = _recall(found, exact_rows, ids)
    assert recall >= 0.95
    index.set_search_parameters("nprobe=1")
    _, found_one_list = index.search(queries, k=10)
    assert _recall(found_one_list, exact_rows, ids) < recall


def test_hnsw_takes_ef_search(small_corpus):
    corpus, ids, queries = small_corpus
    index = FaissIndex.build(corpus, ids, "HNSW16", search_parameters={"efSearch": 256})
    _, found = index.search(queries, k=5)
    _, exact_rows = _exact_top_k(queries, corpus, 5)
    assert _recall(found, exact_rows, ids) >= 0.95


def test_rflat_refinement_restores_exact_scores_and_recall(clustered_corpus):
    corpus, ids, queries = clustered_corpus
    exact_scores, exact_rows = _exact_top_k(queries, corpus, 10)
    quantized = FaissIndex.build(corpus, ids, "SQ4")
    refined = FaissIndex.build(corpus, ids, "SQ4,RFlat", search_parameters="k_factor_rf=4")
    approximate_scores, approximate_found = quantized.search(queries, k=10)
    scores, found = refined.search(queries, k=10)
    # 4-bit codes alone perturb the scores; re-ranking the 40 candidates with the fp32 copy removes that.
    assert np.abs(approximate_scores - exact_scores).max() > 1e-3
    position = {doc_id: row for row, doc_id in enumerate(ids)}
    for query, hits, row_scores in zip(queries, found, scores, strict=True):
        np.testing.assert_allclose(row_scores, corpus[[position[h] for h in hits]] @ query, atol=1e-5)
        assert np.all(np.diff(row_scores) <= 0)  # still sorted best first
    assert _recall(found, exact_rows, ids) >= 0.99
    assert _recall(found, exact_rows, ids) > _recall(approximate_found, exact_rows, ids)
    # k_factor_rf is the knob: with 1, the refinement re-scores exactly the 10 hits of the quantised index.
    refined.set_search_parameters({"k_factor_rf": 1})
    assert refined.search_parameters == {"k_factor_rf": 1}
    _, found_unrefined = refined.search(queries, k=10)
    assert [set(hits) for hits in found_unrefined] == [set(hits) for hits in approximate_found]


@pytest.mark.parametrize(
    ("factory_string", "options"),
    [
        ("Flat", {}),
        ("IVF8,Flat", {"search_parameters": "nprobe=4"}),
        ("IVF8,PQ8x4np", {"search_parameters": {"nprobe": 8}}),  # np: skip the slow polysemous training
        ("HNSW16", {"search_parameters": "efSearch=64"}),
        ("SQ8,RFlat", {"search_parameters": "k_factor_rf=3", "normalize": True}),
        ("IVF8,SQ4,RFlat", {"search_parameters": "nprobe=4,k_factor_rf=3"}),
    ],
)
def test_save_and_load_keep_ids_results_and_settings(small_corpus, tmp_path, factory_string, options):
    corpus, ids, queries = small_corpus
    index = FaissIndex.build(corpus, ids, factory_string, **options)
    scores, found = index.search(queries, k=5)
    index.save(tmp_path / "index")
    for mmap in (False, True):
        loaded = FaissIndex.load(tmp_path / "index", mmap=mmap)
        loaded_scores, loaded_found = loaded.search(queries, k=5)
        assert loaded.ids == ids and loaded.factory_string == factory_string
        assert loaded.search_parameters == index.search_parameters and loaded.normalize == index.normalize
        assert loaded_found == found
        np.testing.assert_allclose(loaded_scores, scores, atol=1e-6)
        if mmap:  # an add to memory-mapped codes would abort the process inside faiss
            with pytest.raises(RuntimeError, match="mmap=True, read-only"):
                loaded.add(queries[:1], ["new"])
        else:
            loaded.add(queries[:1], ["new"])  # a loaded index grows
            assert len(loaded) == len(ids) + 1 and "new" in loaded.search(queries[:1], k=5)[1][0]
    assert not list(tmp_path.glob("index/*.pkl"))


def test_load_refuses_files_that_do_not_belong_together(small_corpus, tmp_path):
    corpus, ids, _ = small_corpus
    FaissIndex.build(corpus, ids, "Flat").save(tmp_path / "a")
    (tmp_path / "a" / "ids.json").write_text(json.dumps(ids[:-1]), encoding="utf8")
    with pytest.raises(ValueError, match="ids.json lists 499 ids .* holds 500 vectors"):
        FaissIndex.load(tmp_path / "a")
    (tmp_path / "a" / "ids.json").write_text(json.dumps([*ids[:-1], ids[0]]), encoding="utf8")
    with pytest.raises(ValueError, match="duplicate ids"):
        FaissIndex.load(tmp_path / "a")
    (tmp_path / "a" / "ids.json").write_text(json.dumps(list(range(500))), encoding="utf8")
    with pytest.raises(ValueError, match="list of string ids"):
        FaissIndex.load(tmp_path / "a")
    # Another index's file (other dimension) next to these ids and settings.
    FaissIndex.build(corpus[:, :16], ids, "Flat").save(tmp_path / "b")
    (tmp_path / "a" / "ids.json").write_text(json.dumps(ids), encoding="utf8")
    (tmp_path / "a" / "index.faiss").write_bytes((tmp_path / "b" / "index.faiss").read_bytes())
    with pytest.raises(ValueError, match="16-d vectors .* config says 32-d"):
        FaissIndex.load(tmp_path / "a")
    FaissIndex.build(corpus, ids, "SQ8").save(tmp_path / "c")
    # A folder saved before rescoring became faiss's RFlat: its SQ8 index alone would give approximate scores.
    config = json.loads((tmp_path / "c" / "faiss_index_config.json").read_text(encoding="utf8"))
    (tmp_path / "c" / "faiss_index_config.json").write_text(json.dumps({**config, "rescore_multiplier": 2}))
    with pytest.raises(ValueError, match="rescore_multiplier.*'SQ8,RFlat'"):
        FaissIndex.load(tmp_path / "c")
    (tmp_path / "c" / "faiss_index_config.json").write_text("{}", encoding="utf8")
    with pytest.raises(ValueError, match="faiss_index_config.json must be a JSON object with the keys"):
        FaissIndex.load(tmp_path / "c")
    (tmp_path / "c" / "faiss_index_config.json").write_text("{", encoding="utf8")
    with pytest.raises(ValueError, match="faiss_index_config.json is not valid JSON"):
        FaissIndex.load(tmp_path / "c")
    with pytest.raises(FileNotFoundError, match="not a saved FaissIndex"):
        FaissIndex.load(tmp_path)


def test_incremental_adds_keep_the_id_mapping_and_refinement_rows(small_corpus):
    corpus, ids, _ = small_corpus
    index = FaissIndex(corpus.shape[1], "SQ8,RFlat", search_parameters="k_factor_rf=2")
    index.train(corpus)
    index.add(corpus[:200], ids[:200])
    index.add(corpus[200:], ids[200:])
    assert len(index) == len(ids)
    scores, found = index.search(corpus, k=1)  # each document is its own nearest neighbour, at its exact score
    assert found == [[doc_id] for doc_id in ids]
    np.testing.assert_allclose(scores, np.ones((len(ids), 1)), atol=1e-5)


def test_threads_adding_and_searching_at_once_keep_ids_and_vectors_aligned(small_corpus):
    corpus, ids, _ = small_corpus
    index = FaissIndex(corpus.shape[1], "SQ8,RFlat", search_parameters="k_factor_rf=2")
    index.train(corpus)

    def add_then_search(shard: int) -> list[list[str]]:
        rows = slice(shard * 50, (shard + 1) * 50)
        index.add(corpus[rows], ids[rows])
        return index.search(corpus[rows], k=1)[1]

    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(add_then_search, range(10)))
    assert [hit for shard in results for [hit] in shard] == ids  # each document finds itself
    scores, found = index.search(corpus, k=1)  # whatever order the shards went in, each id kept its vector
    assert found == [[doc_id] for doc_id in ids]
    np.testing.assert_allclose(scores, np.ones((len(ids), 1)), atol=1e-5)


def test_kept_embeddings_are_a_copy_of_the_callers_array():
    corpus = np.eye(3, dtype=np.float32)
    index = FaissIndex.build(corpus, ["a", "b", "c"], "SQ8,RFlat", search_parameters="k_factor_rf=3")
    corpus[:] = 0  # the caller reuses its buffer
    scores, found = index.search(np.array([[0.0, 1.0, 0.0]]), k=1)
    assert found == [["b"]] and scores[0, 0] == pytest.approx(1.0)


def test_normalize_turns_inner_product_into_cosine():
    corpus = np.array([[10.0, 0.0], [0.6, 0.8]], dtype=np.float32)
    query = np.array([[0.6, 0.8]], dtype=np.float32)
    raw, raw_ids = FaissIndex.build(corpus, ["long", "aligned"]).search(query, k=1)
    cosine, cosine_ids = FaissIndex.build(corpus, ["long", "aligned"], normalize=True).search(query, k=1)
    assert raw_ids == [["long"]] and raw[0, 0] == pytest.approx(6.0)
    assert cosine_ids == [["aligned"]] and cosine[0, 0] == pytest.approx(1.0)


def test_k_larger_than_the_corpus_returns_every_document():
    corpus = np.eye(3, dtype=np.float32)
    scores, found = FaissIndex.build(corpus, ["a", "b", "c"]).search(np.array([[0.2, 0.3, 0.1]]), k=10)
    assert found == [["b", "a", "c"]]
    np.testing.assert_allclose(scores, [[0.3, 0.2, 0.1]], atol=1e-6)


def test_missing_ivf_hits_are_dropped_not_mapped_to_the_last_document():
    # Two far-apart clusters in two IVF lists; probing one list finds only its 3 documents.
    corpus = _normalized(np.array([[1, 0.01], [1, 0.02], [1, 0.03], [-1, 0.01], [-1, 0.02], [-1, 0.03]]))
    ids = list("abcdef")
    index = FaissIndex.build(corpus, ids, "IVF2,Flat", search_parameters="nprobe=1")
    scores, found = index.search(np.array([[1.0, 0.0]]), k=5)
    assert sorted(found[0]) == ["a", "b", "c"]
    assert np.isneginf(scores[0, 3:]).all()
    backend = FaissSearchBackend("IVF2,Flat", search_parameters="nprobe=1")
    backend.add_documents(corpus, ids)
    values, positions = backend.search(np.array([[1.0, 0.0]]), top_k=5)
    assert sorted(positions[0]) == [0, 1, 2] and len(values[0]) == 3


def test_mteb_backend_takes_a_factory_string_and_returns_positions(small_corpus):
    corpus, ids, queries = small_corpus
    backend = FaissSearchBackend("SQ8,RFlat", search_parameters="k_factor_rf=4")
    backend.add_documents(corpus, ids)
    scores, positions = backend.search(queries, top_k=7)
    exact_scores, exact_rows = _exact_top_k(queries, corpus, 7)
    assert positions == exact_rows.tolist()
    np.testing.assert_allclose(scores, exact_scores, atol=1e-5)
    with pytest.raises(NotImplementedError, match="reranking"):
        backend.search(queries, top_k=3, top_ranked={"q": ["doc-1"]}, query_idx_to_id={0: "q"})
    backend.clear()
    with pytest.raises(RuntimeError, match="No documents"):
        backend.search(queries, top_k=3)


def test_default_nlist_follows_the_square_root_rule():
    assert default_nlist(8_800_000) == int(4 * np.sqrt(8_800_000))
    assert default_nlist(100) == 2  # at least 39 training points per list
    assert default_nlist(10) == 1


def test_bad_input_is_named(small_corpus):
    corpus, ids, queries = small_corpus
    with pytest.raises(ValueError, match="factory string 'annoy' for dim 32: could not parse index string annoy"):
        FaissIndex(32, "annoy")
    with pytest.raises(ValueError, match="'IVF8,PQ7'.*multiple of the number of subquantizers"):
        FaissIndex(32, "IVF8,PQ7")
    with pytest.raises(ValueError, match="parameters 'nprobe=8' on a 'HNSW32' index: .*could not set parameter nprobe"):
        FaissIndex(32, "HNSW32", search_parameters="nprobe=8")
    with pytest.raises(ValueError, match="could not interpret parameters nprobe"):
        FaissIndex(32, "IVF8,Flat", search_parameters="nprobe")
    with pytest.raises(ValueError, match="could not interpret parameters nprobe=many"):
        FaissIndex(32, "IVF8,Flat", search_parameters={"nprobe": "many"})
    with pytest.raises(ValueError, match="'k_factor_rf=2' on a 'SQ8' index: .*could not set parameter k_factor_rf"):
        FaissIndex(32, "SQ8", search_parameters="k_factor_rf=2")  # refinement needs ",RFlat"
    with pytest.raises(TypeError, match="must hold floats"):
        FaissIndex.build(np.eye(2, dtype=np.int64), ["a", "b"])
    with pytest.raises(RuntimeError, match="'IVF8,Flat' index must be trained"):
        FaissIndex(32, "IVF8,Flat").add(corpus, ids)
    with pytest.raises(ValueError, match="Training the 'IVF64,Flat' index on 10 vectors failed: .*at least as large"):
        FaissIndex(32, "IVF64,Flat").train(corpus[:10])
    index = FaissIndex(32)
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
