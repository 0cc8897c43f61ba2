"""The one reader for JSON lines and BEIR folders: string ids, checked rows, errors that name file and line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llara_st.data import (
    load_beir,
    read_beir,
    read_beir_documents,
    read_beir_qrels,
    read_contrastive_jsonl,
    read_jsonl,
)


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


def test_a_bad_line_is_named_from_one_reading_of_the_file(tmp_path, monkeypatch):
    """Issue 19: a failed check read the file again (more than once for mixed ids) to find the line; lines are now
    counted as the file is read."""
    path = _write(tmp_path / "corpus.jsonl", [{"_id": "a", "text": "x"}, {"_id": "b", "text": "y"}, {"_id": "a"}])
    opened = []

    def counting_open(file, *args, **kwargs):
        opened.append(Path(file))
        return open(file, *args, **kwargs)

    monkeypatch.setattr("llara_st.data.beir.open", counting_open, raising=False)
    with pytest.raises(ValueError, match=r"corpus.jsonl:3: duplicate _id 'a' \(first at line 1\)"):
        read_beir_documents(path)
    assert opened == [path]


def test_rows_read_in_several_batches_are_the_rows_read_at_once(tmp_path, monkeypatch):
    rows = [{"_id": i, "text": f"t{i}", **({"title": "T"} if i % 2 else {})} for i in range(7)]
    path = _write(tmp_path / "corpus.jsonl", rows)
    at_once = read_beir_documents(path)
    monkeypatch.setattr("llara_st.data.beir._BATCH_ROWS", 2)
    in_batches = read_beir_documents(path)
    assert in_batches[:] == at_once[:] and in_batches.features == at_once.features
    assert in_batches["title"] == ["", "T", "", "T", "", "T", ""]
    _write(path, [*rows, {"_id": 1, "text": "again"}])  # a duplicate of a row of an earlier batch
    with pytest.raises(ValueError, match=r"corpus.jsonl:8: duplicate _id '1' \(first at line 2\)"):
        read_beir_documents(path)


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


def test_qrels_keep_string_ids_and_name_a_bad_line(tmp_path):
    path = tmp_path / "qrels.tsv"
    path.write_text("query-id\tcorpus-id\tscore\n1\t01\t1\n1\t02\t0\n")
    assert read_beir_qrels(path) == {"1": {"01": 1, "02": 0}}
    path.write_text("query-id\tcorpus-id\tscore\n1\t01\thigh\n")  # read_beir reads qrels this way too (below)
    with pytest.raises(ValueError, match=r"qrels.tsv:2: score 'high' is not an integer"):
        read_beir_qrels(path)


# ------------------------------------------------------------------------------------ bad BEIR folders
# Each case corrupts one file of a good folder (rows as raw lines, so types are exactly as written) and read_beir
# must refuse it, naming the file and line. The folder: five documents, four queries (q4 unjudged), test qrels.

CORPUS = [json.dumps({"_id": f"d{i}", "title": "", "text": f"d{i}"}) for i in range(1, 6)]
QUERIES = [json.dumps({"_id": f"q{i}", "text": f"q{i}"}) for i in range(1, 5)]
QRELS = ["query-id\tcorpus-id\tscore", "q1\td2\t1", "q1\td4\t1", "q2\td5\t1", "q2\td1\t0", "q3\td3\t2", "q3\td1\t1"]


def _beir_folder(folder: Path, **files: list[str]) -> Path:
    """A BEIR folder of ``CORPUS``, ``QUERIES`` and ``QRELS`` (split ``test``); ``files`` replace them by name."""
    (folder / "qrels").mkdir(parents=True)
    lines = {"corpus.jsonl": CORPUS, "queries.jsonl": QUERIES, "qrels/test.tsv": QRELS, **files}
    for name, rows in lines.items():
        (folder / name).write_text("".join(row + "\n" for row in rows), encoding="utf8")
    return folder


def _corpus_lines(**replaced: str) -> list[str]:
    return list(({f"d{i}": line for i, line in enumerate(CORPUS, start=1)} | replaced).values())


BAD_DATA = {
    "qrels document missing from the corpus": (
        "qrels/test.tsv",
        ["query-id\tcorpus-id\tscore", "q1\td2\t1", "q2\td9\t1"],
        r"qrels/test.tsv:3: document 'd9' is not in corpus.jsonl",
    ),
    "qrels query missing from the queries": (
        "qrels/test.tsv",
        ["query-id\tcorpus-id\tscore", "q1\td2\t1", "q7\td1\t1"],
        r"qrels/test.tsv:3: query 'q7' is not in queries.jsonl",
    ),
    "qrels without a header": ("qrels/test.tsv", ["q1\td2\t1"], r"qrels/test.tsv: expected the header"),
    "qrels score not an integer": (
        "qrels/test.tsv",
        ["query-id\tcorpus-id\tscore", "q1\td2\t1", "q1\td4\thigh"],
        r"qrels/test.tsv:3: score 'high' is not an integer",
    ),
    "qrels line of two columns": (
        "qrels/test.tsv",
        ["query-id\tcorpus-id\tscore", "q1\td2"],
        r"qrels/test.tsv:2: expected 3 tab-separated columns",
    ),
    "empty qrels": ("qrels/test.tsv", ["query-id\tcorpus-id\tscore"], r"qrels/test.tsv: no judgements"),
    "duplicate document id": (
        "corpus.jsonl",
        [*CORPUS, json.dumps({"_id": "d2", "title": "", "text": "d3"})],
        r"corpus.jsonl:6: duplicate _id 'd2' \(first at line 2\)",
    ),
    "duplicate query id": (
        "queries.jsonl",
        [json.dumps({"_id": q, "text": q}) for q in ("q1", "q2", "q3", "q2")],
        r"queries.jsonl:4: duplicate _id 'q2' \(first at line 2\)",
    ),
    "null document text": (
        "corpus.jsonl",
        _corpus_lines(d3=json.dumps({"_id": "d3", "title": "", "text": None})),
        r"corpus.jsonl:3: 'text' must be a string, got null",
    ),
    "non-string document text": (
        "corpus.jsonl",
        _corpus_lines(d4=json.dumps({"_id": "d4", "title": "", "text": 4})),
        r"corpus.jsonl:4: 'text' must be a string, got 4",
    ),
    "non-string query text": (
        "queries.jsonl",
        [json.dumps({"_id": "q1", "text": ["q1"]}), json.dumps({"_id": "q2", "text": "q2"})],
        r"queries.jsonl:1: 'text' must be a string, got \['q1'\]",
    ),
    "document without text": (
        "corpus.jsonl",
        _corpus_lines(d5=json.dumps({"_id": "d5", "title": "d5"})),
        r"corpus.jsonl:5: row has no 'text' field",
    ),
    "no document has a text": (
        "corpus.jsonl",
        [json.dumps({"_id": "d1", "body": "no text field"})],
        r"corpus.jsonl:1: row has no 'text' field \(found \['_id', 'body'\]\)",
    ),
    "document id neither string nor integer": (
        "corpus.jsonl",
        _corpus_lines(d1=json.dumps({"_id": 1.5, "title": "", "text": "d1"})),
        r"corpus.jsonl:1: '_id' must be a string or an integer, got 1.5",
    ),
    "document line not JSON": ("corpus.jsonl", [*CORPUS, "{not json"], r"corpus.jsonl:6 is not valid JSON"),
    "empty corpus": ("corpus.jsonl", [], r"corpus.jsonl: no rows"),
}


@pytest.mark.parametrize("case", list(BAD_DATA))
def test_bad_beir_data_is_refused_naming_file_and_line(case, tmp_path):
    file_name, lines, message = BAD_DATA[case]
    folder = _beir_folder(tmp_path / "beir", **{file_name: lines})
    with pytest.raises(ValueError, match=message):
        read_beir(folder, "test")


def test_the_good_folder_of_the_bad_data_cases_is_read(tmp_path):
    corpus, queries, qrels = read_beir(_beir_folder(tmp_path / "beir"), "test")
    assert corpus["id"] == ["d1", "d2", "d3", "d4", "d5"] and queries["id"] == ["q1", "q2", "q3"]
    assert qrels == {"q1": {"d2": 1, "d4": 1}, "q2": {"d5": 1, "d1": 0}, "q3": {"d3": 2, "d1": 1}}


def test_missing_folders_files_and_splits_are_named(tmp_path):
    folder = _beir_folder(tmp_path / "beir")
    with pytest.raises(
        ValueError, match=r"no qrels for split 'train' \(qrels/train.tsv\); available splits: \['test'\]"
    ):
        read_beir(folder, "train")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_beir(tmp_path / "missing", "test")
    (folder / "queries.jsonl").unlink()
    with pytest.raises(FileNotFoundError, match="has no queries.jsonl"):
        read_beir(folder, "test")


def test_mixed_integer_and_string_ids_are_read_as_strings_with_a_warning(tmp_path, caplog):
    texts = {1: "d1", 2: "d2", "d3": "d3", "d4": "d4", "d5": "d5"}
    corpus_lines = [json.dumps({"_id": i, "title": "", "text": t}) for i, t in texts.items()]
    qrels_lines = [line.replace("\td1\t", "\t1\t").replace("\td2\t", "\t2\t") for line in QRELS]
    folder = _beir_folder(tmp_path / "beir", **{"corpus.jsonl": corpus_lines, "qrels/test.tsv": qrels_lines})
    with caplog.at_level("WARNING", logger="llara_st.data.beir"):
        corpus, _, qrels = read_beir(folder, "test")
    assert "mixes integer and string '_id' values (line 1: 1, line 3: 'd3')" in caplog.text
    assert corpus["id"] == ["1", "2", "d3", "d4", "d5"]
    assert qrels == {"q1": {"2": 1, "d4": 1}, "q2": {"d5": 1, "1": 0}, "q3": {"d3": 2, "1": 1}}
