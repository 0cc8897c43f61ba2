"""The paper-scale setting (issue 17) on CPU: the 7B recipe chain connects (adaptation writes the folder fine-tuning
reads; a missing local folder is an error, never a Hub id), full fine-tuning leaves the untied LM head alone (so
DDP does not fail on unused parameters), and fine-tuning chooses its attention kernel."""

from __future__ import annotations

import importlib.util
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from transformers import TrainerCallback

import llara_st
from llara_st.model import llara_module
from llara_st.training.adaptation import parse_adaptation_arguments, run_adaptation
from llara_st.training.checkpoints import StaleRunError
from llara_st.training.finetuning import load_finetune_model, parse_finetune_arguments, run_finetuning

REPO_ROOT = Path(__file__).resolve().parents[2]
CONFIGS_DIR = REPO_ROOT / "recipes" / "configs"
FINETUNE_RECIPE = REPO_ROOT / "recipes" / "finetune.py"
ADAPT_RECIPE = REPO_ROOT / "recipes" / "adapt.py"
ADAPT_7B = CONFIGS_DIR / "adapt_llama2_7b_8gpu.yaml"
FINETUNE_7B = CONFIGS_DIR / "finetune_llama2_7b_msmarco_8gpu.yaml"

_WORDS = (
    "river storm morning field water farmer animal ground library budget committee bicycle chain wheel "
    "rider road sugar plant light energy tide moon volcano honeybee glacier"
).split()


def _sentence(rng: random.Random, words: int = 12) -> str:
    return " ".join(rng.choice(_WORDS) for _ in range(words)).capitalize() + " ."


def write_wikitext(path: Path, articles: int = 6) -> Path:
    """A tiny file in WikiText-103's raw layout: `` = Title = `` headings, paragraphs, blank lines."""
    rng = random.Random(0)
    lines = [""]
    for index in range(articles):
        lines += [f" = Article {index} = ", ""]
        for _ in range(3):
            lines += [" " + " ".join(_sentence(rng) for _ in range(3)), ""]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf8")
    return path


def write_hard_negative_rows(path: Path, queries: int = 8, negatives: int = 15) -> Path:
    """The authors' ``{"query", "pos", "neg"}`` rows, as the fine-tuning config reads them."""
    rng = random.Random(1)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf8") as handle:
        for index in range(queries):
            row = {
                "query": f"what about the {_WORDS[index]}",
                "pos": [_sentence(rng)],
                "neg": [_sentence(rng) for _ in range(negatives)],
            }
            handle.write(json.dumps(row) + "\n")
    return path


def run_two_processes(recipe: Path, config: dict, config_path: Path) -> subprocess.CompletedProcess:
    """``torchrun --nproc_per_node 2 recipe config`` on CPU (gloo), this worktree's package first on the path."""
    config_path.write_text(json.dumps(config))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), env.get("PYTHONPATH", "")])
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    return subprocess.run(
        [*command, str(recipe), str(config_path)], env=env, capture_output=True, text=True, timeout=600
    )


def head_weight(model) -> torch.Tensor:
    return llara_module(model, required=True).causal_lm.get_output_embeddings().weight


# ---------------------------------------------------------------------------------------------- the chain


def test_7b_configs_connect():
    """Regression (issue 17, item 1): fine-tuning read models/llara-llama2-7b-adapted, which nothing writes."""
    raw_adapt = yaml.safe_load(ADAPT_7B.read_text()) | {"use_cpu": True}
    (adaptation,) = parse_adaptation_arguments(raw_adapt)
    (finetune,) = parse_finetune_arguments(FINETUNE_7B)
    written = Path(adaptation.final_model_dir or Path(adaptation.output_dir) / "final")
    assert os.path.normpath(finetune.model_name_or_path) == os.path.normpath(written)
    # Local-looking (./...), so a missing folder is an error rather than a Hub lookup.
    assert finetune.model_name_or_path.startswith("./") and adaptation.model_name_or_path.startswith("./")


@pytest.mark.parametrize("name", ["./outputs/never-adapted/final", "outputs/run/final"])
def test_a_missing_local_model_folder_is_an_error_naming_it(name: str, tmp_path: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "outputs" / "run").mkdir(parents=True)  # an existing parent: the name is a local path
    (args,) = parse_finetune_arguments(
        {"model_name_or_path": name, "output_dir": "ft", "train_data": "rows.jsonl", "report_to": "none"}
    )
    with pytest.raises(FileNotFoundError, match=name.replace(".", r"\.")):
        run_finetuning(args)
    assert not (tmp_path / "ft").exists()  # refused before anything was written or loaded
    adapt_settings = {"model_name_or_path": name, "text_paths": ["t.txt"], "output_dir": "ad", "report_to": "none"}
    with pytest.raises(FileNotFoundError, match=name.replace(".", r"\.")):
        run_adaptation(*parse_adaptation_arguments(adapt_settings))


@pytest.mark.slow
def test_tiny_chain_through_the_7b_configs(tiny_llama_dir: Path, tmp_path: Path, monkeypatch):
    """Issue 17's "done when": tiny adaptation → tiny fine-tuning from its output, with the 7B configs' keys and
    paths (data files where the configs read them, the adaptation's output folder) and the model swapped."""
    monkeypatch.chdir(tmp_path)
    adapt_raw = yaml.safe_load(ADAPT_7B.read_text())
    finetune_raw = yaml.safe_load(FINETUNE_7B.read_text())
    for wikitext in adapt_raw["wikitext_paths"]:
        write_wikitext(Path(wikitext))
    write_hard_negative_rows(Path(finetune_raw["train_data"]))
    llara_st.convert(str(tiny_llama_dir), adapt_raw["model_name_or_path"])  # `llara-st convert ...` of the comment

    cpu = {"bf16": False, "fp16": False, "use_cpu": True, "max_steps": 1, "disable_tqdm": True}
    adapt_settings = adapt_raw | cpu | {"eval_rows": 2, "dataloader_num_workers": 0, "per_device_eval_batch_size": 2}
    adapted = run_adaptation(*parse_adaptation_arguments(adapt_settings))
    assert os.path.samefile(adapted, finetune_raw["model_name_or_path"])

    finetune_settings = finetune_raw | cpu | {"model_dtype": "float32", "lora_r": 4, "per_device_train_batch_size": 2}
    assert "model_name_or_path" not in set(cpu) | {"model_dtype", "lora_r", "per_device_train_batch_size"}
    (args,) = parse_finetune_arguments(finetune_settings)
    final = run_finetuning(args)
    assert os.path.samefile(final, Path(finetune_raw["output_dir"]) / "final")
    embeddings = llara_st.load(final, device="cpu").encode_query(["what about the river"])
    assert embeddings.shape == (1, 64)


# ---------------------------------------------------------------------------------------------- the LM head


class RecordTrainable(TrainerCallback):
    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self.trainable = {name for name, parameter in model.named_parameters() if parameter.requires_grad}


def test_full_finetuning_leaves_the_untied_head_untouched(tiny_llara_dir: Path, tmp_path: Path):
    """Regression (issue 17, item 3): the unused lm_head was trainable, and DDP failed at step 2 on it."""
    source = llara_st.load(tiny_llara_dir, device="cpu")
    assert head_weight(source) is not llara_module(source).causal_lm.get_input_embeddings().weight
    rows = write_hard_negative_rows(tmp_path / "rows.jsonl", negatives=1)
    (args,) = parse_finetune_arguments(
        {
            "model_name_or_path": str(tiny_llara_dir),
            "output_dir": str(tmp_path / "ft"),
            "train_data": str(rows),
            "group_size": 2,
            "lora": False,
            "max_steps": 1,
            "learning_rate": 1e-2,
            "warmup_steps": 0,
            "per_device_train_batch_size": 4,
            "report_to": "none",
            "disable_tqdm": True,
        }
    )
    recorder = RecordTrainable()
    trained = llara_st.load(run_finetuning(args, callbacks=[recorder]), device="cpu")
    assert not any("lm_head" in name for name in recorder.trainable)
    assert any("embed_tokens" in name for name in recorder.trainable)  # the rest of the model trains
    assert torch.equal(head_weight(trained), head_weight(source))
    input_embeddings = llara_module(trained).causal_lm.get_input_embeddings().weight
    assert not torch.equal(input_embeddings, llara_module(source).causal_lm.get_input_embeddings().weight)


def test_a_tied_head_stays_trainable(tied_llara_dir: Path, tmp_path: Path):
    from llara_st.training.finetuning import freeze_output_head

    model = llara_st.load(tied_llara_dir, device="cpu")
    assert not freeze_output_head(model)
    assert head_weight(model).requires_grad


@pytest.mark.slow
def test_two_process_full_finetuning_of_an_untied_model_runs(tiny_llara_dir: Path, tmp_path: Path):
    """Two gloo processes, full fine-tuning, ddp_find_unused_parameters left off: before the head was frozen,
    step 2 failed with "Expected to have finished reduction ... parameters that were not used"."""
    rows = write_hard_negative_rows(tmp_path / "rows.jsonl", queries=12, negatives=1)
    config = {
        "model_name_or_path": str(tiny_llara_dir),
        "output_dir": str(tmp_path / "two"),
        "train_data": str(rows),
        "group_size": 2,
        "lora": False,
        "gather_across_devices": True,
        "max_steps": 3,
        "per_device_train_batch_size": 2,
        "learning_rate": 1e-3,
        "logging_steps": 1,
        "save_strategy": "no",
        "report_to": "none",
        "use_cpu": True,
        "disable_tqdm": True,
    }
    result = run_two_processes(FINETUNE_RECIPE, config, tmp_path / "two.json")
    assert result.returncode == 0, result.stderr[-4000:]
    history = json.loads((tmp_path / "two" / "trainer_state.json").read_text())["log_history"]
    assert [entry["step"] for entry in history if "loss" in entry] == [1, 2, 3]
    trained = llara_st.load(tmp_path / "two" / "final", device="cpu")
    assert torch.equal(head_weight(trained), head_weight(llara_st.load(tiny_llara_dir, device="cpu")))


@pytest.mark.slow
@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
def test_two_process_finetuning_trains_like_one_at_the_same_global_batch(
    lora: bool, tiny_llara_dir: Path, tmp_path: Path
):
    """2 processes x 2 queries with cross-device negatives = 1 process x 4 queries: the same rows per step (one
    seeded order, consecutive batches dealt to the processes), every query against all 8 passages of the step,
    all-reduced gradients; SGD keeps rounding differences rounding-sized."""
    rows = write_hard_negative_rows(tmp_path / "rows.jsonl", queries=12, negatives=1)
    common = {
        "model_name_or_path": str(tiny_llara_dir),
        "train_data": str(rows),
        "group_size": 2,
        "lora": lora,
        "lora_r": 4,
        "lora_dropout": 0.0,
        "gather_across_devices": True,
        "batch_sampler": "batch_sampler",
        "optim": "sgd",
        "learning_rate": 1e-3,
        "warmup_steps": 0,
        "lr_scheduler_type": "constant",
        "max_steps": 3,
        "logging_steps": 1,
        "save_strategy": "no",
        "report_to": "none",
        "use_cpu": True,
        "seed": 5,
        "disable_tqdm": True,
    }
    two = common | {"output_dir": str(tmp_path / "two"), "per_device_train_batch_size": 2}
    result = run_two_processes(FINETUNE_RECIPE, two, tmp_path / "two.json")
    assert result.returncode == 0, result.stderr[-4000:]
    recorder = RecordLosses()
    (one,) = parse_finetune_arguments(common | {"output_dir": str(tmp_path / "one"), "per_device_train_batch_size": 4})
    run_finetuning(one, callbacks=[recorder])
    history = json.loads((tmp_path / "two" / "trainer_state.json").read_text())["log_history"]
    two_losses = [entry["loss"] for entry in history if "loss" in entry]
    assert len(recorder.losses) == 3 and len(two_losses) == 3
    assert two_losses == pytest.approx(recorder.losses, rel=1e-4)
    texts = ["what about the river", "Storm field water ."]
    one_model = llara_st.load(tmp_path / "one" / "final", device="cpu")
    two_model = llara_st.load(tmp_path / "two" / "final", device="cpu")
    torch.testing.assert_close(
        two_model.encode_query(texts, convert_to_tensor=True),
        one_model.encode_query(texts, convert_to_tensor=True),
        atol=1e-5,
        rtol=1e-4,
    )


class RecordLosses(TrainerCallback):
    def __init__(self) -> None:
        self.losses: list[float] = []

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "loss" in logs:
            self.losses.append(float(logs["loss"]))


# ---------------------------------------------------------------------------------------------- attention


@pytest.mark.parametrize("kernel", ["eager", "sdpa"])
def test_finetuning_chooses_the_attention_kernel(kernel: str, tiny_llara_dir: Path, tmp_path: Path):
    """Regression (issue 17, item 4): attn_implementation was an unknown key of the fine-tuning config."""
    (args,) = parse_finetune_arguments(
        {"model_name_or_path": str(tiny_llara_dir), "output_dir": str(tmp_path), "attn_implementation": kernel}
    )
    model = load_finetune_model(args)
    assert llara_module(model).causal_lm.config._attn_implementation == kernel


# ---------------------------------------------------------------------------------------------- DeepSpeed


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("deepspeed") is None, reason="DeepSpeed is not installed")
def test_deepspeed_zero1_adaptation_on_two_cpu_processes_trains_like_one(
    tiny_llara_dir: Path, adaptation_jsonl: Path, tmp_path: Path
):
    """recipes/configs/deepspeed_zero1.json on 2 CPU processes (DeepSpeed's CPU accelerator, gloo): the trainer's
    AdamW and linear warm-up/decay (no FusedAdam to compile, no WarmupDecayLR's logarithmic warm-up), and the
    same losses and learning rates as one process without DeepSpeed at the same global batch."""
    common = {
        "model_name_or_path": str(tiny_llara_dir),
        "llara_jsonl_paths": [str(adaptation_jsonl)],
        "shuffle": False,
        "cutoff_length": 48,
        "max_steps": 4,
        "learning_rate": 1e-3,
        "warmup_steps": 2,
        "lr_scheduler_type": "linear",
        "logging_steps": 1,
        "save_strategy": "no",
        "report_to": "none",
        "use_cpu": True,
        "seed": 3,
        "disable_tqdm": True,
    }
    two = common | {
        "output_dir": str(tmp_path / "zero1"),
        "per_device_train_batch_size": 2,
        "deepspeed": str(CONFIGS_DIR / "deepspeed_zero1.json"),
    }
    result = run_two_processes(ADAPT_RECIPE, two, tmp_path / "zero1.json")
    assert result.returncode == 0, result.stderr[-4000:]
    zero1 = json.loads((tmp_path / "zero1" / "trainer_state.json").read_text())["log_history"]

    (tmp_path / "one").mkdir()
    run_adaptation(
        *parse_adaptation_arguments(common | {"output_dir": str(tmp_path / "one"), "per_device_train_batch_size": 4})
    )
    one = json.loads((tmp_path / "one" / "trainer_state.json").read_text())["log_history"]

    def logged(history: list[dict], key: str) -> list[float]:
        return [float(entry[key]) for entry in history if "loss" in entry]

    # Linear warm-up over 2 steps, then linear decay to 0 at step 4 (the lr each step used).
    assert logged(zero1, "learning_rate") == pytest.approx([0.0, 5e-4, 1e-3, 5e-4])
    assert logged(zero1, "learning_rate") == pytest.approx(logged(one, "learning_rate"))
    assert logged(zero1, "loss") == pytest.approx(logged(one, "loss"), rel=1e-4)


# ---------------------------------------------------------------------------------------------- resuming


def test_resuming_under_another_world_size_is_refused(tiny_llara_dir: Path, tmp_path: Path, monkeypatch):
    """Regression (issue 17, item 7): a checkpoint of a 1-process run was resumed by 2 processes (another global
    batch) without a word."""
    rows = write_hard_negative_rows(tmp_path / "rows.jsonl", negatives=1)
    settings = {
        "model_name_or_path": str(tiny_llara_dir),
        "output_dir": str(tmp_path / "ft"),
        "train_data": str(rows),
        "group_size": 2,
        "lora_r": 4,
        "max_steps": 1,
        "save_steps": 1,
        "per_device_train_batch_size": 4,
        "report_to": "none",
        "disable_tqdm": True,
    }
    (args,) = parse_finetune_arguments(settings)
    assert args.world_size == 1
    run_finetuning(args)
    (resumed,) = parse_finetune_arguments(settings | {"max_steps": 2, "resume_from_checkpoint": "latest"})
    monkeypatch.setattr(type(resumed), "world_size", property(lambda self: 2))
    with pytest.raises(StaleRunError, match="world_size: 1 → 2"):
        run_finetuning(resumed)
