"""One reader for JSON-lines rows and BEIR folders (Thakur et al., 2021): ids as strings, every row checked, bad
input refused with a ``ValueError`` naming the file and line (counted from 1)."""

from __future__ import annotations

import csv
import json
import logging
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from datasets import Dataset, Features, List, Value, concatenate_datasets

logger = logging.getLogger(__name__)

CORPUS_FILE = "corpus.jsonl"
QUERIES_FILE = "queries.jsonl"
QRELS_FOLDER = "qrels"
_MISSING = object()
# Rows held as Python objects at a time: a large corpus (MS MARCO's 8.8M passages) is kept as Arrow, not as dicts.
_BATCH_ROWS = 50_000


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


def first_jsonl_row(path: str | os.PathLike) -> dict[str, Any]:
    """The first row of a JSON-lines file (to choose how to read the rest); a file without rows fails."""
    first = next(jsonl_rows(path), None)
    if first is None:
        raise ValueError(f"{path}: no rows (the file is empty)")
    return first[1]


class _BadRow(ValueError):
    """What is wrong with one row; :func:`read_jsonl` adds the file and line."""


# What each kind of field must hold, by the words the error uses for it.
_IS_GOOD: dict[str, Callable[[Any], bool]] = {
    "a string": lambda value: isinstance(value, str),
    "a string or an integer": lambda value: isinstance(value, str | int) and not isinstance(value, bool),
    "a list of strings": lambda value: isinstance(value, list) and all(isinstance(text, str) for text in value),
}


def _value(row: Mapping[str, Any], field: str, expected: str, default: Any = _MISSING) -> Any:
    """``row[field]`` if it is ``expected``; ``default``, when one is given, for an absent or null field."""
    value = row.get(field)
    if _IS_GOOD[expected](value):
        return value
    if value is None and default is not _MISSING:
        return default
    if field not in row:
        raise _BadRow(f"row has no {field!r} field (found {list(row)})")
    raise _BadRow(f"{field!r} must be {expected}, got {'null' if value is None else repr(value)[:80]}")


def read_jsonl(
    path: str | os.PathLike,
    texts: Sequence[str] = (),
    *,
    optional_texts: Sequence[str] = (),
    text_lists: Sequence[str] = (),
    id_field: str | None = None,
    check: Callable[[dict[str, Any]], str | None] | None = None,
) -> Dataset:
    """The rows of a JSON-lines file as a :class:`datasets.Dataset` of exactly the named fields, checked.

    The columns are ``id_field``, ``texts``, ``optional_texts``, ``text_lists`` in that order; the first bad row
    fails naming its file and line.

    Args:
        texts: Fields every row holds as a string.
        optional_texts: String fields that may be absent or null (read as ``""``).
        text_lists: Fields holding a list of strings (absent or null: ``[]``).
        id_field: A field holding each row's unique id: a string or an integer (read as its decimal string; a file
            mixing both gets a warning naming a line of each).
        check: Called with each checked row; what it returns, if anything, is the error for that line.

    Example::

        >>> from pathlib import Path
        >>> from llara_st.data import read_jsonl
        >>> lines = ['{"_id": 7, "text": "Tides."}', '{"_id": "d2", "title": "Bees", "text": "Bees."}']
        >>> _ = Path("corpus.jsonl").write_text("\\n".join(lines))
        >>> read_jsonl("corpus.jsonl", ["text"], optional_texts=["title"], id_field="_id")[:]
        {'_id': ['7', 'd2'], 'text': ['Tides.', 'Bees.'], 'title': ['', 'Bees']}
    """
    path = Path(path)  # a missing file: open's FileNotFoundError names it
    names = [*([id_field] if id_field else []), *texts, *optional_texts, *text_lists]
    if not names:
        raise ValueError("read_jsonl needs at least one field to read")
    features = Features({name: List(Value("string")) if name in text_lists else Value("string") for name in names})
    columns: dict[str, list[Any]] = {name: [] for name in names}
    parts: list[Dataset] = []
    id_lines: dict[str, int] = {}  # each id's line, to name the first line of a duplicate
    first_of_type: dict[type, tuple[int, Any]] = {}  # the first integer and the first string id, for the warning
    for line_number, row in jsonl_rows(path):
        try:
            checked: dict[str, Any] = {}
            if id_field is not None:
                value = _value(row, id_field, "a string or an integer")
                checked[id_field] = key = str(value)
                if key in id_lines:
                    raise _BadRow(f"duplicate {id_field} {key!r} (first at line {id_lines[key]})")
                id_lines[key] = line_number
                first_of_type.setdefault(type(value), (line_number, value))
            checked.update({field: _value(row, field, "a string") for field in texts})
            checked.update({field: _value(row, field, "a string", "") for field in optional_texts})
            checked.update({field: _value(row, field, "a list of strings", []) for field in text_lists})
            problem = check(checked) if check is not None else None
            if problem is not None:
                raise _BadRow(problem)
        except _BadRow as error:
            raise ValueError(f"{path}:{line_number}: {error}") from None
        for name in names:
            columns[name].append(checked[name])
        if len(columns[names[0]]) == _BATCH_ROWS:
            parts.append(Dataset.from_dict(columns, features=features))
            columns = {name: [] for name in names}
    parts.append(Dataset.from_dict(columns, features=features))  # the last batch, perhaps empty
    if len(first_of_type) == 2:  # 7 and "7" now name the same row: say where each kind was seen
        logger.warning(
            "%s mixes integer and string %r values (line %d: %r, line %d: %r); integers are read as their decimal "
            "strings",
            path,
            id_field,
            *first_of_type[int],
            *first_of_type[str],
        )
    rows = concatenate_datasets(parts)
    if not len(rows):
        raise ValueError(f"{path}: no rows (the file is empty)")
    return rows


def read_beir_documents(path: str | os.PathLike) -> Dataset:
    """A BEIR ``corpus.jsonl`` as a dataset of documents ``{"id", "title", "text"}`` (a null title is ``""``)."""
    rows = read_jsonl(path, ["text"], optional_texts=["title"], id_field="_id")
    return rows.rename_column("_id", "id").select_columns(["id", "title", "text"])


def _judgements(path: Path) -> tuple[list[tuple[int, str, str, int]], dict[str, dict[str, int]]]:
    """``(line number, query id, document id, score)`` of each judgement of a qrels TSV, and its qrels."""
    judgements = []
    qrels: dict[str, dict[str, int]] = {}
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
            judgements.append((line_number, row[0], row[1], score))
            qrels.setdefault(row[0], {})[row[1]] = score
    if not judgements:
        raise ValueError(f"{path}: no judgements (only a header)")
    return judgements, qrels


def read_beir_qrels(path: str | os.PathLike) -> dict[str, dict[str, int]]:
    """``{query_id: {document_id: score}}`` of a BEIR qrels TSV, ids kept as strings (``"0123"`` stays)."""
    return _judgements(Path(path))[1]


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
    """Documents, judged queries and qrels of one split (``"train"``, ``"test"``, ...) of a BEIR folder.

    A qrels line naming a missing query or document is an error naming that line (MTEB would score a miss).

    Example::

        >>> from llara_st.data import read_beir
        >>> corpus, queries, qrels = read_beir(beir_path, "test")  # e.g. a download of BEIR's SciFact
        >>> corpus.column_names, queries[0], qrels["q1"]
        (['id', 'title', 'text'], {'id': 'q1', 'text': 'why do the ocean tides rise?'}, {'d1': 1})
    """
    folder = check_beir_folder(folder, [split])
    qrels_path = folder / QRELS_FOLDER / f"{split}.tsv"
    judgements, qrels = _judgements(qrels_path)  # first: a malformed qrels file fails before a large corpus is read
    corpus = read_beir_documents(folder / CORPUS_FILE)
    queries = read_jsonl(folder / QUERIES_FILE, ["text"], id_field="_id").rename_column("_id", "id")
    query_ids, document_ids = set(queries["id"]), set(corpus["id"])
    for line_number, query_id, document_id, _ in judgements:
        if query_id not in query_ids:
            raise ValueError(f"{qrels_path}:{line_number}: query {query_id!r} is not in {QUERIES_FILE}")
        if document_id not in document_ids:
            raise ValueError(f"{qrels_path}:{line_number}: document {document_id!r} is not in {CORPUS_FILE}")
    judged = [index for index, query_id in enumerate(queries["id"]) if query_id in qrels]
    return BEIRSplit(corpus, queries.select(judged), qrels)


def load_beir(
    folder: str | os.PathLike, split: str
) -> tuple[dict[str, str], dict[str, str], dict[str, dict[str, int]]]:
    """:func:`read_beir` as dictionaries ``({document_id: text}, {query_id: text}, {query_id: {document_id: score}})``.

    A document's text is ``title + " " + text`` (stripped), as BEIR and MTEB embed it.

    Example::

        >>> from llara_st.data import load_beir
        >>> corpus, queries, qrels = load_beir(beir_path, "train")
        >>> corpus["d2"], qrels["q2"]
        ('Bees Honeybees dance on the comb to show the others where flowers and water are.', {'d2': 1})
    """
    corpus, queries, qrels = read_beir(folder, split)
    documents = {row["id"]: f"{row['title']} {row['text']}".strip() for row in corpus}
    return documents, dict(zip(queries["id"], queries["text"], strict=True)), qrels
