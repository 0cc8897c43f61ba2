"""evaluate_beir: MTEB's scores on a local BEIR folder, query/document routing, result files, caching, faiss."""

from __future__ import annotations

import json
import logging
import math
import warnings
from pathlib import Path

import numpy as np
import pytest

from llara_st.evaluation import evaluate_beir, model_fingerprint
from tests.conftest import records_through_root
from tests.evaluation.retrieval_helpers import (
    FIXED_QRELS,
    mrr_at_k,
    ndcg_at_k,
    ranking_from_scores,
    recall_at_k,
)

# The rankings the fixed embeddings produce (see retrieval_helpers.FIXED_QUERY_VECTORS) and the metrics they give,
# computed by hand from the definitions (linear gains, log2(rank + 1) discounts):
#   q1: d1 d2 d3 d4 d5, relevant d2, d4   -> nDCG@10 = (1/log2 3 + 1/log2 5) / (1 + 1/log2 3), RR = 1/2
#   q2: d5 d4 d3 d2 d1, relevant d5       -> nDCG@10 = 1, RR = 1 (d1 is judged 0: not relevant)
#   q3: d2 d4 d1 d5 d3, d3 (2), d1 (1)    -> nDCG@10 = (1/log2 4 + 2/log2 6) / (2 + 1/log2 3), RR = 1/3
# q4 has no qrels and is not evaluated.
HAND_NDCG = {
    "q1": (1 / math.log2(3) + 1 / math.log2(5)) / (1 + 1 / math.log2(3)),
    "q2": 1.0,
    "q3": (1 / math.log2(4) + 2 / math.log2(6)) / (2 + 1 / math.log2(3)),
}
HAND_MRR = {"q1": 1 / 2, "q2": 1.0, "q3": 1 / 3}
HAND_RECALL_AT_1 = {"q1": 0.0, "q2": 1.0, "q3": 0.0}
HAND_RECALL_AT_3 = {"q1": 1 / 2, "q2": 1.0, "q3": 1 / 2}
HAND_RANKINGS = {
    "q1": ["d1", "d2", "d3", "d4", "d5"],
    "q2": ["d5", "d4", "d3", "d2", "d1"],
    "q3": ["d2", "d4", "d1", "d5", "d3"],
}


def _mean(values: dict[str, float]) -> float:
    return sum(values.values()) / len(values)


def _qrels_by_query() -> dict[str, dict[str, int]]:
    qrels: dict[str, dict[str, int]] = {}
    for query, doc, score in FIXED_QRELS:
        qrels.setdefault(query, {})[doc] = score
    return qrels


def test_scores_match_hand_computed_metrics(fixed_model, fixed_beir_folder, tmp_path):
    scores = evaluate_beir(fixed_model, fixed_beir_folder, "test", tmp_path / "out", show_progress_bar=False)

    assert scores["ndcg_at_10"] == pytest.approx(_mean(HAND_NDCG), abs=1e-5)
    assert scores["mrr_at_10"] == pytest.approx(_mean(HAND_MRR), abs=1e-5)
    assert scores["recall_at_1"] == pytest.approx(_mean(HAND_RECALL_AT_1), abs=1e-5)
    assert scores["recall_at_3"] == pytest.approx(_mean(HAND_RECALL_AT_3), abs=1e-5)
    assert scores["recall_at_100"] == pytest.approx(1.0)
    assert scores["main_score"] == scores["ndcg_at_10"]


def test_independent_metrics_agree_on_mteb_rankings(fixed_model, fixed_beir_folder, tmp_path):
    """The rankings MTEB saved are the expected ones, and the test's own metric code reproduces the hand values."""
    out = tmp_path / "out"
    scores = evaluate_beir(fixed_model, fixed_beir_folder, "test", out, save_predictions=True, show_progress_bar=False)
    predictions = json.loads((out / "predictions" / "fixed_predictions.json").read_text())["default"]["test"]
    assert set(predictions) == {"q1", "q2", "q3"}
    qrels = _qrels_by_query()
    rankings = {query: ranking_from_scores(doc_scores) for query, doc_scores in predictions.items()}
    assert rankings == HAND_RANKINGS
    ndcg = {query: ndcg_at_k(rankings[query], qrels[query]) for query in rankings}
    assert ndcg == pytest.approx(HAND_NDCG)
    assert {q: mrr_at_k(rankings[q], qrels[q]) for q in rankings} == pytest.approx(HAND_MRR)
    assert {q: recall_at_k(rankings[q], qrels[q], 3) for q in rankings} == pytest.approx(HAND_RECALL_AT_3)
    assert scores["ndcg_at_10"] == pytest.approx(_mean(ndcg), abs=1e-5)
    # Scores are cosine similarities of the fixed vectors.
    q1 = np.array([5.0, 4.0, 3.0, 2.0, 1.0])
    assert predictions["q1"]["d2"] == pytest.approx(4.0 / np.linalg.norm(q1), abs=1e-6)


def test_result_files_follow_the_results_repository_layout(fixed_model, fixed_beir_folder, tmp_path):
    out = tmp_path / "out"
    evaluate_beir(
        fixed_model,
        fixed_beir_folder,
        "dev",
        out,
        model_name="me/static-model",
        revision="abc123",
        show_progress_bar=False,
        training_datasets=[],
    )
    folder = out / "results" / "me__static-model" / "abc123"
    result = json.loads((folder / "fixed.json").read_text())
    meta = json.loads((folder / "model_meta.json").read_text())
    assert result["task_name"] == "fixed"
    assert set(result["scores"]) == {"dev"}
    assert result["scores"]["dev"][0]["ndcg_at_10"] == pytest.approx(1.0)  # q1's relevant doc d1 ranks first
    assert meta["name"] == "me/static-model" and meta["revision"] == "abc123"
    assert meta["training_datasets"] == []


def test_splits_share_one_result_file_and_existing_results_are_reused(
    fixed_model, fixed_beir_folder, tmp_path, monkeypatch
):
    out = tmp_path / "out"
    test = evaluate_beir(fixed_model, fixed_beir_folder, "test", out, model_name="me/m", show_progress_bar=False)
    dev = evaluate_beir(fixed_model, fixed_beir_folder, "dev", out, model_name="me/m", show_progress_bar=False)
    (result_file,) = (out / "results" / "me__m").glob("*/fixed.json")
    scores = json.loads(result_file.read_text())["scores"]
    assert scores["test"][0]["ndcg_at_10"] == pytest.approx(test["ndcg_at_10"])
    assert scores["dev"][0]["ndcg_at_10"] == pytest.approx(dev["ndcg_at_10"])

    def fail(*args, **kwargs):
        raise AssertionError("the model was called although the results exist")

    monkeypatch.setattr(fixed_model, "encode_query", fail)
    again = evaluate_beir(fixed_model, fixed_beir_folder, "test", out, model_name="me/m", show_progress_bar=False)
    assert again == pytest.approx(test, nan_ok=True)
    with pytest.raises(AssertionError, match="model was called"):
        evaluate_beir(fixed_model, fixed_beir_folder, "test", out, model_name="me/m", overwrite=True)


def test_default_name_and_revision_come_from_the_folder_and_weights(fixed_model, fixed_beir_folder, tmp_path):
    model_dir = tmp_path / "static-model"
    fixed_model.save(str(model_dir))
    out = tmp_path / "out"
    evaluate_beir(model_dir, fixed_beir_folder, "test", out, show_progress_bar=False)
    expected = out / "results" / "local__static-model" / model_fingerprint(fixed_model) / "fixed.json"
    assert expected.is_file()


def test_llara_queries_and_documents_get_their_templates(tiny_llara, make_beir_folder, tmp_path):
    """MTEB's scores are cos(encode_query(q), encode_document(title + " " + text)): LLaRA's two templates."""
    corpus = {
        "a": ("Tides", "The Moon's gravity pulls the oceans and causes tides."),
        "b": ("", "Paris is the capital of France."),
        "c": ("Insulin", "Insulin lowers blood glucose."),
        "d": ("", "Volcanoes erupt when magma rises."),
    }
    queries = {"x": "what causes tides?", "y": "capital of France", "z": "blood sugar hormone"}
    folder = make_beir_folder(
        "llara", corpus=corpus, queries=queries, qrels={"test": [("x", "a", 1), ("y", "b", 1), ("z", "c", 1)]}
    )
    out = tmp_path / "out"
    evaluate_beir(tiny_llara, folder, "test", out, save_predictions=True, show_progress_bar=False)
    predictions = json.loads((out / "predictions" / "llara_predictions.json").read_text())["default"]["test"]

    doc_ids = list(corpus)
    doc_texts = [f"{title} {text}".strip() for title, text in corpus.values()]
    query_ids = list(queries)
    expected = tiny_llara.encode_query(list(queries.values())) @ tiny_llara.encode_document(doc_texts).T
    got = np.array([[predictions[q][d] for d in doc_ids] for q in query_ids])
    np.testing.assert_allclose(got, expected, atol=1e-5)
    # The templates matter: passage-template queries would have scored differently.
    passage_side = tiny_llara.encode_document(list(queries.values())) @ tiny_llara.encode_document(doc_texts).T
    assert np.abs(passage_side - expected).max() > 1e-3


def test_embedding_cache_encodes_the_corpus_once(fixed_model, fixed_beir_folder, tmp_path, monkeypatch):
    encoded: list[str] = []
    original = fixed_model.encode_document

    def counting_encode_document(texts, **kwargs):
        encoded.extend(texts)
        return original(texts, **kwargs)

    monkeypatch.setattr(fixed_model, "encode_document", counting_encode_document)
    cache = tmp_path / "cache"
    first = evaluate_beir(fixed_model, fixed_beir_folder, "test", embedding_cache=cache, show_progress_bar=False)
    assert sorted(encoded) == ["d1", "d2", "d3", "d4", "d5"]
    second = evaluate_beir(fixed_model, fixed_beir_folder, "dev", embedding_cache=cache, show_progress_bar=False)
    third = evaluate_beir(fixed_model, fixed_beir_folder, "test", embedding_cache=cache, show_progress_bar=False)
    assert len(encoded) == 5, "the corpus was encoded again despite the cache"
    assert second["ndcg_at_10"] == pytest.approx(1.0)
    assert third == pytest.approx(first, nan_ok=True)


def test_embedding_cache_is_per_model(fixed_model, fixed_beir_folder, tmp_path):
    cache = tmp_path / "cache"
    before = evaluate_beir(fixed_model, fixed_beir_folder, "test", embedding_cache=cache, show_progress_bar=False)
    tokenizer = fixed_model[0].tokenizer
    d1, d2 = tokenizer.token_to_id("d1"), tokenizer.token_to_id("d2")
    weights = fixed_model[0].embedding.weight.data
    weights[[d1, d2]] = weights[[d2, d1]]  # same texts, different document embeddings: a different model
    after = evaluate_beir(fixed_model, fixed_beir_folder, "test", embedding_cache=cache, show_progress_bar=False)
    assert after["ndcg_at_10"] != pytest.approx(before["ndcg_at_10"])
    uncached = evaluate_beir(fixed_model, fixed_beir_folder, "test", show_progress_bar=False)
    assert after == pytest.approx(uncached, nan_ok=True)


@pytest.mark.parametrize("kind", ["Flat", "HNSW32"])
def test_faiss_retrieval_gives_the_exact_scores(fixed_model, fixed_beir_folder, kind):
    exact = evaluate_beir(fixed_model, fixed_beir_folder, "test", show_progress_bar=False)
    with_faiss = evaluate_beir(fixed_model, fixed_beir_folder, "test", faiss_index=kind, show_progress_bar=False)
    assert with_faiss == pytest.approx(exact, abs=1e-6, nan_ok=True)


def test_bad_inputs_are_named(fixed_model, fixed_beir_folder, tmp_path):
    with pytest.raises(ValueError, match="no qrels for split 'validation'"):
        evaluate_beir(fixed_model, fixed_beir_folder, "validation")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        evaluate_beir(fixed_model, tmp_path / "missing", "test")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        evaluate_beir(tmp_path / "no-model", fixed_beir_folder, "test")
    with pytest.raises(ValueError, match="batch_size"):
        evaluate_beir(fixed_model, fixed_beir_folder, "test", batch_size=0)
    with pytest.raises(ValueError, match="organization/model"):
        evaluate_beir(fixed_model, fixed_beir_folder, "test", model_name="no-slash")
    with pytest.raises(TypeError, match="SentenceTransformer or a path"):
        evaluate_beir(object(), fixed_beir_folder, "test")


def test_writes_nothing_without_an_output_folder(fixed_model, fixed_beir_folder, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    evaluate_beir(fixed_model, fixed_beir_folder, "test", show_progress_bar=False)
    assert not (Path(tmp_path) / "results").exists()


# ------------------------------------------------------------------------------- bad evaluation data
# Every bad-data case of the reader is in tests/data/test_beir.py (read_beir); here, that evaluate_beir reads
# through it: bad data fails before any score is computed or any result file written.


def test_bad_evaluation_data_is_refused_before_any_result(fixed_model, fixed_beir_folder, tmp_path):
    (fixed_beir_folder / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td2\t1\nq2\td9\t1\n")
    out = tmp_path / "out"
    with pytest.raises(ValueError, match=r"qrels/test.tsv:3: document 'd9' is not in corpus.jsonl"):
        evaluate_beir(fixed_model, fixed_beir_folder, "test", out, show_progress_bar=False)
    assert not out.exists()  # no score written anywhere


def test_embedding_cache_encodes_the_same_texts_as_no_cache(tiny_llara, make_beir_folder, tmp_path, monkeypatch):
    """Regression: mteb's CachedEmbeddingWrapper prepared already-prepared documents again, so with a cache every
    titled document was encoded as "title title text" and the scores moved (issue 20)."""
    folder = make_beir_folder(
        "titled",
        corpus={
            "d1": ("Tides", "The Moon pulls the oceans."),
            "d2": ("Bees", "Bees dance to show where flowers are."),
            "d3": ("", "Rain fills the rivers."),
        },
        queries={"q1": "what causes tides?", "q2": "how do bees find flowers?"},
        qrels={"test": [("q1", "d1", 1), ("q2", "d2", 1)]},
    )
    encoded: list[str] = []
    original = tiny_llara.encode_document

    def recording_encode_document(texts, **kwargs):
        encoded.extend(texts)
        return original(texts, **kwargs)

    monkeypatch.setattr(tiny_llara, "encode_document", recording_encode_document)
    plain = evaluate_beir(tiny_llara, folder, "test", show_progress_bar=False)
    plain_texts = sorted(encoded)
    encoded.clear()
    cached = evaluate_beir(tiny_llara, folder, "test", embedding_cache=tmp_path / "cache", show_progress_bar=False)
    assert (
        sorted(encoded)
        == plain_texts
        == sorted(
            ["Tides The Moon pulls the oceans.", "Bees Bees dance to show where flowers are.", "Rain fills the rivers."]
        )
    )
    assert cached == pytest.approx(plain, nan_ok=True)
    encoded.clear()
    again = evaluate_beir(tiny_llara, folder, "test", embedding_cache=tmp_path / "cache", show_progress_bar=False)
    assert encoded == [] and again == pytest.approx(plain, nan_ok=True)


@pytest.mark.slow
def test_two_encoding_processes_give_the_scores_of_one(tiny_llara, make_beir_folder, tmp_path, monkeypatch):
    """Issue 17.5: devices=["cpu", "cpu"] encodes in two worker processes (sentence-transformers' pool, the LLaRA
    model sent to each) and gives the scores of one process, up to rounding."""
    from sentence_transformers import SentenceTransformer

    folder = make_beir_folder(
        "pooled",
        corpus={f"d{i}": (f"Title {i}", f"Document {i} about tides, bees and volcanoes, part {i}.") for i in range(9)},
        queries={f"q{i}": f"what do document {i} and the tides say?" for i in range(5)},
        qrels={"test": [(f"q{i}", f"d{2 * i}", 1) for i in range(5)]},
    )
    one = evaluate_beir(tiny_llara, folder, "test", tmp_path / "one", save_predictions=True, show_progress_bar=False)

    def fail(*args, **kwargs):
        raise AssertionError("the main process encoded; the pool's workers should have")

    monkeypatch.setattr(SentenceTransformer, "_inference", fail)  # in this process only: workers import afresh
    two = evaluate_beir(
        tiny_llara,
        folder,
        "test",
        tmp_path / "two",
        save_predictions=True,
        show_progress_bar=False,
        devices=["cpu", "cpu"],
        batch_size=2,
    )
    assert two == pytest.approx(one, abs=1e-6, nan_ok=True)

    def predicted(out):
        return json.loads((out / "predictions" / "pooled_predictions.json").read_text())["default"]["test"]

    by_one, by_two = predicted(tmp_path / "one"), predicted(tmp_path / "two")
    assert set(by_two) == set(by_one) == {f"q{i}" for i in range(5)}
    for query, scores in by_one.items():
        assert by_two[query] == pytest.approx(scores, abs=1e-6)
    assert tiny_llara.device.type == "cpu"


def test_bad_devices_are_named(fixed_model, fixed_beir_folder):
    with pytest.raises(ValueError, match="'gpu0' is not a torch device"):
        evaluate_beir(fixed_model, fixed_beir_folder, "test", devices=["cpu", "gpu0"])
    with pytest.raises(ValueError, match="non-empty list"):
        evaluate_beir(fixed_model, fixed_beir_folder, "test", devices="cpu,cpu")
    with pytest.raises(ValueError, match="not both"):
        evaluate_beir(fixed_model, fixed_beir_folder, "test", devices=["cpu"], device="cpu")


def test_mteb_cache_notices_appear_once_and_are_not_warned_again(fixed_model, fixed_beir_folder, tmp_path):
    """Issue 18.8: a fresh embedding cache logged "Dimension file not found" and "No existing files found" once per
    cache folder (queries, documents) and warned each again with warnings.warn."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        records = records_through_root(
            lambda: evaluate_beir(
                fixed_model, fixed_beir_folder, "test", embedding_cache=tmp_path / "cache", show_progress_bar=False
            )
        )
    messages = [record.getMessage() for record in records if record.name.startswith("mteb.models.cache_wrappers")]
    assert "No existing files found. Initialized empty VectorCacheMap." in messages  # mteb still says it, once
    assert len(messages) == len(set(messages))
    assert not [
        warning for warning in caught if "VectorCacheMap" in str(warning.message) or "Dimension" in str(warning.message)
    ]
    # The next evaluation says it again (once): the notices are de-duplicated per evaluation, not forever.
    again = records_through_root(
        lambda: evaluate_beir(
            fixed_model, fixed_beir_folder, "test", embedding_cache=tmp_path / "other", show_progress_bar=False
        )
    )
    assert sum("No existing files found" in record.getMessage() for record in again) == 1


def test_the_bm25_baseline_is_quiet(fixed_beir_folder, tmp_path):
    """Issue 18.8: bm25s sets its logger to DEBUG on import, and MTEB's BM25 baseline printed "DEBUG bm25s: Building
    index from IDs objects" into quiet output; with the root at DEBUG (``-vv``) it shows again."""
    import mteb

    from llara_st.evaluation import BEIRFolderRetrieval

    def run() -> None:
        task = BEIRFolderRetrieval(fixed_beir_folder, ["test"])
        mteb.evaluate(mteb.get_model("mteb/baseline-bm25s"), [task], cache=None, show_progress_bar=False)

    assert [record.getMessage() for record in records_through_root(run) if record.name == "bm25s"] == []
    verbose = records_through_root(run, logging.DEBUG)
    assert any(record.name == "bm25s" and record.levelno == logging.DEBUG for record in verbose)
