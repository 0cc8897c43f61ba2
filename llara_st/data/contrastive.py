"""Contrastive fine-tuning rows ``(anchor, positive, negative_1 … negative_n)`` from BEIR folders or the authors'
``{"query", "pos", "neg"}`` JSONL (Li et al., 2023, arXiv:2312.15503; docs/finetuning.md)."""

from __future__ import annotations

import json
import logging
import os
import random
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, TypedDict

from datasets import Dataset

from llara_st.data.beir import first_jsonl_row, read_jsonl
from llara_st.errors import LLaRAUserError

logger = logging.getLogger(__name__)

ANCHOR_COLUMN = "anchor"
POSITIVE_COLUMN = "positive"
NEGATIVE_COLUMN_PREFIX = "negative_"
# The reference ("train_group_size 16"): one positive and fifteen hard negatives per query.
DEFAULT_GROUP_SIZE = 16


class ContrastiveExample(TypedDict):
    """One query with its positive and (hard) negative passages: the authors' fine-tuning JSONL row."""

    query: str
    pos: list[str]
    neg: list[str]


def relevant_documents(qrels: Mapping[str, Mapping[str, int]], min_score: int = 1) -> dict[str, list[str]]:
    """``{query_id: [doc_id, ...]}`` of the judged documents scoring at least ``min_score``, in qrels order; queries
    without any are left out."""
    relevant = {query: [doc for doc, score in judged.items() if score >= min_score] for query, judged in qrels.items()}
    return {query: doc_ids for query, doc_ids in relevant.items() if doc_ids}


def _problem(example: Any) -> str | None:
    if not isinstance(example, Mapping):
        return f"a contrastive row is a mapping with 'query', 'pos' and 'neg', got {example!r:.80}"
    if not isinstance(example.get("query"), str) or not example["query"].strip():
        return "'query' must be a non-empty string"
    for key in ("pos", "neg"):
        texts = example.get(key, [])
        if not isinstance(texts, list) or not all(isinstance(text, str) for text in texts):
            return f"{key!r} must be a list of strings"
    if not example.get("pos"):
        return "'pos' is empty; every query needs at least one positive passage"
    return None


def _checked_examples(examples: Iterable[Any]) -> Iterable[ContrastiveExample]:
    for number, example in enumerate(examples, start=1):
        problem = _problem(example)
        if problem is not None:
            raise ValueError(f"row {number} (counted from 1): {problem}")
        yield {"query": example["query"], "pos": list(example["pos"]), "neg": list(example.get("neg", []))}


def read_contrastive_jsonl(paths: str | os.PathLike | Sequence[str | os.PathLike]) -> list[ContrastiveExample]:
    """Rows ``{"query": str, "pos": [str, ...], "neg": [str, ...]}`` of the authors' JSONL files, concatenated.

    Example::

        >>> from llara_st.data import read_contrastive_jsonl, write_contrastive_jsonl
        >>> row = {"query": "what causes tides?", "pos": ["The Moon pulls the oceans."], "neg": ["Bees dance."]}
        >>> _ = write_contrastive_jsonl([row], "toy_finetune_data.jsonl")
        >>> read_contrastive_jsonl("toy_finetune_data.jsonl") == [row]
        True
    """
    path_list = [paths] if isinstance(paths, str | os.PathLike) else list(paths)
    examples: list[ContrastiveExample] = []
    for path in path_list:
        examples.extend(read_jsonl(path, ["query"], text_lists=["pos", "neg"], check=_problem))
    if not examples:
        raise ValueError(f"no rows in {[str(path) for path in path_list]}")
    return examples


def write_contrastive_jsonl(examples: Iterable[Mapping[str, Any]], path: str | os.PathLike) -> Path:
    """Write rows in the authors' ``{"query", "pos", "neg"}`` JSONL layout (e.g. mined negatives, to reuse)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf8") as handle:
        for row in _checked_examples(examples):
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    return path


def beir_examples(
    corpus: Mapping[str, str],
    queries: Mapping[str, str],
    qrels: Mapping[str, Mapping[str, int]],
    negatives: Mapping[str, Sequence[str]] | None = None,
    min_score: int = 1,
) -> list[ContrastiveExample]:
    """``{"query", "pos", "neg"}`` rows of BEIR dictionaries (:func:`load_beir`), one per query with a document
    scoring at least ``min_score``; ``negatives`` are ``{query_id: [doc_id, ...]}`` (e.g. from
    :func:`llara_st.data.mine_hard_negatives_from_qrels`), none when omitted.

    Example::

        >>> from llara_st.data import beir_examples, load_beir
        >>> corpus, queries, qrels = load_beir(beir_path, "train")
        >>> beir_examples(corpus, queries, qrels, negatives={"q1": ["d3"]})[0]
        {'query': 'why do the ocean tides rise?',
         'pos': ['Tides The tides rise and fall with the pull of the Moon on the ocean water.'],
         'neg': ['Volcanoes A volcano erupts when magma rises through the crust under the ocean.']}
    """
    negatives = negatives or {}
    examples: list[ContrastiveExample] = []
    for query_id, doc_ids in relevant_documents(qrels, min_score).items():
        if query_id not in queries:
            raise KeyError(f"query {query_id!r} of the qrels is missing from the queries")
        examples.append(
            {
                "query": queries[query_id],
                "pos": [corpus[doc_id] for doc_id in doc_ids],
                "neg": [corpus[doc_id] for doc_id in negatives.get(query_id, [])],
            }
        )
    return examples


def negative_columns(group_size: int) -> list[str]:
    """``["negative_1", …, "negative_{group_size-1}"]``."""
    return [f"{NEGATIVE_COLUMN_PREFIX}{index}" for index in range(1, group_size)]


def contrastive_router_mapping(column_names: Sequence[str]) -> dict[str, str]:
    """The ``router_mapping`` training argument for contrastive rows: the anchor column is embedded as a
    ``"query"`` (query template), every other column as a ``"document"`` (passage template).

    Example::

        >>> from llara_st.data import contrastive_router_mapping
        >>> contrastive_router_mapping(["anchor", "positive", "negative_1"])  # rows.column_names
        {'anchor': 'query', 'positive': 'document', 'negative_1': 'document'}
    """
    if ANCHOR_COLUMN not in column_names:
        raise ValueError(f"contrastive rows need an {ANCHOR_COLUMN!r} column, got {list(column_names)}")
    return {name: ("query" if name == ANCHOR_COLUMN else "document") for name in column_names}


def build_contrastive_dataset(
    examples: Iterable[Mapping[str, Any]],
    group_size: int = DEFAULT_GROUP_SIZE,
    positives: Literal["sample", "all"] = "sample",
    seed: int = 42,
) -> Dataset:
    """Training rows ``(anchor, positive, negative_1 … negative_{group_size-1})`` for a ranking loss.

    Each query gets ``group_size - 1`` negatives drawn from its ``neg`` (seeded) without replacement, or all of a
    shorter list topped up by drawing again, as the authors' data does; a query without negatives is dropped.

    Args:
        examples: ``{"query", "pos", "neg"}`` rows (:func:`read_contrastive_jsonl`, :func:`beir_examples`).
        group_size: Passages per query, the positive included (reference 16); 1: in-batch negatives only.
        positives: ``"sample"``: one row per query, one positive drawn at random (the reference); ``"all"``: one
            row per (query, positive) pair.

    Example::

        >>> from llara_st.data import build_contrastive_dataset
        >>> rows = build_contrastive_dataset([{"query": "tides?", "pos": ["The Moon."], "neg": ["Waves.", "Bees."]}], 4)
        >>> rows.column_names, sorted(rows[0][f"negative_{i}"] for i in (1, 2, 3))  # two negatives, one drawn again
        (['anchor', 'positive', 'negative_1', 'negative_2', 'negative_3'], ['Bees.', 'Waves.', 'Waves.'])
    """
    if group_size < 1:
        raise ValueError(f"group_size must be at least 1 (the positive), got {group_size}")
    if positives not in ("sample", "all"):
        raise ValueError(f"positives must be 'sample' or 'all', got {positives!r}")
    rng = random.Random(seed)
    columns = [ANCHOR_COLUMN, POSITIVE_COLUMN, *negative_columns(group_size)]
    rows: dict[str, list[str]] = {column: [] for column in columns}
    seen = dropped = 0
    for example in _checked_examples(examples):
        seen += 1
        negatives = example["neg"]
        if group_size > 1 and not negatives:
            dropped += 1
            continue
        for positive in example["pos"] if positives == "all" else [rng.choice(example["pos"])]:
            rows[ANCHOR_COLUMN].append(example["query"])
            rows[POSITIVE_COLUMN].append(positive)
            if group_size == 1:
                continue
            if len(negatives) >= group_size - 1:
                chosen = rng.sample(negatives, group_size - 1)
            else:
                # All of them, topped up with draws with replacement, then shuffled so that no column
                # systematically holds the retriever's top-ranked negative.
                chosen = negatives + rng.choices(negatives, k=group_size - 1 - len(negatives))
                rng.shuffle(chosen)
            for column, negative in zip(columns[2:], chosen, strict=True):
                rows[column].append(negative)
    if dropped:
        logger.warning("Dropped %d of %d queries without negatives to fill a group of %d", dropped, seen, group_size)
    if not rows[ANCHOR_COLUMN]:
        raise ValueError(f"no contrastive rows: {seen} examples, {dropped} without negatives (group_size={group_size})")
    return Dataset.from_dict(rows)


def _check_rows(rows: Dataset, source: str) -> Dataset:
    columns = rows.column_names
    if columns != [ANCHOR_COLUMN, POSITIVE_COLUMN, *negative_columns(len(columns) - 1)]:
        raise ValueError(f"{source}: contrastive rows start with the columns anchor, positive, negative_1…: {columns}")
    if len(rows) == 0:
        raise ValueError(f"{source}: no rows")
    return rows


def load_contrastive_dataset(
    path: str | os.PathLike,
    group_size: int = DEFAULT_GROUP_SIZE,
    positives: Literal["sample", "all"] = "sample",
    seed: int = 42,
) -> Dataset:
    """Contrastive training rows from a file or folder, whatever produced them.

    A ``Dataset.save_to_disk`` folder, a ``.parquet`` or ``.jsonl`` file of ``anchor, positive, negative_1 …``
    rows is read as it is; a ``.jsonl`` of the authors' ``{"query", "pos", "neg"}`` rows is grouped by
    :func:`build_contrastive_dataset` with ``group_size``, ``positives`` and ``seed``.

    Example::

        >>> from llara_st.data import build_contrastive_dataset, load_contrastive_dataset
        >>> rows = build_contrastive_dataset([{"query": "tides?", "pos": ["The Moon."], "neg": ["Bees."]}], 2)
        >>> rows.save_to_disk("rows")
        >>> load_contrastive_dataset("rows")[:] == rows[:]
        True
    """
    path = Path(path)
    if path.is_dir():
        if not (path / "dataset_info.json").is_file():
            raise ValueError(f"{path} is a folder but not one written by Dataset.save_to_disk")
        return _check_rows(Dataset.load_from_disk(str(path)), str(path))
    if not path.is_file():
        raise FileNotFoundError(f"contrastive rows {path} do not exist")
    if path.suffix == ".parquet":
        return _check_rows(Dataset.from_parquet(str(path)), str(path))
    if path.suffix != ".jsonl":
        raise ValueError(f"{path}: expected a .jsonl or .parquet file or a save_to_disk folder")
    first = first_jsonl_row(path)
    if "query" in first:
        return build_contrastive_dataset(read_contrastive_jsonl(path), group_size, positives, seed)
    return _check_rows(read_jsonl(path, list(first)), str(path))


class InvalidTrainingRowsError(LLaRAUserError):
    """Training rows hold a missing, non-text or blank (empty or whitespace-only) text."""


def check_text_rows(rows: Any, source: str = "training rows", on_invalid: Literal["raise", "drop"] = "raise") -> Any:
    """Refuse (or drop, with a warning) rows of a ``datasets.Dataset`` with a missing, non-text or blank text: an empty
    text would train the model on its template alone. Every column must be text; rows count from 1, as lines do.

    Args:
        source: Where the rows come from (a file or folder), named in the error.
        on_invalid: ``"raise"``: :class:`InvalidTrainingRowsError` naming the first bad rows and columns;
            ``"drop"``: the rows without them, and a warning with the count (an error if none is left).

    Example::

        >>> from datasets import Dataset
        >>> from llara_st.data import check_text_rows
        >>> rows = Dataset.from_dict({"anchor": ["tides?", " "], "positive": ["The Moon ...", "Waves ..."]})
        >>> check_text_rows(rows, "rows.jsonl")
        Traceback (most recent call last):
            ...
        llara_st.data.contrastive.InvalidTrainingRowsError: rows.jsonl: 1 of 2 rows have an empty or missing text,
        which would train the model on the template alone — row 2: 'anchor'; fix or remove them (...)
        >>> len(check_text_rows(rows, on_invalid="drop"))  # and a warning naming row 2
        1
    """
    import pyarrow.compute as pc

    if on_invalid not in ("raise", "drop"):
        raise ValueError(f"on_invalid must be 'raise' or 'drop', got {on_invalid!r}")
    for column, feature in rows.features.items():
        dtype = getattr(feature, "dtype", None)
        if dtype not in ("string", "large_string"):
            raise InvalidTrainingRowsError(f"{source}: column {column!r} holds {dtype or feature}, not text")
    bad: dict[int, list[str]] = {}
    arrow = rows.with_format("arrow")
    for start in range(0, len(rows), 10_000):
        batch = arrow[start : start + 10_000]
        for column in batch.column_names:
            values = batch.column(column)
            blank = pc.fill_null(pc.equal(pc.utf8_length(pc.utf8_trim_whitespace(values)), 0), True)
            for offset in pc.indices_nonzero(blank).to_pylist():
                bad.setdefault(start + offset, []).append(column)
    if not bad:
        return rows
    described = "; ".join(f"row {row + 1}: {', '.join(map(repr, columns))}" for row, columns in sorted(bad.items())[:5])
    more = f" (and {len(bad) - 5} more rows)" if len(bad) > 5 else ""
    if on_invalid == "raise":
        raise InvalidTrainingRowsError(
            f"{source}: {len(bad)} of {len(rows)} rows have an empty or missing text, which would train the model "
            f"on the template alone — {described}{more}; fix or remove them (or drop them: on_invalid='drop')"
        )
    if len(bad) == len(rows):
        raise InvalidTrainingRowsError(f"{source}: every one of the {len(rows)} rows has an empty text — {described}")
    logger.warning(
        "%s: dropped %d of %d rows with an empty or missing text — %s%s", source, len(bad), len(rows), described, more
    )
    return rows.select([index for index in range(len(rows)) if index not in bad])
