"""Reading BEIR-layout folders (corpus.jsonl, queries.jsonl, qrels/{split}.tsv)."""

from __future__ import annotations

import csv
from pathlib import Path


def read_beir_qrels(path: str | Path) -> dict[str, dict[str, int]]:
    """``{query_id: {corpus_id: score}}`` from a BEIR qrels TSV (``query-id corpus-id score``, header line).

    Ids are kept as strings (a CSV reader that infers types would turn ``"0123"`` into 123).
    """
    qrels: dict[str, dict[str, int]] = {}
    with Path(path).open(encoding="utf8", newline="") as handle:
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
            qrels.setdefault(row[0], {})[row[1]] = score
    return qrels
