"""Fixtures for evaluation tests: BEIR folders written in tmp_path and models with hand-set embeddings."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from sentence_transformers import SentenceTransformer

from tests.conftest import write_beir_folder
from tests.evaluation.retrieval_helpers import (
    FIXED_DOC_VECTORS,
    FIXED_QRELS,
    FIXED_QUERY_VECTORS,
    static_embedding_model,
)


@pytest.fixture
def make_beir_folder(tmp_path: Path) -> Callable[..., Path]:
    def make(name: str = "tiny", **kwargs) -> Path:
        return write_beir_folder(tmp_path / name, **kwargs)

    return make


@pytest.fixture
def fixed_model() -> SentenceTransformer:
    return static_embedding_model({**FIXED_DOC_VECTORS, **FIXED_QUERY_VECTORS})


@pytest.fixture
def fixed_beir_folder(make_beir_folder) -> Path:
    return make_beir_folder(
        "fixed",
        corpus={doc: doc for doc in FIXED_DOC_VECTORS},
        queries={query: query for query in FIXED_QUERY_VECTORS},
        qrels={"test": FIXED_QRELS, "dev": [("q1", "d1", 1)]},
    )
