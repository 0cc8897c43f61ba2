"""The guards inside the adaptation and fine-tuning workflows (issue 11.6-11.8), end to end on the tiny model:
a rerun with other settings into a used output_dir is refused (it used to train 0 steps and re-save the old
model, or bring old checkpoints back), a diverging run stops, a collapsed model is not saved, empty rows are
refused."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch
from datasets import Dataset
from safetensors.torch import load_file
from sentence_transformers import SentenceTransformerTrainer
from transformers import AutoModelForCausalLM, AutoTokenizer

import llara_st
from llara_st.folders import FolderNotOursError
from llara_st.modules import LastKPooling
from llara_st.training.adaptation import parse_adaptation_arguments, run_adaptation
from llara_st.training.checkpoints import RunFingerprint, StaleRunError, path_identity
from llara_st.training.finetuning import run_finetuning
from llara_st.training.guards import DegenerateEmbeddingsError, InvalidTrainingRowsError, TrainingDivergedError

WORDS = "river storm morning field water farmer animal ground library budget committee bicycle chain".split()


@pytest.fixture(scope="module")
def adaptation_rows(tmp_path_factory) -> Path:
    """Eight rows in the authors' adaptation layout."""
    rng = random.Random(0)
    path = tmp_path_factory.mktemp("adaptation") / "rows.jsonl"
    lines = []
    for _ in range(8):
        text, next_text = (" ".join(rng.choice(WORDS) for _ in range(12)) for _ in range(2))
        lines.append(json.dumps({"input": text, "output_summarize": text, "output_predict": next_text}))
    path.write_text("\n".join(lines) + "\n")
    return path


def adapt(model_dir: Path, data: Path, output_dir: Path, **overrides) -> tuple[str, dict]:
    settings = {
        "model_name_or_path": str(model_dir),
        "llara_jsonl_paths": [str(data)],
        "shuffle": False,
        "cutoff_length": 48,
        "output_dir": str(output_dir),
        "per_device_train_batch_size": 4,
        "max_steps": 2,
        "learning_rate": 5e-3,
        "logging_steps": 1,
        "save_strategy": "steps",
        "save_steps": 1,
        "report_to": "none",
        "use_cpu": True,
        "seed": 7,
        "disable_tqdm": True,
        "resume_from_checkpoint": "true",
    }
    settings.update(overrides)
    final = run_adaptation(*parse_adaptation_arguments(settings))
    return final, json.loads((output_dir / "trainer_state.json").read_text())


def trained_steps(state: dict) -> list[int]:
    return [entry["step"] for entry in state["log_history"] if "loss" in entry]


def test_adaptation_rerun_with_new_settings_is_refused_not_skipped(
    training_llara_dir: Path, adaptation_rows: Path, tmp_path: Path
):
    """It used to train 0 steps, exit normally and re-save the first run's model."""
    output = tmp_path / "run"
    _, state = adapt(training_llara_dir, adaptation_rows, output)
    assert trained_steps(state) == [1, 2]
    final_weights = (output / "final" / "model.safetensors").read_bytes()
    with pytest.raises(StaleRunError, match=r"learning_rate: 0.005 → 0.001.*overwrite_output_dir: true"):
        adapt(training_llara_dir, adaptation_rows, output, learning_rate=1e-3)
    assert (output / "final" / "model.safetensors").read_bytes() == final_weights  # the old run is intact

    _, state = adapt(training_llara_dir, adaptation_rows, output, learning_rate=1e-3, overwrite_output_dir=True)
    assert trained_steps(state) == [1, 2]  # trained afresh
    assert RunFingerprint.load(output).settings["learning_rate"] == 1e-3
    assert (output / "final" / "model.safetensors").read_bytes() != final_weights


def test_adaptation_resumes_its_own_run_and_skips_an_incomplete_checkpoint(
    training_llara_dir: Path, adaptation_rows: Path, tmp_path: Path
):
    output = tmp_path / "run"
    adapt(training_llara_dir, adaptation_rows, output, save_total_limit=None)
    (output / "checkpoint-2" / "optimizer.pt").unlink()  # killed while saving
    _, state = adapt(training_llara_dir, adaptation_rows, output, logging_steps=2)  # logging is not a new run
    assert trained_steps(state)[-1] == 2
    assert (output / "checkpoint-2.incomplete").is_dir()
    assert sorted(path.name for path in output.glob("checkpoint-*")) == [
        "checkpoint-1",
        "checkpoint-2",
        "checkpoint-2.incomplete",
    ]


def test_adaptation_latest_on_an_empty_output_dir_starts_from_scratch(
    training_llara_dir: Path, adaptation_rows: Path, tmp_path: Path
):
    _, state = adapt(training_llara_dir, adaptation_rows, tmp_path / "new", resume_from_checkpoint="latest")
    assert trained_steps(state) == [1, 2]


def test_a_diverging_adaptation_stops_and_saves_nothing(
    training_llara_dir: Path, adaptation_rows: Path, tmp_path: Path
):
    with pytest.raises(TrainingDivergedError, match="training diverged at step"):
        adapt(training_llara_dir, adaptation_rows, tmp_path / "run", learning_rate=1e12, save_strategy="no")
    assert not (tmp_path / "run" / "final").exists()


# ---------------------------------------------------------------------------------------------- fine-tuning


def test_finetuning_latest_never_brings_back_another_runs_weights(
    training_llara_dir: Path, contrastive_rows: Dataset, tmp_path: Path, finetune_args
):
    """Old checkpoints used to survive a new run, and `latest` resumed their weights under the new config."""
    output = tmp_path / "run"
    run_finetuning(finetune_args(training_llara_dir, output), train_dataset=contrastive_rows)
    with pytest.raises(StaleRunError, match="seed: 42 → 3"):
        run_finetuning(
            finetune_args(training_llara_dir, output, seed=3, resume_from_checkpoint="latest"),
            train_dataset=contrastive_rows,
        )
    other_rows = contrastive_rows.select(range(len(contrastive_rows) - 1, -1, -1))
    with pytest.raises(StaleRunError, match="train_dataset"):
        run_finetuning(
            finetune_args(training_llara_dir, output, resume_from_checkpoint="latest"), train_dataset=other_rows
        )
    run_finetuning(
        finetune_args(training_llara_dir, output, seed=3, overwrite_output_dir=True), train_dataset=contrastive_rows
    )
    assert json.loads((output / "metrics.json").read_text())["config"]["seed"] == 3
    assert RunFingerprint.load(output).settings["seed"] == 3


def test_finetuning_refuses_rows_with_an_empty_text(
    training_llara_dir: Path, contrastive_rows: Dataset, tmp_path, finetune_args
):
    rows = contrastive_rows.map(
        lambda row, index: {"negative_1": "" if index == 2 else row["negative_1"]}, with_indices=True
    )
    with pytest.raises(InvalidTrainingRowsError, match="row 3: 'negative_1'"):
        run_finetuning(finetune_args(training_llara_dir, tmp_path / "run"), train_dataset=rows)
    assert not list((tmp_path / "run").glob("checkpoint-*"))


@pytest.mark.parametrize("main_process", [True, False], ids=["main process", "other process"])
def test_a_collapsed_finetuned_model_is_not_saved(
    training_llara_dir: Path, contrastive_rows: Dataset, tmp_path, finetune_args, monkeypatch, main_process: bool
):
    """lr 1e3 used to save a model that embeds every text as zeros. A process other than the main one (simulated)
    catches it too: the probe is a collective forward under ZeRO-3, so every process must run it."""
    if not main_process:
        monkeypatch.setattr(SentenceTransformerTrainer, "is_world_process_zero", lambda self: False)
    output = tmp_path / "run"
    with pytest.raises(DegenerateEmbeddingsError, match="collapsed"):
        run_finetuning(
            finetune_args(training_llara_dir, output, learning_rate=1e3, max_steps=4, save_strategy="no"),
            train_dataset=contrastive_rows,
        )
    assert not (output / "final").exists()


def test_adaptation_with_lora_trains_the_model_it_is_given_not_an_earlier_runs_base(
    tiny_llama_dir: Path, adaptation_rows: Path, tmp_path: Path
):
    """A causal LM converted for LoRA (output_dir/base-llara) used to be reused by a later run on another model."""
    other = tmp_path / "other_lm"
    causal = AutoModelForCausalLM.from_pretrained(tiny_llama_dir)
    with torch.no_grad():
        for parameter in causal.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    causal.save_pretrained(other)
    AutoTokenizer.from_pretrained(tiny_llama_dir).save_pretrained(other)
    output, lora = tmp_path / "run", {"lora": True, "lora_r": 4, "lora_alpha": 8, "save_strategy": "no"}
    adapt(tiny_llama_dir, adaptation_rows, output, **lora)
    adapt(other, adaptation_rows, output, overwrite_output_dir=True, **lora)
    weight = "model.layers.0.self_attn.q_proj.weight"
    for model in (tiny_llama_dir, other):  # each run's base is its own model; the first stays for its checkpoints
        base = output / f"base-llara-{path_identity(model)[:12]}"
        assert torch.equal(
            load_file(str(base / "model.safetensors"))[weight], load_file(str(model / "model.safetensors"))[weight]
        )


# ---------------------------------------------------------------------------------------------- issue 16


def test_adaptation_overwrite_never_deletes_a_folder_it_did_not_write(
    training_llara_dir: Path, adaptation_rows: Path, tmp_path: Path
):
    """Issue 16.3: overwrite_output_dir deleted the user's folder that final_model_dir named inside output_dir."""
    output = tmp_path / "run"
    mine = output / "my-model"
    mine.mkdir(parents=True)
    (mine / "notes.txt").write_text("mine")
    with pytest.raises(FolderNotOursError, match="my-model"):
        adapt(training_llara_dir, adaptation_rows, output, final_model_dir=str(mine), overwrite_output_dir=True)
    assert (mine / "notes.txt").read_text() == "mine"
    assert not list(output.glob("checkpoint-*"))  # refused before training


def test_finetuning_overwrite_never_deletes_a_folder_it_did_not_write(
    training_llara_dir: Path, contrastive_rows: Dataset, tmp_path: Path, finetune_args
):
    output = tmp_path / "run"
    (output / "final").mkdir(parents=True)
    (output / "final" / "notes.txt").write_text("mine")
    with pytest.raises(FolderNotOursError, match="final"):
        run_finetuning(
            finetune_args(training_llara_dir, output, overwrite_output_dir=True), train_dataset=contrastive_rows
        )
    assert (output / "final" / "notes.txt").read_text() == "mine"


class Killed(BaseException):
    """A kill, simulated: the process stops in the middle of saving."""


@pytest.mark.parametrize("workflow", ["adaptation", "finetuning"])
def test_a_final_save_killed_half_way_leaves_no_final_model(
    workflow, training_llara_dir, adaptation_rows, contrastive_rows, tmp_path, finetune_args, monkeypatch
):
    """Issue 16.5: killed after the weights and tokenizer were written and before modules.json, the final folder
    loaded through llara_st.load as an "authors' checkpoint" with other max lengths."""

    def killed(self, *args, **kwargs):
        raise Killed

    monkeypatch.setattr(LastKPooling, "save", killed)  # the second module: after the backbone's files
    output = tmp_path / "run"
    with pytest.raises(Killed):
        if workflow == "adaptation":
            adapt(training_llara_dir, adaptation_rows, output, save_strategy="no")
        else:
            run_finetuning(
                finetune_args(training_llara_dir, output, save_strategy="no"), train_dataset=contrastive_rows
            )
    assert not (output / "final").exists()
    with pytest.raises(FileNotFoundError):
        llara_st.load(output / "final")


def test_a_collapsed_runs_checkpoints_are_marked_and_refused(
    training_llara_dir: Path, contrastive_rows: Dataset, tmp_path, finetune_args
):
    """Issue 16.9: the checkpoints of a collapsed run stayed on disk and loaded with all-zero embeddings."""
    output = tmp_path / "run"
    with pytest.raises(DegenerateEmbeddingsError, match="collapsed"):
        run_finetuning(
            finetune_args(training_llara_dir, output, learning_rate=1e3, max_steps=4, save_steps=2),
            train_dataset=contrastive_rows,
        )
    checkpoints = sorted(output.glob("checkpoint-*"))
    assert [path.name for path in checkpoints] == ["checkpoint-2", "checkpoint-4"]
    for checkpoint in checkpoints:
        with pytest.raises(ValueError, match="collapsed"):
            llara_st.load(checkpoint, trust_remote_code=True)  # the one way a trainer checkpoint loaded
