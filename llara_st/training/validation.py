"""Checks of training rows before any training step: an empty text would silently train the model to match
an empty query or passage (the template alone)."""

from __future__ import annotations

import logging
from typing import Any, Literal

from llara_st.errors import LLaRAUserError

logger = logging.getLogger(__name__)

_SHOWN = 5


class InvalidTrainingRowsError(LLaRAUserError):
    """Training rows hold a missing, non-text or blank (empty or whitespace-only) text."""


def check_text_rows(
    rows: Any,
    source: str = "training rows",
    on_invalid: Literal["raise", "drop"] = "raise",
) -> Any:
    """Refuse (or drop, with a warning) rows of a text dataset with a missing, non-text or blank text.

    Every column is a text column, as in contrastive rows ``(anchor, positive, negative_1 …)`` and adaptation
    rows ``(text, next_text)``. Rows are numbered from 1 in the dataset's order, as the data readers number the
    lines of a file (row 1 of rows read from a JSONL file is its first line).

    Args:
        rows: A ``datasets.Dataset``.
        source: Where the rows come from (a file or folder), named in the error.
        on_invalid: ``"raise"``: :class:`InvalidTrainingRowsError` naming the first bad rows and columns;
            ``"drop"``: the rows without them, and a warning with the count (an error if none is left).

    Returns:
        ``rows`` unchanged, or with the bad rows dropped.

    Example::

        >>> from datasets import Dataset
        >>> from llara_st.training.validation import check_text_rows
        >>> rows = Dataset.from_dict({"anchor": ["tides?", " "], "positive": ["The Moon ...", "Waves ..."]})
        >>> check_text_rows(rows, "rows.jsonl")
        Traceback (most recent call last):
            ...
        llara_st.training.validation.InvalidTrainingRowsError: rows.jsonl: 1 of 2 rows have an empty or missing
        text, which would train the model on the template alone — row 2: 'anchor'; fix or remove them (or drop
        them: on_invalid='drop')
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
    described = "; ".join(
        f"row {row + 1}: {', '.join(map(repr, columns))}" for row, columns in sorted(bad.items())[:_SHOWN]
    )
    more = f" (and {len(bad) - _SHOWN} more rows)" if len(bad) > _SHOWN else ""
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
