"""Fixtures of the training tests: the session's tiny causal LM as a LLaRA folder, and tiny contrastive rows."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
from datasets import Dataset
from sentence_transformers import SentenceTransformer

import llara_st

TOPICS = ["volcano", "honeybee", "glacier", "saxophone", "telescope", "origami", "penguin", "cactus"]


@pytest.fixture(scope="session")
def training_llara_dir(tiny_llama_dir: Path, tmp_path_factory) -> Path:
    """The tiny random causal LM converted to a LLaRA folder (short query and passage budgets)."""
    out = tmp_path_factory.mktemp("training_llara") / "llara"
    llara_st.convert(str(tiny_llama_dir), out, query_max_length=32, passage_max_length=48)
    return out


@pytest.fixture(scope="session")
def _training_llara(training_llara_dir: Path) -> SentenceTransformer:
    return llara_st.load(training_llara_dir, device="cpu")


@pytest.fixture
def training_llara(_training_llara) -> SentenceTransformer:
    """A fresh copy of the tiny LLaRA model per test."""
    return copy.deepcopy(_training_llara)


@pytest.fixture(scope="session")
def contrastive_rows() -> Dataset:
    """Eight (anchor, positive, negative_1) rows, one per topic; the negative is the next topic's passage."""
    passages = [f"The {topic} is described in this short passage about the {topic}." for topic in TOPICS]
    return Dataset.from_dict(
        {
            "anchor": [f"tell me about the {topic}" for topic in TOPICS],
            "positive": passages,
            "negative_1": passages[1:] + passages[:1],
        }
    )
