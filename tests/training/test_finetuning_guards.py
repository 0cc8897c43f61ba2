"""Where fine-tuning runs its guards: a stale rerun is refused before the model is loaded, negatives are mined or
the dev split is evaluated (it used to be refused only after all three), and a mined run resumes. (The probe check
on every process is in test_guards_in_training.py.)"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from datasets import Dataset

import llara_st.training.finetuning as finetuning
from llara_st.training.checkpoints import StaleRunError
from llara_st.training.finetuning import run_finetuning
from tests.conftest import write_beir_folder


@pytest.fixture
def beir_folder(contrastive_rows: Dataset, tmp_path: Path) -> Path:
    """A BEIR folder of the same eight topics: train and dev qrels."""
    corpus = {f"d{i}": text for i, text in enumerate(contrastive_rows["positive"])}
    queries = {f"q{i}": text for i, text in enumerate(contrastive_rows["anchor"])}
    qrels = [(f"q{i}", f"d{i}", 1) for i in range(len(corpus))]
    return write_beir_folder(tmp_path / "beir", corpus, queries, {"train": qrels, "dev": qrels})


def test_a_stale_rerun_is_refused_before_loading_mining_or_evaluating(
    training_llara_dir: Path, contrastive_rows: Dataset, beir_folder: Path, tmp_path: Path, monkeypatch, finetune_args
):
    output = tmp_path / "run"
    run_finetuning(finetune_args(training_llara_dir, output), train_dataset=contrastive_rows)

    expensive: list[str] = []

    def spy(name):
        def record(*args, **kwargs):
            expensive.append(name)
            raise AssertionError(f"{name} ran before the stale run was refused")

        return record

    for name in ("load_finetune_model", "mine_hard_negatives_from_qrels", "beir_ir_evaluator"):
        monkeypatch.setattr(finetuning, name, spy(name))
    rerun = finetune_args(
        training_llara_dir, output, seed=3, train_data=str(beir_folder), dev_data=str(beir_folder), max_steps=4
    )
    with pytest.raises(StaleRunError, match="seed: 42 → 3"):
        run_finetuning(rerun)
    assert expensive == []


def test_the_same_mined_run_resumes_and_extends(
    training_llara_dir: Path, beir_folder: Path, tmp_path: Path, monkeypatch, finetune_args
):
    """The fingerprint of a run that mines its rows holds the data folder and mining settings, not the rows: the
    same run resumes (here: extended from 2 to 3 steps), and an edited data folder makes it stale."""
    pytest.importorskip("bm25s")
    output = tmp_path / "run"
    settings = {"train_data": str(beir_folder), "group_size": 2, "mined_negatives": 2, "mining_range_min": 0}
    run_finetuning(finetune_args(training_llara_dir, output, **settings))
    run_finetuning(finetune_args(training_llara_dir, output, max_steps=3, resume_from_checkpoint="latest", **settings))
    state = json.loads((output / "trainer_state.json").read_text())
    assert state["global_step"] == 3
    with (beir_folder / "queries.jsonl").open("a") as handle:
        handle.write(json.dumps({"_id": "q99", "text": "an added query"}) + "\n")
    with pytest.raises(StaleRunError, match="train_data"):
        run_finetuning(
            finetune_args(training_llara_dir, output, max_steps=4, resume_from_checkpoint="latest", **settings)
        )
