"""The guards inside the adaptation and fine-tuning workflows (issue 11.6-11.8), end to end on the tiny model:
a rerun with other settings into a used output_dir is refused (it used to train 0 steps and re-save the old
model, or bring old checkpoints back), a diverging run stops, a collapsed model is not saved, empty rows are
refused; and on 2 gloo processes (issue 17, item 7), run by torchrun with this file as the script: one process's
failed guard stops both, only the main process writes a checkpoint's model files, eval_loss is exact."""

from __future__ import annotations

import contextlib
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from datasets import Dataset
from safetensors.torch import load_file
from sentence_transformers import SentenceTransformerTrainer

import llara_st
from llara_st.data import InvalidTrainingRowsError
from llara_st.folders import FolderNotOursError
from llara_st.modules import LastKPooling
from llara_st.training.adaptation import parse_adaptation_arguments, run_adaptation
from llara_st.training.checkpoints import RunFingerprint, StaleRunError, checkpoint_problems, path_identity
from llara_st.training.finetuning import run_finetuning
from llara_st.training.guards import (
    DegenerateEmbeddingsError,
    TrainingDivergedError,
    save_trained_model,
    train_with_guards,
)
from tests.conftest import build_tiny_llama

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
        "resume_from_checkpoint": "latest",
    }
    settings.update(overrides)
    final = run_adaptation(*parse_adaptation_arguments(settings))
    return final, json.loads((output_dir / "trainer_state.json").read_text())


@contextlib.contextmanager
def one_thread():
    """Torch on one thread: the thread count changes the last bits of a chaotic run."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def collapsing_llara_dir(tiny_llama_dir: Path, tmp_path_factory) -> Path:
    """training_llara_dir's model, converted from a fixed seed on one thread. The lr-1e3 runs are chaotic (a last-bit
    change ends them at NaN instead of collapsing) and the prompt tokens' new rows are drawn from the global RNG, which
    earlier tests move: the collapse tests train this model on one thread, as test_a_collapsed_model_is_refused does."""
    out = tmp_path_factory.mktemp("collapsing") / "llara"
    with one_thread(), torch.random.fork_rng():
        torch.manual_seed(1)  # (from seed 0 these runs end at NaN)
        llara_st.convert(str(tiny_llama_dir), out, query_max_length=32, passage_max_length=48)
    return out


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
    collapsing_llara_dir: Path, contrastive_rows: Dataset, tmp_path, finetune_args, monkeypatch, main_process: bool
):
    """lr 1e3 used to save a model that embeds every text as zeros. A process other than the main one (simulated)
    catches it too: the probe is a collective forward under ZeRO-3, so every process must run it."""
    if not main_process:
        monkeypatch.setattr(SentenceTransformerTrainer, "is_world_process_zero", lambda self: False)
    output = tmp_path / "run"
    with one_thread(), pytest.raises(DegenerateEmbeddingsError, match="collapsed"):
        run_finetuning(
            finetune_args(collapsing_llara_dir, output, learning_rate=1e3, max_steps=4, save_strategy="no"),
            train_dataset=contrastive_rows,
        )
    assert not (output / "final").exists()


def test_adaptation_with_lora_trains_the_model_it_is_given_not_an_earlier_runs_base(
    tiny_llama_dir: Path, adaptation_rows: Path, tmp_path: Path
):
    """A causal LM converted for LoRA (output_dir/base-llara) used to be reused by a later run on another model."""
    other = build_tiny_llama(tmp_path / "other_lm", tiny_llama_dir, seed=1)  # same shape, other weights
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
    collapsing_llara_dir: Path, contrastive_rows: Dataset, tmp_path, finetune_args
):
    """Issue 16.9: the checkpoints of a collapsed run stayed on disk and loaded with all-zero embeddings."""
    output = tmp_path / "run"
    with one_thread(), pytest.raises(DegenerateEmbeddingsError, match="collapsed"):
        run_finetuning(
            finetune_args(collapsing_llara_dir, output, learning_rate=1e3, max_steps=4, save_steps=2),
            train_dataset=contrastive_rows,
        )
    checkpoints = sorted(output.glob("checkpoint-*"))
    assert [path.name for path in checkpoints] == ["checkpoint-2", "checkpoint-4"]
    for checkpoint in checkpoints:
        with pytest.raises(ValueError, match="collapsed"):
            llara_st.load(checkpoint, trust_remote_code=True)  # the one way a trainer checkpoint loaded


# ---------------------------------------------------------------------------------------------- 2 processes

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def two_processes(training_llara_dir: Path, tmp_path_factory) -> dict:
    """Each process's results of :func:`two_process_scenarios`, run once by ``torchrun --nproc_per_node 2`` on the
    CPU (gloo), this worktree's package first on the path."""
    root = tmp_path_factory.mktemp("two_processes")
    config = root / "config.json"
    config.write_text(json.dumps({"model": str(training_llara_dir), "root": str(root)}))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), env.get("PYTHONPATH", "")])
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", __file__]
    result = subprocess.run([*command, str(config)], env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    return {"root": root, **{rank: json.loads((root / f"results-{rank}.json").read_text()) for rank in (0, 1)}}


@pytest.mark.slow
def test_only_the_main_process_writes_a_checkpoints_model_files(two_processes):
    """Regression: sentence-transformers' _save, which transformers 5 calls on every process, let process 1 rewrite
    modules.json, the configs, the tokenizer and training_args.bin inside every checkpoint-N."""
    # Files opened for writing from Python (torch.save's writer, e.g. of process 1's own rng_state_1.pth, is not seen).
    assert "checkpoint-1/modules.json" in two_processes[0]["checkpoint_writes"]
    assert two_processes[1]["checkpoint_writes"] == []
    assert checkpoint_problems(two_processes["root"] / "checkpoint_run" / "checkpoint-1") == []


@pytest.mark.slow
def test_an_infinite_loss_on_one_process_stops_both_before_the_step(two_processes):
    """Regression: process 1 raised alone; process 0 applied the step and saved checkpoint-1 before the next
    collective failed."""
    assert two_processes[1]["divergence"].startswith("training diverged at step 1: the loss is inf.")
    assert two_processes[0]["divergence"].startswith(
        "training diverged at step 1: the loss is inf (found by process 1)"
    )
    assert not list((two_processes["root"] / "diverging").glob("checkpoint-*"))


@pytest.mark.slow
def test_a_probe_failing_on_one_process_stops_both_before_the_main_one_saves(two_processes):
    """Regression: a collapsed probe on process 1 raised there, and process 0 saved the model anyway."""
    assert "collapsed" in two_processes[1]["probe"] and "found by process" not in two_processes[1]["probe"]
    assert "collapsed" in two_processes[0]["probe"] and two_processes[0]["probe"].endswith("(found by process 1)")
    assert not (two_processes["root"] / "probe" / "final").exists()


@pytest.mark.slow
def test_eval_loss_over_processes_is_the_mean_over_the_rows_or_refused(two_processes):
    """4 held-out rows on 2 processes × 2 per batch give the 4-row eval_loss of one batch; 3 rows would be padded
    with a repeated row, and are refused before training."""
    for rank in (0, 1):
        assert two_processes[rank]["eval_loss"] == pytest.approx(two_processes[rank]["eval_loss_of_one_batch"], 1e-5)
        assert two_processes[rank]["three_eval_rows"].startswith(
            "3 evaluation rows (eval_rows) cannot be shared by 2 processes in whole batches of "
            "per_device_eval_batch_size 2"
        )


class InfiniteOnThisProcess(torch.nn.Module):
    """A loss plus infinity on this process only: its gradients stay finite, only the loss value shows it."""

    def __init__(self, loss: torch.nn.Module, infinite: bool) -> None:
        super().__init__()
        self.loss, self.model, self.infinite = loss, loss.model, infinite

    def forward(self, features, labels):
        value = self.loss(features, labels)
        return value + float("inf") if self.infinite else value


def two_process_scenarios(config_path: str) -> None:
    """What each of the two processes runs (this file is torchrun's script): four short runs on the tiny model, each
    failure caught and recorded, so that every process reaches the end and writes ``results-{rank}.json``."""
    from sentence_transformers import SentenceTransformerTrainingArguments

    from llara_st.errors import LLaRAUserError
    from llara_st.losses import EBAEEBARDataCollator, EBAEEBARLoss, contrastive_loss
    from llara_st.model import llara_module

    config = json.loads(Path(config_path).read_text())
    root, rank = Path(config["root"]), int(os.environ["RANK"])  # (the trainer's arguments start the process group)
    results: dict = {}
    topics = ["volcano", "honeybee", "glacier", "saxophone", "telescope", "origami", "penguin", "cactus"]
    rows = Dataset.from_dict(
        {
            "anchor": [f"about the {topic}" for topic in topics],
            "positive": [f"The {topic} passage." for topic in topics],
        }
    )
    mapping = {"anchor": "query", "positive": "document"}

    def args(output: str, **overrides) -> SentenceTransformerTrainingArguments:
        settings = {
            "output_dir": str(root / output), "max_steps": 1, "per_device_train_batch_size": 2, "learning_rate": 1e-4,
            "save_strategy": "no", "report_to": "none", "use_cpu": True, "disable_tqdm": True, "seed": 3,
            "ddp_timeout": 120, "router_mapping": mapping,
        }  # fmt: skip
        return SentenceTransformerTrainingArguments(**(settings | overrides))

    def model():
        return llara_st.load(config["model"], device="cpu")

    # 1. Which files of checkpoint-1 each process opens for writing.
    writes: set[str] = set()
    watched = str(root / "checkpoint_run")

    def audit(event: str, arguments: tuple) -> None:
        if event == "open" and isinstance(arguments[0], str | os.PathLike):
            path = os.fspath(arguments[0])
            written = arguments[2] & (os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND)
            if written and path.startswith(watched) and "checkpoint-" in path:
                writes.add(os.path.relpath(path, watched))

    sys.addaudithook(audit)
    trained = model()
    train_with_guards(
        trained, args("checkpoint_run", save_strategy="steps", save_steps=1), rows, contrastive_loss(trained)
    )
    watched = "/nowhere/"  # an audit hook stays for the life of the process
    results["checkpoint_writes"] = sorted(writes)

    # 2. A loss that is infinite on process 1 only.
    diverging = model()
    loss = InfiniteOnThisProcess(contrastive_loss(diverging), infinite=rank == 1)
    try:
        train_with_guards(diverging, args("diverging", save_strategy="steps", save_steps=1, max_steps=2), rows, loss)
        results["divergence"] = None
    except TrainingDivergedError as error:
        results["divergence"] = str(error)

    # 3. A probe that collapses on process 1 only.
    probed = model()
    trainer = train_with_guards(probed, args("probe"), rows, contrastive_loss(probed))
    if rank == 1:
        with torch.no_grad():
            llara_module(probed).causal_lm.get_input_embeddings().weight.zero_()
    try:
        save_trained_model(trainer, lambda: probed.save(str(root / "probe" / "final")))
        results["probe"] = None
    except DegenerateEmbeddingsError as error:
        results["probe"] = str(error)

    # 4. eval_loss over 4 held-out adaptation rows (every row cut to the same 9 text tokens), and 3 rows refused.
    adapted = model()
    rng = random.Random(0)
    texts = [" ".join(rng.choice(WORDS) for _ in range(20)) for _ in range(16)]
    pairs = Dataset.from_dict({"text": texts[:8], "next_text": texts[8:]})
    collator, adaptation = EBAEEBARDataCollator(adapted, cutoff_length=48), EBAEEBARLoss(adapted)
    training, held_out = pairs.select(range(4)), pairs.select(range(4, 8))
    evaluated = args("eval", router_mapping={}, per_device_eval_batch_size=2, ddp_find_unused_parameters=False)
    trainer = train_with_guards(adapted, evaluated, training, adaptation, eval_dataset=held_out, data_collator=collator)
    results["eval_loss"] = trainer.evaluate()["eval_loss"]
    adapted.eval()
    with torch.no_grad():  # the 4 rows as one batch, on this process alone
        features, labels = trainer.collect_features(collator(list(held_out)))
        results["eval_loss_of_one_batch"] = float(sum(EBAEEBARLoss(adapted)(features, labels).values()))
    try:
        three = held_out.select(range(3))
        train_with_guards(adapted, evaluated, training, adaptation, eval_dataset=three)
        results["three_eval_rows"] = None
    except LLaRAUserError as error:
        results["three_eval_rows"] = str(error)

    (root / f"results-{rank}.json").write_text(json.dumps(results))


if __name__ == "__main__":
    two_process_scenarios(sys.argv[1])
