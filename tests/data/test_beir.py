"""The one reader for JSON lines and BEIR folders: string ids, checked rows, errors that name file and line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llara_st.data import load_beir, read_beir, read_beir_documents, read_contrastive_jsonl, read_jsonl


def _write(path: Path, rows: list) -> Path:
    path.write_text("".join((row if isinstance(row, str) else json.dumps(row)) + "\n" for row in rows))
    return path


def test_documents_keep_string_ids_and_read_null_titles_as_empty(tmp_path):
    path = _write(
        tmp_path / "corpus.jsonl",
        [{"_id": "0123", "title": None, "text": "a"}, "", {"_id": "7", "text": "b", "metadata": {"x": 1}}],
    )
    documents = read_beir_documents(path)
    assert documents.column_names == ["id", "title", "text"]
    assert documents[:] == {"id": ["0123", "7"], "title": ["", ""], "text": ["a", "b"]}


def test_integer_ids_become_their_decimal_strings(tmp_path):
    path = _write(tmp_path / "corpus.jsonl", [{"_id": 10, "text": "a"}, {"_id": 2, "text": "b"}])
    assert read_beir_documents(path)["id"] == ["10", "2"]


def test_lines_are_counted_past_blank_lines(tmp_path):
    path = _write(tmp_path / "rows.jsonl", [{"text": "a"}, "", "", {"text": None}])
    with pytest.raises(ValueError, match=r"rows.jsonl:4: 'text' must be a string, got null"):
        read_jsonl(path, ["text"])
    _write(path, [{"text": "a"}, "", "{broken"])
    with pytest.raises(ValueError, match="rows.jsonl:3 is not valid JSON"):
        read_jsonl(path, ["text"])
    _write(path, [{"text": "a"}, "[1, 2]"])
    with pytest.raises(ValueError, match="rows.jsonl:2: expected a JSON object per line"):
        read_jsonl(path, ["text"])


def test_text_lists_are_checked_and_default_to_empty(tmp_path):
    path = _write(tmp_path / "rows.jsonl", [{"query": "q", "pos": ["p"]}, {"query": "r", "pos": ["p"], "neg": ["n"]}])
    assert read_jsonl(path, ["query"], text_lists=["pos", "neg"])["neg"] == [[], ["n"]]
    _write(path, [{"query": "q", "pos": ["p"]}, {"query": "r", "pos": ["p", 3]}])
    with pytest.raises(ValueError, match=r"rows.jsonl:2: 'pos' must be a list of strings, got \['p', 3\]"):
        read_contrastive_jsonl(path)
    _write(path, [{"query": "q", "pos": ["p"]}, {"query": " ", "pos": ["p"]}])
    with pytest.raises(ValueError, match="rows.jsonl:2: 'query' must be a non-empty string"):
        read_contrastive_jsonl(path)


def test_read_beir_and_load_beir_agree(tmp_path):
    folder = tmp_path / "beir"
    folder.mkdir()
    _write(folder / "corpus.jsonl", [{"_id": "d1", "title": "T", "text": "x"}])
    _write(folder / "queries.jsonl", [{"_id": "q1", "text": "what"}, {"_id": "q2", "text": "unjudged"}])
    (folder / "qrels").mkdir()
    (folder / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\n")
    corpus, queries, qrels = read_beir(folder, "test")
    assert corpus[0] == {"id": "d1", "title": "T", "text": "x"} and queries["id"] == ["q1"]
    assert load_beir(folder, "test") == ({"d1": "T x"}, {"q1": "what"}, {"q1": {"d1": 1}}) and qrels == {
        "q1": {"d1": 1}
    }
