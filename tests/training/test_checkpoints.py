"""Stale runs (issue 11.6): a run resumes only its own checkpoints, refuses another configuration's with an
error naming what changed, starts afresh only when asked, and skips an incomplete newest checkpoint."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
from datasets import Dataset
from safetensors.torch import save_file
from sentence_transformers.sentence_transformer.training_args import SentenceTransformerTrainingArguments

from llara_st.errors import LLaRAUserError
from llara_st.training.adaptation import AdaptationArguments
from llara_st.training.checkpoints import (
    RESULT_SETTINGS,
    RUN_RECORD_NAME,
    IncompleteCheckpointError,
    RunFingerprint,
    StaleRunError,
    checkpoint_problems,
    resolve_checkpoint,
    trainer_checkpoints,
)
from llara_st.training.finetuning import FinetuneArguments


def make_checkpoint(output_dir: Path, step: int, *, state=True, weights=True, optimizer=True) -> Path:
    """A trainer checkpoint folder as SentenceTransformerTrainer writes it (the parts the tests need)."""
    folder = output_dir / f"checkpoint-{step}"
    folder.mkdir(parents=True)
    if weights:
        save_file({"weight": torch.full((4, 4), float(step))}, str(folder / "model.safetensors"))
    if optimizer:
        torch.save({"state": {}}, folder / "optimizer.pt")
    if state:
        (folder / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    return folder


def fingerprint(tmp_path: Path, **overrides) -> RunFingerprint:
    settings = {
        "output_dir": str(tmp_path / "run"),
        "learning_rate": 2e-4,
        "seed": 42,
        "per_device_train_batch_size": 8,
        "report_to": "none",
    }
    settings.update(overrides)
    return RunFingerprint.from_configs(SentenceTransformerTrainingArguments(**settings))


# ---------------------------------------------------------------------------------------------- fingerprint


def test_fingerprint_counts_result_settings_only(tmp_path: Path):
    base = fingerprint(tmp_path)
    assert base == fingerprint(tmp_path, output_dir=str(tmp_path / "elsewhere"), logging_steps=3, save_steps=7)
    assert base == fingerprint(tmp_path, max_steps=100)  # raising the length on resume extends a run
    assert base == fingerprint(tmp_path, dataloader_num_workers=2, activation_checkpointing=True, eval_steps=5)
    assert fingerprint(tmp_path, learning_rate=1e-4).differences(base) == ["learning_rate: 0.0002 → 0.0001"]
    assert fingerprint(tmp_path, seed=7).differences(base) == ["seed: 42 → 7"]
    for changed in ({"gradient_accumulation_steps": 2}, {"lr_scheduler_type": "constant"}, {"warmup_steps": 3}):
        assert [change.split(":")[0] for change in fingerprint(tmp_path, **changed).differences(base)] == [*changed]
    assert base.settings["world_size"] == 1 and base.settings["lr_scheduler_type"] == "linear"


def test_a_field_a_library_release_adds_is_not_compared_until_named(tmp_path: Path):
    """The allow-list replaced a ~60-name deny-list that every transformers release made stale."""

    @dataclasses.dataclass
    class NewerTrainingArguments(SentenceTransformerTrainingArguments):
        new_logging_knob: int = 0

    settings = {"output_dir": str(tmp_path), "report_to": "none"}
    assert RunFingerprint.from_configs(NewerTrainingArguments(**settings, new_logging_knob=1)) == (
        RunFingerprint.from_configs(NewerTrainingArguments(**settings, new_logging_knob=2))
    )
    assert RunFingerprint.from_configs({"new_logging_knob": 1}) != RunFingerprint.from_configs({"new_logging_knob": 2})


def test_every_llara_setting_is_classified():
    """A field added to the workflows' arguments must be named in RESULT_SETTINGS or here (it does not change what
    is trained); both lists name current fields only (old names, refused at parsing, are gone)."""
    does_not_change_results = {
        "final_model_dir", "overwrite_output_dir", "lora_save", "dev_data", "dev_split", "dev_corpus_size",
    }  # fmt: skip
    trainer_fields = {field.name for field in dataclasses.fields(SentenceTransformerTrainingArguments)}
    own = {field.name for cls in (AdaptationArguments, FinetuneArguments) for field in dataclasses.fields(cls)}
    assert own - trainer_fields - RESULT_SETTINGS <= does_not_change_results
    assert not does_not_change_results & RESULT_SETTINGS
    assert does_not_change_results <= own
    assert RESULT_SETTINGS - {"world_size"} <= own | trainer_fields  # world_size: the trainer arguments' property


def test_fingerprint_holds_the_content_of_model_and_data_paths(tmp_path: Path):
    model, data = tmp_path / "model", tmp_path / "rows.jsonl"
    model.mkdir()
    (model / "model.safetensors").write_bytes(b"weights v1")
    data.write_text('{"query": "q", "pos": ["p"], "neg": ["n"]}\n')
    config = {"model_name_or_path": str(model), "train_data": str(data), "temperature": 0.01}
    before = RunFingerprint.from_configs(config)
    assert RunFingerprint.from_configs(config) == before
    (model / "model.safetensors").write_bytes(b"weights v2")  # the model retrained in place
    assert [change.split(":")[0] for change in RunFingerprint.from_configs(config).differences(before)] == [
        "model_name_or_path"
    ]
    (model / "model.safetensors").write_bytes(b"weights v1")
    data.write_text('{"query": "q2", "pos": ["p"], "neg": ["n"]}\n')
    assert "train_data" in RunFingerprint.from_configs(config).differences(before)[0]


def test_fingerprint_of_rows_follows_their_content():
    rows = Dataset.from_dict({"anchor": ["a", "b"], "positive": ["c", "d"]})
    same = RunFingerprint.from_configs({"rows": rows.select([0, 1])})
    assert RunFingerprint.from_configs({"rows": rows}) == same
    assert RunFingerprint.from_configs({"rows": rows.select([1, 0])}) != same


def test_a_function_batch_sampler_fingerprints_the_same_in_every_process(tmp_path: Path):
    def sampler(*args, **kwargs):
        return None

    first = fingerprint(tmp_path, batch_sampler=sampler)
    assert first == fingerprint(tmp_path, batch_sampler=sampler)
    assert "sampler" in first.settings["batch_sampler"]


# ---------------------------------------------------------------------------------------------- resolving


def test_latest_on_an_empty_or_missing_output_dir_starts_from_scratch(tmp_path: Path):
    output = tmp_path / "run"
    assert resolve_checkpoint(output, "latest", fingerprint(tmp_path)) is None
    assert RunFingerprint.load(output) == fingerprint(tmp_path)


@pytest.mark.parametrize("resume", ["true", "last", "Latest", "yes"])
def test_latest_is_the_one_spelling_of_the_newest_checkpoint(tmp_path: Path, resume):
    """Regression (issue 19): "latest", "last", "true", "yes" and True all meant the newest checkpoint."""
    message = rf"resume_from_checkpoint='{resume}' is not a checkpoint folder; .* resume_from_checkpoint: latest"
    with pytest.raises(FileNotFoundError, match=message):
        resolve_checkpoint(tmp_path / "run", resume, fingerprint(tmp_path))
    with pytest.raises(LLaRAUserError, match="must be 'latest' or a checkpoint folder, got True"):
        resolve_checkpoint(tmp_path / "run", True, fingerprint(tmp_path))
    assert not (tmp_path / "run").exists()  # refused before anything was written


def test_checkpoints_are_listed_newest_first_without_those_moved_aside(tmp_path: Path):
    for step in (10, 2, 9):
        make_checkpoint(tmp_path, step)
    (tmp_path / "checkpoint-11.incomplete").mkdir()
    (tmp_path / "checkpoint-12").write_text("a file, not a checkpoint")
    assert [path.name for path in trainer_checkpoints(tmp_path)] == ["checkpoint-10", "checkpoint-9", "checkpoint-2"]
    assert trainer_checkpoints(tmp_path / "missing") == []


def test_latest_resumes_the_newest_checkpoint_of_the_same_run(tmp_path: Path):
    output = tmp_path / "run"
    assert resolve_checkpoint(output, None, fingerprint(tmp_path)) is None
    make_checkpoint(output, 2)
    make_checkpoint(output, 10)
    assert resolve_checkpoint(output, "latest", fingerprint(tmp_path, logging_steps=5)) == str(output / "checkpoint-10")


@pytest.mark.parametrize("resume", ["latest", None])
def test_a_run_with_another_configuration_is_refused(tmp_path: Path, resume):
    """Rerunning into a used output_dir with a new learning rate used to resume the old run (0 steps)."""
    output = tmp_path / "run"
    resolve_checkpoint(output, "latest", fingerprint(tmp_path))
    make_checkpoint(output, 4)
    with pytest.raises(
        StaleRunError, match=r"different configuration \(learning_rate: 0.0002 → 0.0001\).*new output_dir"
    ):
        resolve_checkpoint(output, resume, fingerprint(tmp_path, learning_rate=1e-4))
    assert (output / "checkpoint-4").is_dir()  # nothing was destroyed


def test_overwrite_starts_afresh_and_removes_the_old_run(tmp_path: Path):
    """Checkpoints of an earlier run used to survive a new run, and `latest` brought their weights back."""
    output = tmp_path / "run"
    resolve_checkpoint(output, "latest", fingerprint(tmp_path))
    make_checkpoint(output, 4)
    (output / "final").mkdir()
    (output / "metrics.json").write_text("{}")
    new = fingerprint(tmp_path, seed=1)
    assert resolve_checkpoint(output, "latest", new, overwrite=True, stale_outputs=["final", "metrics.json"]) is None
    assert sorted(path.name for path in output.iterdir()) == [RUN_RECORD_NAME]
    assert RunFingerprint.load(output) == new
    make_checkpoint(output, 2)
    assert resolve_checkpoint(output, "latest", new) == str(output / "checkpoint-2")


def test_starting_again_over_this_runs_checkpoints_needs_resume_or_overwrite(tmp_path: Path):
    output = tmp_path / "run"
    resolve_checkpoint(output, None, fingerprint(tmp_path))
    make_checkpoint(output, 3)
    with pytest.raises(StaleRunError, match="holds checkpoints of this run.*resume_from_checkpoint: latest"):
        resolve_checkpoint(output, None, fingerprint(tmp_path))
    assert resolve_checkpoint(output, None, fingerprint(tmp_path), overwrite=True) is None
    assert not (output / "checkpoint-3").exists()
    assert RunFingerprint.load(output) == fingerprint(tmp_path)


@pytest.mark.parametrize(
    ("broken", "problem"),
    [
        ({"state": False}, "no trainer_state.json"),
        ({"weights": False}, "no model weights"),
        ({"optimizer": False}, "no optimizer state"),
    ],
)
def test_an_incomplete_newest_checkpoint_falls_back_to_the_previous_one(tmp_path: Path, broken, problem, caplog):
    output = tmp_path / "run"
    resolve_checkpoint(output, None, fingerprint(tmp_path))
    make_checkpoint(output, 2)
    make_checkpoint(output, 4, **broken)
    assert checkpoint_problems(output / "checkpoint-4") == [problem]
    assert resolve_checkpoint(output, "latest", fingerprint(tmp_path)) == str(output / "checkpoint-2")
    assert (output / "checkpoint-4.incomplete").is_dir() and not (output / "checkpoint-4").exists()
    assert problem in caplog.text


def test_a_truncated_weights_file_makes_a_checkpoint_incomplete(tmp_path: Path):
    folder = make_checkpoint(tmp_path, 5)
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-10])  # killed while writing
    assert checkpoint_problems(folder) == ["a truncated model.safetensors"]


def test_checkpoints_without_a_record_are_not_resumed_blindly(tmp_path: Path):
    output = tmp_path / "run"
    make_checkpoint(output, 6)
    with pytest.raises(StaleRunError, match=r"holds the work of a run that recorded no settings \(checkpoint-6\)"):
        resolve_checkpoint(output, "latest", fingerprint(tmp_path))
    # Naming the checkpoint adopts it (with a warning), and records this run.
    assert resolve_checkpoint(output, output / "checkpoint-6", fingerprint(tmp_path)) == str(output / "checkpoint-6")
    assert resolve_checkpoint(output, "latest", fingerprint(tmp_path)) == str(output / "checkpoint-6")


def test_a_checkpoint_path_must_be_complete_and_of_this_run(tmp_path: Path):
    output = tmp_path / "run"
    resolve_checkpoint(output, None, fingerprint(tmp_path))
    make_checkpoint(output, 2)
    make_checkpoint(output, 4, optimizer=False)
    with pytest.raises(IncompleteCheckpointError, match="checkpoint-4 cannot be resumed: it has no optimizer state"):
        resolve_checkpoint(output, output / "checkpoint-4", fingerprint(tmp_path))
    with pytest.raises(FileNotFoundError, match="checkpoint-9' is not a checkpoint folder"):
        resolve_checkpoint(output, output / "checkpoint-9", fingerprint(tmp_path))
    with pytest.raises(StaleRunError, match="weight_decay: 0.0 → 0.1"):
        resolve_checkpoint(tmp_path / "new", output / "checkpoint-2", fingerprint(tmp_path, weight_decay=0.1))
    assert resolve_checkpoint(output, output / "checkpoint-2", fingerprint(tmp_path)) == str(output / "checkpoint-2")


def test_a_final_model_of_another_configuration_is_work_not_to_replace(tmp_path: Path):
    """A finished run without checkpoints (save_strategy no) still holds its final model."""
    output = tmp_path / "run"
    resolve_checkpoint(output, None, fingerprint(tmp_path), stale_outputs=["final"])
    (output / "final").mkdir()
    with pytest.raises(StaleRunError, match="seed: 42 → 3"):
        resolve_checkpoint(output, None, fingerprint(tmp_path, seed=3), stale_outputs=["final"])
    assert resolve_checkpoint(output, None, fingerprint(tmp_path), stale_outputs=["final"]) is None  # same run


def test_a_record_without_work_is_replaced(tmp_path: Path):
    """A run that failed before its first checkpoint leaves nothing to protect."""
    output = tmp_path / "run"
    resolve_checkpoint(output, "latest", fingerprint(tmp_path), stale_outputs=["final"])
    assert resolve_checkpoint(output, "latest", fingerprint(tmp_path, seed=3), stale_outputs=["final"]) is None
    assert RunFingerprint.load(output) == fingerprint(tmp_path, seed=3)
