"""Your own documents and queries, for search: folders of text files, JSONL files of texts or BEIR folders."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from datasets import Dataset, concatenate_datasets

from llara_st.data.adaptation import _GLOB_CHARACTERS, expand_paths, read_text_documents
from llara_st.data.beir import CORPUS_FILE, first_jsonl_row, read_beir_documents, read_jsonl

_JSONL_SUFFIXES = (".jsonl", ".json")


def read_jsonl_documents(path: str | os.PathLike) -> Dataset:
    """Documents ``{"id", "title", "text"}`` of a JSONL file of ``{"text"}`` rows.

    ``title`` is optional; the id is the row's ``_id`` (as in a BEIR ``corpus.jsonl``) or ``id`` field when the
    first row has one (then every row must, uniquely), else ``"{file name}:{row number}"`` (from 1).
    """
    path = Path(path)
    first = first_jsonl_row(path)  # a missing file: open's FileNotFoundError names it
    id_field = next((field for field in ("_id", "id") if field in first), None)
    if id_field == "_id":
        return read_beir_documents(path)
    rows = read_jsonl(path, ["text"], optional_texts=["title"], id_field=id_field)
    if id_field is None:
        rows = rows.add_column("id", [f"{path.name}:{row}" for row in range(1, len(rows) + 1)])
    return rows.select_columns(["id", "title", "text"])


def _text_file_documents(files: list[Path], root: Path | None) -> Dataset:
    ids, texts = [], []
    for path in files:
        # One document per file (a file of several documents is a JSONL's job); whitespace runs collapsed.
        (document,) = read_text_documents(path, split_on_blank_lines=False) or [None]
        if document is None:
            continue  # an empty file
        ids.append((path.relative_to(root) if root is not None else path).as_posix())
        texts.append(document.text)
    return Dataset.from_dict({"id": ids, "title": [""] * len(ids), "text": texts})


def read_documents(paths: str | os.PathLike | Sequence[str | os.PathLike]) -> Dataset:
    """Documents ``{"id", "title", "text"}`` from folders of text files, JSONL files and BEIR folders.

    Each path gives: a BEIR folder its ``corpus.jsonl``; a ``.jsonl`` file one document per row
    (:func:`read_jsonl_documents`); a folder or a glob pattern its ``*.txt`` files (a folder: recursively, hidden ones
    skipped), one document per file, id = the path under the folder; another file that text file, id = its name.
    Empty text files are skipped; ids must be unique across all paths.

    Example::

        >>> from pathlib import Path
        >>> from llara_st.data import read_documents
        >>> Path("notes/sea").mkdir(parents=True)
        >>> _ = Path("notes/sea/tides.txt").write_text("The Moon pulls\\nthe oceans.")
        >>> _ = Path("more.jsonl").write_text('{"text": "Rivers flood.", "title": "Rivers"}\\n')
        >>> documents = read_documents(["notes", "more.jsonl"])
        >>> list(documents["id"]), documents[0]["text"]
        (['sea/tides.txt', 'more.jsonl:1'], 'The Moon pulls the oceans.')
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    if not paths:
        raise ValueError("No documents given")
    parts: list[Dataset] = []
    for given in paths:
        path = Path(given).expanduser()
        if path.is_dir() and (path / CORPUS_FILE).is_file():
            parts.append(read_beir_documents(path / CORPUS_FILE))
        elif path.is_file() and path.suffix in _JSONL_SUFFIXES:
            parts.append(read_jsonl_documents(path))
        elif path.is_file():
            parts.append(_text_file_documents([path], path.parent))
        elif path.is_dir():
            parts.append(_text_file_documents(expand_paths(path, "*.txt"), path))
        elif _GLOB_CHARACTERS.search(str(given)):
            files = expand_paths(str(given))
            jsonl = [file for file in files if file.suffix in _JSONL_SUFFIXES]
            parts.extend(read_jsonl_documents(file) for file in jsonl)
            parts.append(_text_file_documents([file for file in files if file not in jsonl], None))
        else:
            raise FileNotFoundError(f"{path} does not exist")
    documents = concatenate_datasets(parts)
    seen: set[str] = set()
    for document_id in documents["id"]:
        if document_id in seen:
            raise ValueError(f"document id {document_id!r} appears twice in {[str(p) for p in paths]}")
        seen.add(document_id)
    if not len(documents):
        raise ValueError(f"No documents in {[str(p) for p in paths]} (only empty files)")
    return documents


def read_queries(path: str | os.PathLike) -> tuple[list[str], list[str]]:
    """``(ids, texts)`` of queries: a JSONL of ``{"text"}`` rows (``_id``/``id`` optional, as in a BEIR
    ``queries.jsonl``), or a text file of one query per line (ids: line numbers from 1; blank lines skipped)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"query file {path} does not exist")
    if path.suffix in _JSONL_SUFFIXES:
        rows = read_jsonl_documents(path)
        return list(rows["id"]), list(rows["text"])
    lines = enumerate(path.read_text(encoding="utf8").split("\n"), start=1)
    queries = [(str(number), line.strip()) for number, line in lines if line.strip()]
    if not queries:
        raise ValueError(f"query file {path} holds no query")
    return [number for number, _ in queries], [text for _, text in queries]
