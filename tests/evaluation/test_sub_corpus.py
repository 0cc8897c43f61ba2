"""One corpus subsampler for the training evaluator and the sub-corpus folders: every relevant document of the given
qrels splits plus a seeded sample of the others."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from llara_st.data import load_beir
from llara_st.data.beir import read_beir_qrels
from llara_st.evaluation import beir_ir_evaluator, sub_corpus_ids, write_sub_corpus
from tests.conftest import write_beir_folder

DOCS = [f"d{i:02d}" for i in range(30)]
DEV = {"q1": {"d03": 1, "d04": 0}, "q2": {"d10": 2}}
TEST = {"q3": {"d20": 1}, "q4": {"d03": 1, "d25": 1}}


def test_relevant_documents_of_every_split_are_kept():
    kept = sub_corpus_ids(DOCS, [DEV, TEST], size=8, seed=1)
    assert len(kept) == 8 and {"d03", "d10", "d20", "d25"} <= kept


def test_the_sample_is_the_one_both_old_samplers_drew():
    # Regression: the evaluator and the study's sub-corpus drew their sample this way; the figures must not move.
    relevant = {"d03", "d10"}
    others = sorted(set(DOCS) - relevant)
    expected = relevant | set(random.Random(7).sample(others, 10 - len(relevant)))
    assert sub_corpus_ids(DOCS, DEV, size=10, seed=7) == expected


@pytest.mark.parametrize("size", [None, 30, 100])
def test_no_size_or_a_large_one_keeps_everything(size):
    assert sub_corpus_ids(DOCS, DEV, size=size, seed=0) == set(DOCS)


def test_relevant_documents_beyond_the_size_are_all_kept():
    assert sub_corpus_ids(DOCS, [DEV, TEST], size=2, seed=0) == {"d03", "d10", "d20", "d25"}


@pytest.fixture
def beir_folder(tmp_path: Path) -> Path:
    qrels = {
        split: [(q, d, s) for q, judged in judged_queries.items() for d, s in judged.items()]
        for split, judged_queries in (("dev", DEV), ("test", TEST))
    }
    return write_beir_folder(
        tmp_path / "beir",
        {doc: f"Text of {doc}." for doc in DOCS},
        {f"q{i}": f"Query {i}?" for i in range(1, 5)},
        qrels,
    )


def test_one_folder_for_dev_and_test(beir_folder: Path, tmp_path: Path):
    out = write_sub_corpus(beir_folder, ["dev", "test"], size=8, seed=1, out=tmp_path / "sub")
    for split in ("dev", "test"):
        corpus, _, qrels = load_beir(out, split)
        assert qrels and set(corpus) == sub_corpus_ids(DOCS, [DEV, TEST], size=8, seed=1)
    # The evaluator on the full folder draws the same documents for dev alone as a dev-only folder holds.
    dev_only = write_sub_corpus(beir_folder, "dev", size=8, seed=1, out=tmp_path / "dev-only")
    evaluator = beir_ir_evaluator(*load_beir(beir_folder, "dev"), corpus_size=8, seed=1)
    assert set(evaluator.corpus_ids) == set(load_beir(dev_only, "dev")[0])


def test_max_queries_keeps_a_seeded_sample_of_queries_and_their_documents(beir_folder: Path, tmp_path: Path):
    qrels = read_beir_qrels(beir_folder / "qrels" / "dev.tsv")
    out = write_sub_corpus(beir_folder, "dev", size=None, seed=0, out=tmp_path / "sub", max_queries=1)
    kept = read_beir_qrels(out / "qrels" / "dev.tsv")
    assert len(kept) == 1 and kept == {query: qrels[query] for query in kept}
    again = write_sub_corpus(beir_folder, "dev", size=None, seed=0, out=tmp_path / "again", max_queries=1)
    assert read_beir_qrels(again / "qrels" / "dev.tsv") == kept  # seeded
    every = write_sub_corpus(beir_folder, "dev", size=None, seed=0, out=tmp_path / "all", max_queries=100)
    assert read_beir_qrels(every / "qrels" / "dev.tsv") == qrels
    # The corpus follows the kept queries: at size 1, only the kept query's relevant documents.
    small = write_sub_corpus(beir_folder, "dev", size=1, seed=0, out=tmp_path / "small", max_queries=1)
    ((query, judged),) = read_beir_qrels(small / "qrels" / "dev.tsv").items()
    corpus = {json.loads(line)["_id"] for line in (small / "corpus.jsonl").read_text().splitlines()}
    assert corpus == {doc for doc, score in qrels[query].items() if score > 0}
