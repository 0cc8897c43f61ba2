"""One reader for JSON-lines rows and BEIR folders, on ``datasets``: ids as strings, every row checked.

A BEIR folder (Thakur et al., 2021) holds ``corpus.jsonl`` (``{"_id", "title", "text"}`` per line),
``queries.jsonl`` (``{"_id", "text"}``) and ``qrels/{split}.tsv`` (``query-id corpus-id score``, header line).
Training rows, hard-negative mining, adaptation pairs and evaluation all read through here, so bad input is
refused the same way everywhere, with a ``ValueError`` that names the file and line: invalid JSON, a missing,
null or non-string text, a missing, null or duplicate id, an empty file, qrels naming a query or document
that is not there. Integer ids are read as their decimal strings (a file mixing integer and string ids gets a
warning naming a line of each).
"""

from __future__ import annotations

import csv
import json
import logging
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import pyarrow.compute as pc
from datasets import Dataset, List, Value, load_dataset

logger = logging.getLogger(__name__)

CORPUS_FILE = "corpus.jsonl"
QUERIES_FILE = "queries.jsonl"
QRELS_FOLDER = "qrels"
_MISSING = object()
_STRING = (Value("string"), Value("large_string"))


def jsonl_rows(path: str | os.PathLike) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(line number, row)`` of each non-blank line of a JSON-lines file; a line that is not an object fails."""
    with open(path, encoding="utf8") as handle:
        for line_number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                raise ValueError(f"{path}:{line_number} is not valid JSON: {error}") from None
            if not isinstance(row, dict):
                raise ValueError(f"{path}:{line_number}: expected a JSON object per line, got {line.strip():.80}")
            yield line_number, row


def row_line(path: str | os.PathLike, index: int) -> int:
    """The line number of row ``index`` (0-based) of a JSON-lines file: blank lines hold no row."""
    with open(path, encoding="utf8") as handle:
        rows = (line_number for line_number, line in enumerate(handle, start=1) if line.strip())
        return next(line for position, line in enumerate(rows) if position == index)


def _first_offence(path: Path, field: str, is_bad: Any) -> tuple[int, Any]:
    # Only reached once a column check failed: the raw lines say exactly where and what.
    for line_number, row in jsonl_rows(path):
        value = row.get(field, _MISSING)
        if is_bad(value):
            return line_number, value
    raise AssertionError(f"{path}: no offending {field!r} found")  # the column check and the scan disagree


def _describe(field: str, value: Any, expected: str) -> str:
    if value is _MISSING:
        return f"row has no {field!r} field"
    return f"{field!r} must be {expected}, got {'null' if value is None else repr(value)[:80]}"


def _replace(dataset: Dataset, field: str, values: Any) -> Dataset:
    return dataset.remove_columns(field).add_column(field, values)


def _check_texts(dataset: Dataset, path: Path, field: str, optional: bool) -> Dataset:
    if field not in dataset.column_names:
        if optional:
            return dataset.add_column(field, [""] * len(dataset))
        raise ValueError(f"{path}:{row_line(path, 0)}: row has no {field!r} field (found {dataset.column_names})")
    nulls = dataset.data.column(field).null_count
    if dataset.features[field] in _STRING and (nulls == 0 or optional):
        return _replace(dataset, field, pc.fill_null(dataset.data.column(field), "")) if nulls else dataset
    if optional and dataset.features[field] == Value("null"):  # absent or null in every row
        return _replace(dataset, field, [""] * len(dataset))
    line, value = _first_offence(path, field, lambda v: not isinstance(v, str) and not (optional and v is None))
    raise ValueError(f"{path}:{line}: {_describe(field, value, 'a string')}")


def _check_text_lists(dataset: Dataset, path: Path, field: str) -> Dataset:
    if field not in dataset.column_names:
        return dataset.add_column(field, [[]] * len(dataset))
    column = dataset.data.column(field)
    if dataset.features[field] == List(Value("string")) and pc.list_flatten(column).null_count == 0:
        return _replace(dataset, field, pc.fill_null(column, [])) if column.null_count else dataset

    def bad(value: Any) -> bool:
        return (
            value is not None
            and value is not _MISSING
            and not (isinstance(value, list) and all(isinstance(text, str) for text in value))
        )

    line, value = _first_offence(path, field, bad)
    raise ValueError(f"{path}:{line}: {_describe(field, value, 'a list of strings')}")


def _check_ids(dataset: Dataset, path: Path, field: str) -> Dataset:
    if field not in dataset.column_names:
        raise ValueError(f"{path}:{row_line(path, 0)}: row has no {field!r} field (found {dataset.column_names})")
    feature = dataset.features[field]
    if isinstance(feature, Value) and feature.dtype.startswith("int"):
        dataset = dataset.cast_column(field, Value("string"))
    elif feature not in _STRING:
        # Mixed types (datasets' Json feature): its decoding is lossy (1 and "1" both come back as 1), so the
        # raw lines decide.
        values = [row.get(field, _MISSING) for _, row in jsonl_rows(path)]
        if any(isinstance(v, bool) or not isinstance(v, str | int) for v in values):
            line, value = _first_offence(path, field, lambda v: isinstance(v, bool) or not isinstance(v, str | int))
            raise ValueError(f"{path}:{line}: {_describe(field, value, 'a string or an integer')}")
        if any(isinstance(v, str) for v in values) and any(isinstance(v, int) for v in values):
            int_line, int_id = _first_offence(path, field, lambda v: isinstance(v, int))
            str_line, str_id = _first_offence(path, field, lambda v: isinstance(v, str))
            logger.warning(
                "%s mixes integer and string %r values (line %d: %r, line %d: %r); integers are read as their "
                "decimal strings",
                path,
                field,
                int_line,
                int_id,
                str_line,
                str_id,
            )
        dataset = _replace(dataset, field, [str(v) for v in values])
    elif dataset.data.column(field).null_count:
        line, value = _first_offence(path, field, lambda v: v is None or v is _MISSING)
        raise ValueError(f"{path}:{line}: {_describe(field, value, 'a string or an integer')}")
    if pc.count_distinct(dataset.data.column(field)).as_py() != len(dataset):
        first_line: dict[str, int] = {}
        for line_number, row in jsonl_rows(path):
            key = str(row[field])
            if key in first_line:
                raise ValueError(f"{path}:{line_number}: duplicate {field} {key!r} (first at line {first_line[key]})")
            first_line[key] = line_number
    return dataset


def read_jsonl(
    path: str | os.PathLike,
    texts: Sequence[str] = (),
    *,
    optional_texts: Sequence[str] = (),
    text_lists: Sequence[str] = (),
    id_field: str | None = None,
) -> Dataset:
    """The rows of a JSON-lines file as a :class:`datasets.Dataset` holding exactly the named fields, checked.

    Arrow does the reading (an 8.8M-document corpus never becomes Python objects); a failed check rereads the
    raw lines only to name the first offending line.

    Args:
        path: The ``.jsonl`` file.
        texts: Fields every row holds as a string.
        optional_texts: String fields that may be absent or null (read as ``""``).
        text_lists: Fields holding a list of strings (absent or null: ``[]``).
        id_field: A field holding each row's id: a string or an integer (read as its decimal string), unique.

    Returns:
        A dataset with the columns ``id_field``, ``texts``, ``optional_texts``, ``text_lists`` in that order.

    Example::

        >>> from pathlib import Path
        >>> from llara_st.data import read_jsonl
        >>> lines = ['{"_id": 7, "text": "Tides."}', '{"_id": "d2", "title": "Bees", "text": "Bees."}']
        >>> _ = Path("corpus.jsonl").write_text("\\n".join(lines))
        >>> rows = read_jsonl("corpus.jsonl", ["text"], optional_texts=["title"], id_field="_id")
        >>> rows[:]
        {'_id': ['7', 'd2'], 'text': ['Tides.', 'Bees.'], 'title': ['', 'Bees']}
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist")
    if next(jsonl_rows(path), None) is None:
        raise ValueError(f"{path}: no rows (the file is empty)")
    # datasets logs a parse error itself (with a row counted from 0) before raising it: the error below names the
    # line instead, so that a bad file is reported once.
    json_logger = logging.getLogger("datasets.packaged_modules.json.json")
    level = json_logger.level
    json_logger.setLevel(logging.CRITICAL)
    try:
        dataset = load_dataset("json", data_files=str(path), split="train")
    except Exception as error:  # datasets wraps Arrow's parse errors; the raw lines say which line is bad
        for _ in jsonl_rows(path):
            pass
        raise ValueError(f"{path}: not readable as JSON lines: {error}") from error
    finally:
        json_logger.setLevel(level)
    if id_field is not None:
        dataset = _check_ids(dataset, path, id_field)
    for field in texts:
        dataset = _check_texts(dataset, path, field, optional=False)
    for field in optional_texts:
        dataset = _check_texts(dataset, path, field, optional=True)
    for field in text_lists:
        dataset = _check_text_lists(dataset, path, field)
    return dataset.select_columns([*([id_field] if id_field else []), *texts, *optional_texts, *text_lists])


# ---------------------------------------------------------------------------------------------- BEIR


def read_beir_documents(path: str | os.PathLike) -> Dataset:
    """A BEIR ``corpus.jsonl`` as a dataset of documents ``{"id", "title", "text"}`` (a null title is ``""``)."""
    rows = read_jsonl(path, ["text"], optional_texts=["title"], id_field="_id")
    return rows.rename_column("_id", "id").select_columns(["id", "title", "text"])


def read_beir_queries(path: str | os.PathLike) -> Dataset:
    """A BEIR ``queries.jsonl`` as a dataset of queries ``{"id", "text"}``."""
    return read_jsonl(path, ["text"], id_field="_id").rename_column("_id", "id")


def _qrels_rows(path: Path) -> Iterator[tuple[int, str, str, int]]:
    with path.open(encoding="utf8", newline="") as handle:
        reader = csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = next(reader, None)
        if header is None or [column.strip() for column in header[:3]] != ["query-id", "corpus-id", "score"]:
            raise ValueError(f"{path}: expected the header 'query-id<TAB>corpus-id<TAB>score', got {header}")
        for line_number, row in enumerate(reader, start=2):
            if not row:
                continue
            if len(row) < 3:
                raise ValueError(f"{path}:{line_number}: expected 3 tab-separated columns, got {row}")
            try:
                score = int(row[2])
            except ValueError:
                raise ValueError(f"{path}:{line_number}: score {row[2]!r} is not an integer") from None
            yield line_number, row[0], row[1], score


def read_beir_qrels(path: str | os.PathLike) -> dict[str, dict[str, int]]:
    """``{query_id: {document_id: score}}`` from a BEIR qrels TSV (``query-id corpus-id score``, header line).

    Ids are kept as strings (a CSV reader that infers types would turn ``"0123"`` into 123).
    """
    path = Path(path)
    qrels: dict[str, dict[str, int]] = {}
    for _, query_id, document_id, score in _qrels_rows(path):
        qrels.setdefault(query_id, {})[document_id] = score
    if not qrels:
        raise ValueError(f"{path}: no judgements (only a header)")
    return qrels


def beir_split_names(folder: str | os.PathLike) -> list[str]:
    """The splits of a BEIR folder: the names of its ``qrels/*.tsv`` files."""
    return sorted(path.stem for path in (Path(folder) / QRELS_FOLDER).glob("*.tsv"))


def check_beir_folder(folder: str | os.PathLike, splits: Sequence[str]) -> Path:
    """Refuse a BEIR folder without its corpus, queries or the qrels of one of ``splits``; return its path."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"BEIR folder {folder} does not exist")
    for name in (CORPUS_FILE, QUERIES_FILE):
        if not (folder / name).is_file():
            raise FileNotFoundError(f"BEIR folder {folder} has no {name}")
    available = beir_split_names(folder)
    for split in splits:
        if split not in available:
            raise ValueError(
                f"BEIR folder {folder} has no qrels for split {split!r} ({QRELS_FOLDER}/{split}.tsv); "
                f"available splits: {available}"
            )
    return folder


class BEIRSplit(NamedTuple):
    """One split of a BEIR folder: every document, the queries judged in the split, and its qrels."""

    corpus: Dataset
    queries: Dataset
    qrels: dict[str, dict[str, int]]


def read_beir(folder: str | os.PathLike, split: str) -> BEIRSplit:
    """Documents, judged queries and qrels of one split of a BEIR folder, cross-checked.

    A qrels line naming a query absent from ``queries.jsonl`` or a document absent from ``corpus.jsonl`` is an
    error naming that line (MTEB would otherwise score it as a miss, silently).

    Args:
        folder: The BEIR folder.
        split: The qrels file to read: ``"train"``, ``"dev"``, ``"test"``, ...

    Example::

        >>> from llara_st.data import read_beir
        >>> corpus, queries, qrels = read_beir(beir_path, "test")  # e.g. a download of BEIR's SciFact
        >>> corpus.column_names, corpus[0]["title"]
        (['id', 'title', 'text'], 'Tides')
        >>> queries[0], qrels["q1"]
        ({'id': 'q1', 'text': 'why do the ocean tides rise?'}, {'d1': 1})
    """
    folder = check_beir_folder(folder, [split])
    qrels_path = folder / QRELS_FOLDER / f"{split}.tsv"
    qrels = read_beir_qrels(qrels_path)
    corpus = read_beir_documents(folder / CORPUS_FILE)
    queries = read_beir_queries(folder / QUERIES_FILE)
    query_ids, document_ids = set(queries["id"]), set(corpus["id"])
    for line_number, query_id, document_id, _ in _qrels_rows(qrels_path):
        if query_id not in query_ids:
            raise ValueError(f"{qrels_path}:{line_number}: query {query_id!r} is not in {QUERIES_FILE}")
        if document_id not in document_ids:
            raise ValueError(f"{qrels_path}:{line_number}: document {document_id!r} is not in {CORPUS_FILE}")
    judged = [index for index, query_id in enumerate(queries["id"]) if query_id in qrels]
    return BEIRSplit(corpus, queries.select(judged), qrels)


def load_beir(
    folder: str | os.PathLike, split: str
) -> tuple[dict[str, str], dict[str, str], dict[str, dict[str, int]]]:
    """Corpus, queries and qrels of one split of a BEIR folder as dictionaries (what mining and training use).

    A document's text is ``title + " " + text`` (stripped), as BEIR and MTEB embed it. Only the queries that
    have qrels in ``split`` are returned; the corpus is complete. Checked as :func:`read_beir` checks.

    Returns:
        ``(corpus, queries, qrels)``: ``{document_id: text}``, ``{query_id: text}``,
        ``{query_id: {document_id: score}}``, ids as strings.

    Example::

        >>> from llara_st.data import load_beir
        >>> corpus, queries, qrels = load_beir(beir_path, "train")
        >>> corpus["d2"]  # title and text
        'Bees Honeybees dance on the comb to show the others where flowers and water are.'
        >>> queries["q2"], qrels["q2"]
        ('where do bees find flowers and water?', {'d2': 1})
    """
    corpus, queries, qrels = read_beir(folder, split)
    documents = {row["id"]: f"{row['title']} {row['text']}".strip() for row in corpus}
    return documents, dict(zip(queries["id"], queries["text"], strict=True)), qrels
