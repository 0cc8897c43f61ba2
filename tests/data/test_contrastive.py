"""Contrastive rows: BEIR loading, the authors' JSONL, grouping into (anchor, positive, negative_1 …)."""

from __future__ import annotations

import json
import logging
from collections import Counter
from pathlib import Path

import pytest
from datasets import Dataset

from llara_st.data.beir import load_beir
from llara_st.data.contrastive import (
    InvalidTrainingRowsError,
    beir_examples,
    build_contrastive_dataset,
    check_text_rows,
    contrastive_router_mapping,
    load_contrastive_dataset,
    negative_columns,
    read_contrastive_jsonl,
    write_contrastive_jsonl,
)
from tests.conftest import write_beir_folder


@pytest.fixture
def small_beir(tmp_path: Path) -> Path:
    return write_beir_folder(
        tmp_path / "beir",
        corpus={
            "0123": ("Tides", "The Moon pulls the sea."),
            "d2": ("", "Volcanoes erupt."),
            "d3": ("Bees", "Bees dance."),
        },
        queries={"q1": "what causes tides", "q2": "why do volcanoes erupt", "q3": "how do bees talk"},
        qrels={"train": [("q1", "0123", 1), ("q2", "d2", 1), ("q2", "d3", 0)], "dev": [("q3", "d3", 2)]},
    )


def test_load_beir_reads_one_split_with_title_and_string_ids(small_beir: Path) -> None:
    corpus, queries, qrels = load_beir(small_beir, "train")
    assert corpus == {"0123": "Tides The Moon pulls the sea.", "d2": "Volcanoes erupt.", "d3": "Bees Bees dance."}
    assert queries == {"q1": "what causes tides", "q2": "why do volcanoes erupt"}  # q3 is a dev query
    assert qrels == {"q1": {"0123": 1}, "q2": {"d2": 1, "d3": 0}}
    assert load_beir(small_beir, "dev")[2] == {"q3": {"d3": 2}}


def test_load_beir_scifact_counts(data_dir: Path) -> None:
    corpus, queries, qrels = load_beir(data_dir / "scifact", "train")
    assert (len(corpus), len(queries), sum(len(judged) for judged in qrels.values())) == (5183, 609, 684)
    test_queries = load_beir(data_dir / "scifact", "test")[1]
    assert len(test_queries) == 300 and not set(test_queries) & set(queries)


def test_beir_examples_keep_relevant_positives_and_map_negative_ids(small_beir: Path) -> None:
    corpus, queries, qrels = load_beir(small_beir, "train")
    examples = beir_examples(corpus, queries, qrels, negatives={"q2": ["0123"]})
    assert examples == [
        {"query": "what causes tides", "pos": [corpus["0123"]], "neg": []},
        # d3 has score 0: judged, not relevant, so not a positive
        {"query": "why do volcanoes erupt", "pos": [corpus["d2"]], "neg": [corpus["0123"]]},
    ]


def example(query: str, positives: int, negatives: int) -> dict:
    return {
        "query": query,
        "pos": [f"{query} pos {i}" for i in range(positives)],
        "neg": [f"{query} neg {i}" for i in range(negatives)],
    }


def test_group_has_anchor_positive_and_distinct_negatives_when_enough() -> None:
    rows = build_contrastive_dataset([example("q", 1, 40), example("r", 1, 15)], group_size=16)
    assert rows.column_names == ["anchor", "positive", *[f"negative_{i}" for i in range(1, 16)]]
    for row, query in zip(rows, ["q", "r"], strict=True):
        negatives = [row[column] for column in negative_columns(16)]
        assert row["anchor"] == query and row["positive"] == f"{query} pos 0"
        assert len(set(negatives)) == 15 and all(text.startswith(f"{query} neg ") for text in negatives)


def test_too_few_negatives_are_all_used_then_drawn_again() -> None:
    rows = build_contrastive_dataset([example("q", 1, 4)], group_size=16)
    negatives = [rows[0][column] for column in negative_columns(16)]
    counts = Counter(negatives)
    assert set(counts) == {f"q neg {i}" for i in range(4)}  # each of the 4 at least once, nothing else
    assert sum(counts.values()) == 15


def test_draws_are_seeded() -> None:
    examples = [example(f"q{i}", 3, 30) for i in range(5)]
    first = build_contrastive_dataset(examples, group_size=4, seed=1)
    assert build_contrastive_dataset(examples, group_size=4, seed=1)[:] == first[:]
    assert build_contrastive_dataset(examples, group_size=4, seed=2)[:] != first[:]


def test_positives_sample_one_per_query_or_all() -> None:
    examples = [example("q", 3, 5), example("r", 1, 5)]
    sampled = build_contrastive_dataset(examples, group_size=2, positives="sample")
    assert sampled["anchor"] == ["q", "r"] and sampled["positive"][0] in examples[0]["pos"]
    every = build_contrastive_dataset(examples, group_size=2, positives="all")
    assert every["anchor"] == ["q", "q", "q", "r"]
    assert every["positive"] == examples[0]["pos"] + examples[1]["pos"]


def test_group_size_one_is_pairs_and_rows_without_negatives_are_dropped(caplog) -> None:
    pairs = build_contrastive_dataset([example("q", 1, 0)], group_size=1)
    assert pairs.column_names == ["anchor", "positive"]
    with caplog.at_level(logging.WARNING):
        rows = build_contrastive_dataset([example("q", 1, 0), example("r", 1, 2)], group_size=3)
    assert rows["anchor"] == ["r"]
    assert "Dropped 1 of 2 queries" in caplog.text
    with pytest.raises(ValueError, match="no contrastive rows"):
        build_contrastive_dataset([example("q", 1, 0)], group_size=3)


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ({"query": "q", "pos": [], "neg": ["n"]}, "'pos' is empty"),
        ({"query": "", "pos": ["p"], "neg": []}, "'query' must be a non-empty string"),
        ({"query": "q", "pos": "p", "neg": []}, "'pos' must be a list of strings"),
        ({"query": "q", "pos": ["p"], "neg": [3]}, "'neg' must be a list of strings"),
    ],
)
def test_bad_rows_are_named(bad: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build_contrastive_dataset([bad], group_size=2)


def test_bad_rows_are_counted_from_1_in_memory_as_in_files(tmp_path: Path) -> None:
    """Rows in memory were named from 0 (the second row was "row 1") while the readers name a file's line from 1:
    the second row is now "row 2" in memory, as it is line 2 of a file, and the message says how it counts."""
    rows = [example("q", 1, 1), {"query": "r", "pos": [], "neg": ["n"]}]
    with pytest.raises(ValueError, match=r"^row 2 \(counted from 1\): 'pos' is empty"):
        build_contrastive_dataset(rows, group_size=2)
    with pytest.raises(ValueError, match=r"^row 2 \(counted from 1\): 'pos' is empty"):
        write_contrastive_jsonl(rows, tmp_path / "written.jsonl")
    (tmp_path / "rows.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    with pytest.raises(ValueError, match=r"rows.jsonl:2: 'pos' is empty"):
        read_contrastive_jsonl(tmp_path / "rows.jsonl")


def test_bad_arguments_are_named() -> None:
    with pytest.raises(ValueError, match="group_size"):
        build_contrastive_dataset([example("q", 1, 1)], group_size=0)
    with pytest.raises(ValueError, match="positives"):
        build_contrastive_dataset([example("q", 1, 1)], positives="first")


def test_router_mapping_sends_anchor_to_query_and_the_rest_to_document() -> None:
    columns = ["anchor", "positive", "negative_1", "negative_2"]
    assert contrastive_router_mapping(columns) == {
        "anchor": "query",
        "positive": "document",
        "negative_1": "document",
        "negative_2": "document",
    }
    with pytest.raises(ValueError, match="'anchor'"):
        contrastive_router_mapping(["query", "positive"])


def test_authors_jsonl_round_trip_and_every_rows_format(tmp_path: Path) -> None:
    examples = [example("q", 2, 3), example("r", 1, 1)]
    authors = write_contrastive_jsonl(examples, tmp_path / "authors.jsonl")
    assert read_contrastive_jsonl(authors) == examples
    expected = build_contrastive_dataset(examples, group_size=3, seed=7)
    assert load_contrastive_dataset(authors, group_size=3, seed=7)[:] == expected[:]

    expected.save_to_disk(str(tmp_path / "saved"))
    expected.to_json(str(tmp_path / "rows.jsonl"))
    expected.to_parquet(str(tmp_path / "rows.parquet"))
    for path in ("saved", "rows.jsonl", "rows.parquet"):
        assert load_contrastive_dataset(tmp_path / path)[:] == expected[:], path


def test_load_contrastive_dataset_rejects_foreign_columns(tmp_path: Path) -> None:
    Dataset.from_dict({"question": ["q"], "answer": ["a"]}).to_parquet(str(tmp_path / "qa.parquet"))
    with pytest.raises(ValueError, match="start with the columns"):
        load_contrastive_dataset(tmp_path / "qa.parquet")
    Dataset.from_dict({"anchor": ["q"], "positive": ["p"], "negative": ["n"]}).to_parquet(str(tmp_path / "t.parquet"))
    with pytest.raises(ValueError, match="negative_1"):
        load_contrastive_dataset(tmp_path / "t.parquet")
    (tmp_path / "bad.jsonl").write_text('{"query": "q"\n')
    with pytest.raises(ValueError, match="not valid JSON"):
        load_contrastive_dataset(tmp_path / "bad.jsonl")
    with pytest.raises(FileNotFoundError):
        load_contrastive_dataset(tmp_path / "missing.jsonl")


# Empty texts (issue 11.8): refused naming the row and column, or dropped with a warning, never trained on.


def rows_with(column: str, value, row: int = 1) -> Dataset:
    """Three rows; ``row`` (0-based index) of ``column`` set to ``value``."""
    data = {
        "anchor": ["what causes tides", "who wrote the concertos", "how to store basil"],
        "positive": ["The Moon's gravity ...", "Bach wrote ...", "Keep basil in water ..."],
        "negative_1": ["Waves are ...", "Mozart wrote ...", "Parsley is ..."],
    }
    data[column][row] = value
    return Dataset.from_dict(data)


def test_complete_rows_pass_unchanged():
    rows = rows_with("anchor", "what causes tides", 0)
    assert check_text_rows(rows) is rows


@pytest.mark.parametrize("column", ["anchor", "positive", "negative_1"])
@pytest.mark.parametrize("value", ["", "   ", "\n\t", None])
def test_an_empty_text_is_refused_naming_row_and_column(column: str, value):
    with pytest.raises(InvalidTrainingRowsError, match=rf"rows.parquet: 1 of 3 rows .* row 2: '{column}'"):
        check_text_rows(rows_with(column, value), "rows.parquet")


def test_bad_rows_can_be_dropped_with_a_warning(caplog):
    kept = check_text_rows(rows_with("positive", ""), on_invalid="drop")
    assert kept["anchor"] == ["what causes tides", "how to store basil"]
    assert "dropped 1 of 3 rows" in caplog.text and "row 2: 'positive'" in caplog.text


def test_a_non_text_column_is_refused():
    rows = Dataset.from_dict({"anchor": ["q"], "positive": ["p"], "label": [1]})
    with pytest.raises(InvalidTrainingRowsError, match="column 'label' holds int64, not text"):
        check_text_rows(rows)


def test_empty_texts_that_the_data_readers_let_through_are_caught(tmp_path: Path):
    """An empty positive or negative passes the readers today; the check catches the rows they build."""
    built = build_contrastive_dataset([{"query": "q", "pos": [""], "neg": ["n"]}], group_size=2)
    with pytest.raises(InvalidTrainingRowsError, match="row 1: 'positive'"):
        check_text_rows(built)
    path = tmp_path / "rows.jsonl"
    path.write_text(json.dumps({"anchor": "q", "positive": "p", "negative_1": " "}) + "\n")
    with pytest.raises(InvalidTrainingRowsError, match=f"{path.name}: .*row 1: 'negative_1'"):
        check_text_rows(load_contrastive_dataset(path), str(path))


def test_rows_count_from_1_as_lines_do(tmp_path: Path):
    """Issue 16.9: rows counted from 0 here while the data readers count lines from 1: the first line of a JSONL
    file is row 1 in both."""
    path = tmp_path / "rows.jsonl"
    good = json.dumps({"anchor": "q", "positive": "p", "negative_1": "n"})
    path.write_text(good + "\n" + json.dumps({"anchor": "q", "positive": "", "negative_1": "n"}) + "\n")
    with pytest.raises(InvalidTrainingRowsError, match=r"rows\.jsonl: 1 of 2 rows .* row 2: 'positive'"):
        check_text_rows(load_contrastive_dataset(path), str(path))
