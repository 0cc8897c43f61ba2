"""Issue 18.1: from a folder of documents to ranked answers, in Python and with ``llara-st index`` / ``search``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("faiss")

import llara_st  # noqa: E402
from conftest import DOCUMENTS  # noqa: E402  (the root conftest's five documents, as in the doctests)
from llara_st.cli import main  # noqa: E402
from llara_st.data import read_documents  # noqa: E402
from llara_st.evaluation import DocumentIndex, ModelMismatchError  # noqa: E402

WORDS = "moon tide ocean bee flower river rain volcano magma crust comb dance water field hill retriever".split()


def _write_texts(folder: Path, texts: dict[str, str]) -> Path:
    for name, text in texts.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text + "\n", encoding="utf8")
    return folder


@pytest.fixture
def notes(tmp_path: Path) -> Path:
    """A folder of .txt files (one in a sub-folder), the five fixture documents."""
    texts = {f"{doc_id}.txt": text for doc_id, (_, text) in DOCUMENTS.items()}
    texts["sea/d1.txt"] = texts.pop("d1.txt")
    return _write_texts(tmp_path / "notes", texts)


@pytest.fixture
def many_texts() -> dict[str, str]:
    """48 distinct short documents: enough to train an IVF index of 4 lists."""
    return {
        f"doc{i:02d}.txt": " ".join(WORDS[(i * 7 + j * 3) % len(WORDS)] for j in range(4 + i % 5)) + f" number {i}"
        for i in range(48)
    }


def _ranking(index: DocumentIndex, queries: list[str], k: int = 5, **kwargs) -> list[list[tuple[str, float]]]:
    return [[(hit.id, hit.score) for hit in hits] for hits in index.search(queries, k, **kwargs)]


def test_a_query_identical_to_a_document_finds_it_first(tiny_llara, tiny_llara_dir, notes, tmp_path):
    index = DocumentIndex(tiny_llara, model_name_or_path=tiny_llara_dir)
    assert index.add(read_documents(notes), show_progress_bar=False) == 5
    saved = index.save(tmp_path / "index")
    loaded = DocumentIndex.load(saved)  # loads the model recorded in the index
    texts = {doc_id: text for doc_id, (_, text) in DOCUMENTS.items()}
    hits = loaded.search([texts["d1"], texts["d5"]], k=3)
    assert [hit.id for hit in hits[0]][0] == "sea/d1.txt"
    assert [hit.id for hit in hits[1]][0] == "d5.txt"
    assert hits[0][0].text == texts["d1"] and hits[0][0].rank == 1
    assert hits[0][0].score >= hits[0][1].score >= hits[0][2].score


def test_documents_added_later_rank_as_if_indexed_at_once(tiny_llara, notes, many_texts, tmp_path):
    more = _write_texts(tmp_path / "more", many_texts)
    queries = ["moon tide ocean", "bee flower comb", "river rain field number 7"]
    at_once = DocumentIndex(tiny_llara, "Flat")
    at_once.add(read_documents([notes, more]), show_progress_bar=False)
    grown = DocumentIndex(tiny_llara, "Flat")
    grown.add(read_documents(notes), show_progress_bar=False)
    grown = DocumentIndex.load(grown.save(tmp_path / "index"), tiny_llara)
    assert grown.add(read_documents([notes, more]), show_progress_bar=False) == len(many_texts)  # only the new
    expected = _ranking(at_once, queries)
    for got_row, expected_row in zip(_ranking(grown, queries), expected, strict=True):
        assert [doc_id for doc_id, _ in got_row] == [doc_id for doc_id, _ in expected_row]
        assert [score for _, score in got_row] == pytest.approx([score for _, score in expected_row], abs=1e-5)


def test_ivf_searching_every_list_gives_the_exact_ranking(tiny_llara, many_texts, tmp_path):
    documents = read_documents(_write_texts(tmp_path / "docs", many_texts))
    queries = ["moon tide ocean", "bee flower comb", "volcano magma crust number 3", "retriever water"]
    exact = DocumentIndex(tiny_llara, "Flat")
    exact.add(documents, show_progress_bar=False)
    ivf = DocumentIndex(tiny_llara, "IVF4,Flat")
    ivf.add(documents, show_progress_bar=False)
    ivf = DocumentIndex.load(ivf.save(tmp_path / "ivf"), tiny_llara)
    expected = _ranking(exact, queries, k=10)
    got = _ranking(ivf, queries, k=10, search_parameters={"nprobe": 4})
    assert [[doc_id for doc_id, _ in row] for row in got] == [[doc_id for doc_id, _ in row] for row in expected]


def test_another_model_is_refused(tiny_llara, tiny_llama_dir, notes, tmp_path):
    index = DocumentIndex(tiny_llara)
    index.add(read_documents(notes), show_progress_bar=False)
    index.save(tmp_path / "index")
    other = llara_st.convert(str(tiny_llama_dir), tmp_path / "other", query_max_length=100)
    with pytest.raises(ModelMismatchError, match="fingerprint"):
        DocumentIndex.load(tmp_path / "index", other)


def test_a_changed_document_or_a_foreign_folder_is_refused(tiny_llara, notes, tmp_path):
    index = DocumentIndex(tiny_llara)
    index.add({"a": "The Moon pulls the oceans."}, show_progress_bar=False)
    assert index.add({"a": "The Moon pulls the oceans."}, show_progress_bar=False) == 0
    with pytest.raises(ValueError, match="'a' is indexed already with another text"):
        index.add({"a": "Bees dance."}, show_progress_bar=False)
    with pytest.raises(FileExistsError, match="not a document index"):
        index.save(notes)  # a folder of the user's, not made here: never replaced
    assert sorted(path.name for path in notes.iterdir()) == ["d2.txt", "d3.txt", "d4.txt", "d5.txt", "sea"]


def test_saving_over_an_index_replaces_it_and_leaves_no_staging_folder(tiny_llara, tmp_path):
    index = DocumentIndex(tiny_llara)
    index.add({"a": "The Moon pulls the oceans."}, show_progress_bar=False)
    index.save(tmp_path / "index")
    index.add({"b": "Bees dance."}, show_progress_bar=False)
    index.save(tmp_path / "index")
    assert sorted(path.name for path in tmp_path.iterdir()) == ["index"]
    assert DocumentIndex.load(tmp_path / "index", tiny_llara).ids == ["a", "b"]


def test_documents_that_do_not_match_the_faiss_ids_are_refused(tiny_llara, tmp_path):
    index = DocumentIndex(tiny_llara)
    index.add({"a": "The Moon pulls the oceans.", "b": "Bees dance."}, show_progress_bar=False)
    documents = index.save(tmp_path / "index") / "documents.jsonl"
    lines = documents.read_text(encoding="utf8").splitlines(keepends=True)
    assert DocumentIndex.load(tmp_path / "index", tiny_llara).document("b") == {
        "id": "b",
        "title": "",
        "text": "Bees dance.",
    }
    for broken in (lines[::-1], lines[:1]):  # another order, a missing document
        documents.write_text("".join(broken), encoding="utf8")
        with pytest.raises(ValueError, match="does not list the faiss index's 2 ids in its order"):
            DocumentIndex.load(tmp_path / "index", tiny_llara)


def test_read_documents_takes_jsonl_with_or_without_ids_and_beir_folders(tmp_path, notes):
    rows = [{"text": "Tides.", "title": "Sea"}, {"text": "Bees."}]
    (tmp_path / "plain.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    (tmp_path / "ids.jsonl").write_text(json.dumps({"id": 7, "text": "Rivers."}) + "\n")
    beir = tmp_path / "beir"
    beir.mkdir()
    (beir / "corpus.jsonl").write_text(json.dumps({"_id": "d9", "title": None, "text": "Volcanoes."}) + "\n")
    documents = read_documents([tmp_path / "plain.jsonl", tmp_path / "ids.jsonl", beir])
    assert documents[:] == {
        "id": ["plain.jsonl:1", "plain.jsonl:2", "7", "d9"],
        "title": ["Sea", "", "", ""],
        "text": ["Tides.", "Bees.", "Rivers.", "Volcanoes."],
    }
    with pytest.raises(ValueError, match="appears twice"):
        read_documents([tmp_path / "plain.jsonl", tmp_path / "plain.jsonl"])


# ------------------------------------------------------------------------------------------------- the CLI


def test_cli_index_then_search_a_folder_of_text_files(tiny_llara_dir, notes, tmp_path, capsys):
    index = tmp_path / "index"
    assert main(["index", str(tiny_llara_dir), str(notes), "--index", str(index), "--no-progress"]) == 0
    assert "5 new documents indexed" in capsys.readouterr().out
    query = DOCUMENTS["d5"][1]
    assert main(["search", str(index), "--query", query, "--top-k", "3", "--format", "jsonl"]) == 0
    hits = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [hit["rank"] for hit in hits] == [1, 2, 3]
    assert hits[0]["id"] == "d5.txt" and hits[0]["query"] == query and hits[0]["text"] == query
    assert main(["search", str(index), "--query", query, "--top-k", "2"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0] == f"query 1: {query}" and table[1].split()[:3][::2] == ["1", "d5.txt"]


def test_cli_grows_an_index_and_searches_queries_from_a_file(tiny_llara_dir, notes, tmp_path, capsys):
    index = tmp_path / "index"
    main(["index", str(tiny_llara_dir), str(notes / "d2.txt"), "--index", str(index), "--no-progress"])
    assert main(["index", str(tiny_llara_dir), str(notes), "--index", str(index), "--no-progress"]) == 0
    assert "4 new documents indexed (1 already there); 5 in" in capsys.readouterr().out
    (tmp_path / "queries.txt").write_text(f"{DOCUMENTS['d3'][1]}\n\n{DOCUMENTS['d4'][1]}\n")
    assert main(["search", str(index), "--queries", str(tmp_path / "queries.txt"), "--format", "jsonl"]) == 0
    hits = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert {hit["query_id"] for hit in hits} == {"1", "3"}  # line numbers
    assert [hit["id"] for hit in hits if hit["rank"] == 1] == ["d3.txt", "d4.txt"]


def test_cli_refuses_another_model_and_flat_search_parameters(tiny_llara_dir, tiny_llama_dir, notes, tmp_path, capsys):
    index = tmp_path / "index"
    main(["index", str(tiny_llara_dir), str(notes), "--index", str(index), "--no-progress"])
    other = tmp_path / "other"
    llara_st.convert(str(tiny_llama_dir), other, query_max_length=100)
    capsys.readouterr()
    assert main(["search", str(index), "--query", "tides", "--model", str(other)]) == 1
    error = capsys.readouterr().err
    assert "llara-st search: error:" in error and "fingerprint" in error and "Traceback" not in error
    assert main(["index", str(other), str(notes), "--index", str(index), "--no-progress"]) == 1
    assert "fingerprint" in capsys.readouterr().err
    assert main(["search", str(index), "--query", "tides", "--nprobe", "4"]) == 1
    assert "could not set parameter nprobe" in capsys.readouterr().err
    assert main(["search", str(tmp_path), "--query", "tides"]) == 1
    assert "is not a document index" in capsys.readouterr().err


def test_cli_search_with_docs_builds_the_index_in_one_command(tiny_llara_dir, notes, tmp_path, capsys):
    """The README's path: convert a causal LM, then one `llara-st search` from a folder of .txt files."""
    index, query = tmp_path / "notes.index", DOCUMENTS["d2"][1]
    argv = ["search", str(index), "--docs", str(notes), "--query", query, "--format", "jsonl", "--no-progress"]
    assert main([*argv, "--model", str(tiny_llara_dir)]) == 0
    captured = capsys.readouterr()
    assert "5 new documents indexed" in captured.err
    assert json.loads(captured.out.splitlines()[0])["id"] == "d2.txt"
    (notes / "d6.txt").write_text("Penguins swim in cold water.\n")
    assert main(argv) == 0  # the model recorded in the index; only the new file is embedded
    assert "1 new documents indexed (5 already there); 6 in" in capsys.readouterr().err
