"""Fixtures of the recipe tests: a tied tiny LLaRA folder and a small adaptation data file."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from tests.conftest import build_tiny_llama

# Words that the Llama-2 tokenizer keeps whole, so every row below is longer than the tests' text budget.
_WORDS = (
    "river storm morning field water farmer animal ground library budget committee bicycle chain wheel "
    "rider road sugar plant light energy"
).split()


@pytest.fixture(scope="session")
def tied_llara_dir(tiny_llama_dir: Path, convert_once, tmp_path_factory) -> Path:
    """A tiny causal LM with tied input/output embeddings (as SmolLM2), converted to a LLaRA folder."""
    tied = build_tiny_llama(tmp_path_factory.mktemp("tied_llama"), tiny_llama_dir, tie_word_embeddings=True)
    return convert_once(tied)[0]


@pytest.fixture(scope="session")
def adaptation_jsonl(tmp_path_factory) -> Path:
    """16 rows in the authors' layout; every text is 20 words, longer than a 9-token text budget."""
    rng = random.Random(0)
    path = tmp_path_factory.mktemp("adaptation_data") / "rows.jsonl"
    with path.open("w", encoding="utf8") as handle:
        for _ in range(16):
            text = " ".join(rng.choice(_WORDS) for _ in range(20))
            next_text = " ".join(rng.choice(_WORDS) for _ in range(20))
            row = {"input": text, "output_summarize": text, "output_predict": next_text}
            handle.write(json.dumps(row) + "\n")
    return path


@pytest.fixture
def adapt_config(adaptation_jsonl: Path, tmp_path: Path):
    """A config dict for ``run_adaptation`` on the tiny data: CPU, float32, in data order, log every step."""

    def make(model_dir: Path, **overrides) -> dict:
        config = {
            "model_name_or_path": str(model_dir),
            "llara_jsonl_paths": [str(adaptation_jsonl)],
            "shuffle": False,
            # 48 - BOS " - 19 - 18 = 9 text tokens: every row is cut to exactly 9 tokens.
            "cutoff_length": 48,
            "output_dir": str(tmp_path / "run"),
            "per_device_train_batch_size": 4,
            "learning_rate": 5e-3,
            "lr_scheduler_type": "constant",
            "logging_steps": 1,
            "save_strategy": "no",
            "report_to": "none",
            "use_cpu": True,
            "seed": 7,
            "disable_tqdm": True,
        }
        config.update(overrides)
        return config

    return make
