"""Hard-negative mining: BM25 (bm25s) and dense (sentence-transformers' mine_hard_negatives) windows and filters."""

from __future__ import annotations

import datetime
import json
from functools import partial
from pathlib import Path

import bm25s
import pytest
import Stemmer
import torch
import torch.distributed as dist

import llara_st
from llara_st.data.mining import mine_hard_negatives_from_qrels
from llara_st.evaluation.ir_evaluator import beir_ir_evaluator, run_on_main_process
from tests.conftest import records_through_root

CORPUS = {
    "pos": "apple orchard harvest in autumn",
    "pos_copy": "apple orchard harvest in autumn",  # same text as the positive under another id
    "near": "apple orchard harvest festival: apple orchard harvest again",  # outscores the positive
    "pie": "apple pie with cinnamon",
    "moon": "the harvest moon rises",
    "orchard": "an orchard of pear trees",
    "banana": "banana bread recipe",  # shares no term with the query
    "second_pos": "bees pollinate the apple orchard",
}
QUERIES = {"q": "apple orchard harvest", "r": "apple orchard bees"}


def bm25_order(query: str, candidates: list[str]) -> list[str]:
    """Candidates sorted by their BM25 score for the query, computed with bm25s directly."""
    stemmer = Stemmer.Stemmer("english")
    ids = list(CORPUS)
    index = bm25s.BM25()
    index.index(bm25s.tokenize(list(CORPUS.values()), stopwords="english", stemmer=stemmer, show_progress=False))
    tokens = bm25s.tokenize([query], stopwords="english", stemmer=stemmer, return_ids=False, show_progress=False)[0]
    scores = index.get_scores(tokens)
    return sorted(candidates, key=lambda doc_id: -scores[ids.index(doc_id)])


def mine(qrels: dict, **kwargs) -> dict[str, list[str]]:
    settings = {
        "range_min": 0,
        "range_max": 20,
        "relative_margin": None,
        "sampling_strategy": "top",
        "num_negatives": 10,
    }
    return mine_hard_negatives_from_qrels(CORPUS, QUERIES, qrels, "bm25", **(settings | kwargs))


def test_bm25_never_returns_positives_their_copies_or_unmatched_documents() -> None:
    negatives = mine({"q": {"pos": 1}, "r": {"pos": 1, "second_pos": 2}})
    assert set(negatives["q"]) == {"near", "pie", "moon", "orchard", "second_pos"}
    assert negatives["q"] == bm25_order(QUERIES["q"], negatives["q"])
    # both positives of r are excluded, and so is the copy of one of them
    assert not {"pos", "pos_copy", "second_pos", "banana"} & set(negatives["r"])


def test_bm25_window_skips_the_top_ranks() -> None:
    full = mine({"q": {"pos": 1}})["q"]
    assert mine({"q": {"pos": 1}}, range_min=2)["q"] == full[2:]
    assert mine({"q": {"pos": 1}}, range_min=1, range_max=3)["q"] == full[1:3]


def test_relative_margin_drops_candidates_scoring_like_the_positive() -> None:
    full = mine({"q": {"pos": 1}})["q"]
    assert full[0] == "near"  # it scores above the positive: a likely unjudged positive
    filtered = mine({"q": {"pos": 1}}, relative_margin=0.05)["q"]
    assert "near" not in filtered and filtered == [doc_id for doc_id in full if doc_id != "near"]


def test_random_sampling_is_seeded_and_keeps_the_retriever_order() -> None:
    full = mine({"q": {"pos": 1}})["q"]
    draws = [mine({"q": {"pos": 1}}, num_negatives=3, sampling_strategy="random", seed=seed)["q"] for seed in range(6)]
    assert draws[0] == mine({"q": {"pos": 1}}, num_negatives=3, sampling_strategy="random", seed=0)["q"]
    assert len({tuple(draw) for draw in draws}) > 1
    for draw in draws:
        assert len(draw) == 3 and draw == [doc_id for doc_id in full if doc_id in draw]


def test_queries_without_relevant_documents_are_skipped_and_bad_settings_named() -> None:
    assert set(mine({"q": {"pos": 1}, "r": {"pos": 0}})) == {"q"}
    with pytest.raises(ValueError, match="range_min < range_max"):
        mine({"q": {"pos": 1}}, range_min=5, range_max=5)
    with pytest.raises(ValueError, match="num_negatives"):
        mine({"q": {"pos": 1}}, num_negatives=0)
    with pytest.raises(ValueError, match="relative_margin must be >= 0"):
        mine({"q": {"pos": 1}}, relative_margin=-0.1)
    with pytest.raises(KeyError, match="queries of the qrels missing"):
        mine({"elsewhere": {"pos": 1}})
    with pytest.raises(ValueError, match="'bm25'"):
        mine_hard_negatives_from_qrels(CORPUS, QUERIES, {"q": {"pos": 1}}, "bm42")
    with pytest.raises(KeyError, match="missing"):
        mine({"q": {"nowhere": 1}})


@pytest.mark.parametrize("use_faiss", [False, True])
def test_dense_mining_ranks_by_the_llara_query_and_passage_embeddings(tiny_llara, use_faiss: bool) -> None:
    if use_faiss:
        pytest.importorskip("faiss")
    qrels = {"q": {"pos": 1}, "r": {"pos": 1, "second_pos": 1}}
    negatives = mine_hard_negatives_from_qrels(
        CORPUS,
        QUERIES,
        qrels,
        tiny_llara,
        num_negatives=4,
        range_min=1,
        range_max=5,
        relative_margin=None,
        sampling_strategy="top",
        use_faiss=use_faiss,
    )
    # Independent ranking: query template for queries, passage template for the corpus, cosine.
    unique_docs = ["pos", "near", "pie", "moon", "orchard", "banana", "second_pos"]  # pos_copy is the same text
    queries = tiny_llara.encode_query(list(QUERIES.values()), convert_to_tensor=True)
    documents = tiny_llara.encode_document([CORPUS[d] for d in unique_docs], convert_to_tensor=True)
    scores = queries @ documents.T
    for row, query_id in enumerate(QUERIES):
        ranked = [unique_docs[i] for i in torch.argsort(scores[row], descending=True).tolist()]
        ranked = [doc_id for doc_id in ranked if doc_id not in qrels[query_id]]
        assert negatives[query_id] == ranked[1:5], query_id


def test_bm25_mining_is_quiet_at_the_default_log_level():
    """Issue 18.8: bm25s sets its own logger to DEBUG, so "Building index from tokens" leaked into quiet output."""
    corpus = {f"d{i}": f"document {i} about tides and bees {i % 3}" for i in range(20)}
    records = records_through_root(
        lambda: mine_hard_negatives_from_qrels(
            corpus, {"q1": "tides 3"}, {"q1": {"d3": 1}}, retriever="bm25", num_negatives=2, range_min=0
        )
    )
    assert [record.getMessage() for record in records if record.name.startswith("bm25s")] == []


# ---------------------------------------------------------------------------------------- data-parallel runs

TWO_PROCESS_QRELS = {"q": {"pos": 1}, "r": {"pos": 1, "second_pos": 1}}


def _mine(retriever, counts: dict[str, int]) -> dict[str, list[str]]:
    counts["mined"] += 1
    settings = {"num_negatives": 4, "range_min": 0, "range_max": 5, "relative_margin": None, "use_faiss": False}
    return mine_hard_negatives_from_qrels(CORPUS, QUERIES, TWO_PROCESS_QRELS, retriever, **settings)


def _two_process_worker(rank: int, store: str, model_dir: str, out: str) -> None:
    """One of two gloo processes, as under ``torchrun --nproc_per_node 2``: mines, evaluates, writes what it got."""
    dist.init_process_group(
        "gloo", init_method=f"file://{store}", rank=rank, world_size=2, timeout=datetime.timedelta(seconds=120)
    )
    try:
        model = llara_st.load(model_dir, device="cpu")
        counts = {"mined": 0, "encoded": 0}
        inference = model._inference

        def counting_inference(inputs, **kwargs):
            counts["encoded"] += len(inputs)
            return inference(inputs, **kwargs)

        model._inference = counting_inference
        dense = run_on_main_process(partial(_mine, model, counts), model)
        bm25 = run_on_main_process(partial(_mine, "bm25", counts))
        evaluator = beir_ir_evaluator(CORPUS, QUERIES, TWO_PROCESS_QRELS, name="dev")
        metrics = run_on_main_process(partial(evaluator, model), model)
        try:
            run_on_main_process(partial(_mine, "bm42", counts))
            error = ""
        except Exception as exception:
            error = f"{type(exception).__name__}: {exception}"
        result = {"dense": dense, "bm25": bm25, "metrics": metrics, "error": error, **counts}
        Path(out, f"rank{rank}.json").write_text(json.dumps(result))
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_two_processes_mine_and_evaluate_once_and_agree(tiny_llara_dir, tiny_llara, tmp_path) -> None:
    """Issue 18 item 8 (data-parallel fine-tuning): mining and the dev evaluation ran in full on every process.
    Now rank 0 computes, a dense retriever's encoding shared by both processes; both get rank 0's result, which is
    one process's; an error on rank 0 reaches the other instead of leaving it waiting."""
    torch.multiprocessing.start_processes(
        _two_process_worker,
        args=(str(tmp_path / "store"), str(tiny_llara_dir), str(tmp_path)),
        nprocs=2,
        start_method="spawn",
    )
    zero, one = (json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in (0, 1))
    assert (zero["mined"], one["mined"]) == (3, 0)  # dense, BM25 and the failing one: on rank 0 only
    assert zero["encoded"] > 0 and one["encoded"] > 0  # rank 1 encoded its share of rank 0's texts

    counts = {"mined": 0}
    assert zero["dense"] == one["dense"] == _mine(tiny_llara, counts)
    assert zero["bm25"] == one["bm25"] == _mine("bm25", counts)
    alone = beir_ir_evaluator(CORPUS, QUERIES, TWO_PROCESS_QRELS, name="dev")(tiny_llara)
    assert zero["metrics"] == one["metrics"]
    assert zero["metrics"] == pytest.approx(alone, abs=1e-6)
    assert zero["error"].startswith("ValueError: retriever must be")
    assert one["error"].startswith("RuntimeError: the main process failed") and "retriever must be" in one["error"]
