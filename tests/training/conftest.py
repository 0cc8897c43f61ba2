"""Fixtures of the training tests: the tiny causal LM as a LLaRA model with short budgets, tiny contrastive rows."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
from datasets import Dataset
from sentence_transformers import SentenceTransformer

from llara_st.training.finetuning import FinetuneArguments

TOPICS = ["volcano", "honeybee", "glacier", "saxophone", "telescope", "origami", "penguin", "cactus"]


@pytest.fixture(scope="session")
def training_llara_dir(tiny_llama_dir: Path, convert_once) -> Path:
    """The tiny causal LM converted with short query and passage budgets (32 and 48 tokens): the guards' runs
    (which learning rate diverges, which collapses) are set for them."""
    return convert_once(tiny_llama_dir, query_max_length=32, passage_max_length=48)[0]


@pytest.fixture
def training_llara(tiny_llama_dir: Path, convert_once) -> SentenceTransformer:
    """That model, a fresh copy per test."""
    return copy.deepcopy(convert_once(tiny_llama_dir, query_max_length=32, passage_max_length=48)[1])


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


@pytest.fixture
def finetune_args():
    """Builds ``FinetuneArguments`` for a short full fine-tuning run on the tiny model (2 steps, a checkpoint per
    step); keyword arguments override the defaults."""

    def build(model_dir: Path, output_dir: Path, **overrides) -> FinetuneArguments:
        settings = {
            "model_name_or_path": str(model_dir),
            "output_dir": str(output_dir),
            "query_max_length": 32,
            "passage_max_length": 48,
            "lora": False,
            "max_steps": 2,
            "per_device_train_batch_size": 4,
            "learning_rate": 1e-4,
            "warmup_steps": 0,
            "logging_steps": 1,
            "save_strategy": "steps",
            "save_steps": 1,
            "report_to": "none",
            "use_cpu": True,
            "disable_tqdm": True,
            "seed": 42,
        }
        return FinetuneArguments(**(settings | overrides))

    return build
