"""BEIRFolderRetrieval: reading a local BEIR folder into MTEB's retrieval format, offline."""

from __future__ import annotations

import hashlib
import json

import pytest

from llara_st.evaluation import BEIRFolderRetrieval, beir_folder_revision, beir_split_names


def _folder(make_beir_folder, name: str = "tiny"):
    return make_beir_folder(
        name,
        corpus={"0123": ("A title", "first text"), "7": "second text"},
        queries={"007": "a query", "8": "another query", "9": "unjudged query"},
        qrels={"test": [("007", "0123", 1), ("8", "7", 2)], "dev": [("8", "0123", 1)]},
    )


def test_reads_corpus_queries_and_qrels_with_string_ids(make_beir_folder):
    task = BEIRFolderRetrieval(_folder(make_beir_folder), ["test", "dev"])
    task.load_data()
    test = task.dataset["default"]["test"]
    assert test["corpus"]["id"] == ["0123", "7"]  # leading zeros kept
    assert test["corpus"]["title"] == ["A title", ""]
    assert test["queries"]["id"] == ["007", "8"]  # only queries with qrels in this split
    assert test["relevant_docs"] == {"007": {"0123": 1}, "8": {"7": 2}}
    assert task.dataset["default"]["dev"]["queries"]["id"] == ["8"]
    assert task.metadata.name == "tiny" and task.metadata.main_score == "ndcg_at_10"
    assert task.metadata.eval_splits == ["test", "dev"]


def test_defaults_to_every_split_and_accepts_a_name(make_beir_folder):
    folder = _folder(make_beir_folder)
    assert beir_split_names(folder) == ["dev", "test"]
    task = BEIRFolderRetrieval(folder, name="MyTask")
    assert task.metadata.eval_splits == ["dev", "test"] and task.metadata.name == "MyTask"


def test_each_folder_keeps_its_own_metadata(make_beir_folder):
    first = BEIRFolderRetrieval(_folder(make_beir_folder, "first"), "test")
    second = BEIRFolderRetrieval(_folder(make_beir_folder, "second"), "dev")
    assert (first.metadata.name, second.metadata.name) == ("first", "second")
    first.load_data()
    first.unload_data()  # MTEB unloads after evaluating; the folder's metadata must survive it
    assert first.metadata.name == "first" and first.metadata.eval_splits == ["test"]


def test_revision_is_a_content_hash(make_beir_folder):
    folder = _folder(make_beir_folder)
    before = beir_folder_revision(folder)
    # One revision for every split, so that the splits' results merge into one result file.
    assert BEIRFolderRetrieval(folder, "test").metadata.revision == before
    assert BEIRFolderRetrieval(folder, "dev").metadata.revision == before
    # The revision recorded before the one content hasher (issue 19): names and contents, every split in order.
    files = [
        folder / "corpus.jsonl",
        folder / "queries.jsonl",
        folder / "qrels" / "dev.tsv",
        folder / "qrels" / "test.tsv",
    ]
    assert before == hashlib.sha256(b"".join(path.name.encode() + path.read_bytes() for path in files)).hexdigest()[:16]
    with (folder / "corpus.jsonl").open("a") as handle:
        handle.write(json.dumps({"_id": "new", "title": "", "text": "added"}) + "\n")
    assert beir_folder_revision(folder) != before


def test_bad_folders_are_named(make_beir_folder, tmp_path):
    folder = _folder(make_beir_folder)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        BEIRFolderRetrieval(tmp_path / "missing")
    with pytest.raises(ValueError, match=r"no qrels for split 'train' \(qrels/train.tsv\); available splits: "):
        BEIRFolderRetrieval(folder, ["train"])
    (folder / "queries.jsonl").unlink()
    with pytest.raises(FileNotFoundError, match="has no queries.jsonl"):
        BEIRFolderRetrieval(folder, ["test"])
