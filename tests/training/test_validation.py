"""Empty training texts (issue 11.8): a row with an empty query, positive or negative is refused (naming the
row and column) or dropped with a warning, never trained on."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from datasets import Dataset

from llara_st.data.contrastive import build_contrastive_dataset, load_contrastive_dataset
from llara_st.training.validation import InvalidTrainingRowsError, check_text_rows


def rows_with(column: str, value, row: int = 1) -> Dataset:
    """Three rows; ``row`` (0-based index) of ``column`` set to ``value``."""
    data = {
        "anchor": ["what causes tides", "who wrote the concertos", "how to store basil"],
        "positive": ["The Moon's gravity ...", "Bach wrote ...", "Keep basil in water ..."],
        "negative_1": ["Waves are ...", "Mozart wrote ...", "Parsley is ..."],
    }
    data[column][row] = value
    return Dataset.from_dict(data)


def test_complete_rows_pass_unchanged(contrastive_rows: Dataset):
    assert check_text_rows(contrastive_rows) is contrastive_rows


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
