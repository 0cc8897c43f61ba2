"""Training guards: a run whose loss or gradients go non-finite stops with an error, and a model whose embeddings
are non-finite or collapsed is never saved (issue 11.7). Empty rows (issue 11.8): tests/data/test_contrastive.py."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from datasets import Dataset
from sentence_transformers import SentenceTransformerTrainer
from sentence_transformers.sentence_transformer.training_args import SentenceTransformerTrainingArguments
from torch import nn
from transformers import TrainerControl, TrainerState, TrainingArguments

import llara_st
from llara_st.data.contrastive import contrastive_router_mapping
from llara_st.errors import LLaRAUserError
from llara_st.losses import contrastive_loss
from llara_st.training.guards import (
    DegenerateEmbeddingsError,
    DivergenceCallback,
    TrainingDivergedError,
    check_eval_split,
    check_probe_embeddings,
    first_problem_of_any_process,
)


def train(model, rows: Dataset, output_dir: Path, learning_rate: float, callbacks=None, loss=None, **overrides):
    loss = loss or contrastive_loss(model)
    args = SentenceTransformerTrainingArguments(
        output_dir=str(output_dir),
        max_steps=overrides.pop("max_steps", 6),
        per_device_train_batch_size=4,
        learning_rate=learning_rate,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        disable_tqdm=True,
        router_mapping=contrastive_router_mapping(rows.column_names),
        **overrides,
    )
    trainer = SentenceTransformerTrainer(
        model=model, args=args, train_dataset=rows, loss=loss, callbacks=[c(loss) for c in callbacks or []]
    )
    trainer.train()
    return trainer


def weights_finite(model) -> bool:
    return all(bool(torch.isfinite(parameter).all()) for parameter in model.parameters())


def test_without_the_guard_a_nan_run_logs_a_finite_loss(training_llara, contrastive_rows, tmp_path: Path):
    """Why the callback reads gradients: the trainer hides the NaN loss of a diverged run from its logs."""
    trainer = train(training_llara, contrastive_rows, tmp_path / "run", learning_rate=1e12)
    assert not weights_finite(training_llara)
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    assert all(math.isfinite(loss) for loss in losses)


def test_a_diverging_run_stops_with_a_clear_error_before_the_nan_update(
    training_llara, contrastive_rows, tmp_path: Path
):
    """lr 1e12 used to train to all-NaN weights, log loss 0.0 and exit normally."""
    with pytest.raises(TrainingDivergedError, match=r"training diverged at step \d+: the loss is nan.*learning rate"):
        train(training_llara, contrastive_rows, tmp_path / "run", 1e12, callbacks=[DivergenceCallback])


def test_a_healthy_run_is_not_stopped(training_llara, contrastive_rows, tmp_path: Path):
    trainer = train(training_llara, contrastive_rows, tmp_path / "run", 1e-4, callbacks=[DivergenceCallback])
    assert trainer.state.global_step == 6
    assert weights_finite(training_llara)


def _step(callback: DivergenceCallback, model: nn.Module, **args) -> None:
    training_args = TrainingArguments(output_dir="unused", report_to="none", use_cpu=True, **args)
    state, control = TrainerState(), TrainerControl()
    callback.on_train_begin(training_args, state, control, model=model)
    callback.on_pre_optimizer_step(training_args, state, control, model=model)


def test_a_non_finite_gradient_is_named():
    layer = nn.Linear(3, 2)
    layer.weight.grad = torch.tensor([[0.0, float("inf"), 0.0], [0.0, 0.0, 0.0]])
    layer.bias.grad = torch.zeros(2)
    with pytest.raises(TrainingDivergedError, match=r"at step 1: the gradient is not finite in weight"):
        _step(DivergenceCallback(), layer)


def test_fp16_overflow_steps_are_tolerated_up_to_the_patience():
    layer = nn.Linear(3, 2)
    layer.weight.grad = torch.full((2, 3), float("nan"))
    callback = DivergenceCallback(fp16_patience=2)
    args = TrainingArguments(output_dir="unused", report_to="none", use_cpu=True)
    args.fp16 = True  # the gradient scaler skips an overflowing step; a run that keeps overflowing is stopped
    state, control = TrainerState(), TrainerControl()
    callback.on_pre_optimizer_step(args, state, control, model=layer)
    callback.on_pre_optimizer_step(args, state, control, model=layer)
    with pytest.raises(TrainingDivergedError, match="3 steps in a row under fp16"):
        callback.on_pre_optimizer_step(args, state, control, model=layer)


def test_an_infinite_loss_with_finite_gradients_is_caught_through_the_loss_module():
    class InfiniteLoss(nn.Module):
        def forward(self, logits):
            return torch.logsumexp(logits, 0) - logits[0] + torch.tensor(float("inf"))

    loss, layer = InfiniteLoss(), nn.Linear(3, 2)
    callback = DivergenceCallback(loss)
    args, state, control = TrainingArguments(output_dir="unused", report_to="none"), TrainerState(), TrainerControl()
    callback.on_train_begin(args, state, control, model=layer)
    loss(layer(torch.ones(3))).backward()
    assert all(bool(torch.isfinite(parameter.grad).all()) for parameter in layer.parameters())
    with pytest.raises(TrainingDivergedError, match="the loss is inf"):
        callback.on_pre_optimizer_step(args, state, control, model=layer)


def test_a_non_finite_logged_value_stops_the_run():
    callback = DivergenceCallback()
    args, state, control = TrainingArguments(output_dir="unused", report_to="none"), TrainerState(), TrainerControl()
    callback.on_log(args, state, control, logs={"loss": 0.5, "grad_norm": 1.0, "learning_rate": 1e-4})
    with pytest.raises(TrainingDivergedError, match="the logged eval_loss is nan"):
        callback.on_log(args, state, control, logs={"eval_loss": float("nan")})


def test_one_process_keeps_its_own_verdict():
    """The verdicts of several processes are shared in tests/training/test_guards_in_training.py (2 processes)."""
    assert first_problem_of_any_process(None) is None
    assert first_problem_of_any_process("the loss is inf") == "the loss is inf"


@pytest.mark.parametrize(("rows", "processes", "refused"), [(3, 1, False), (8, 2, False), (6, 2, True), (2, 2, True)])
def test_held_out_rows_must_split_into_whole_batches_over_the_processes(rows, processes, refused, monkeypatch):
    """Issue 17, item 7: eval_loss vanished or was biased when eval_rows was below or not a multiple of processes ×
    per_device_eval_batch_size; one process takes any number."""
    args = TrainingArguments(output_dir="unused", report_to="none", use_cpu=True, per_device_eval_batch_size=2)
    monkeypatch.setattr(type(args), "world_size", property(lambda self: processes))
    eval_rows = Dataset.from_dict({"text": ["t"] * rows, "next_text": ["n"] * rows})
    if not refused:
        check_eval_split(eval_rows, args)
        check_eval_split({"dev": eval_rows}, args)
        return
    message = rf"{rows} evaluation rows \(eval_rows\) cannot be shared by 2 processes .* a multiple of 4"
    with pytest.raises(LLaRAUserError, match=message):
        check_eval_split(eval_rows, args)
    with pytest.raises(LLaRAUserError, match=message):
        check_eval_split({"dev": eval_rows}, args)


# ---------------------------------------------------------------------------------------------- save guard


def test_a_trained_model_passes_the_probe(training_llara):
    embeddings = check_probe_embeddings(training_llara)
    assert embeddings.shape[0] == 16 and bool(torch.isfinite(embeddings).all())


def test_a_collapsed_model_is_refused(tiny_llama_dir, contrastive_rows, tmp_path: Path):
    """lr 1e3 used to save a model that embeds every text as the zero vector. The run is chaotic (a last-bit change
    ends it at NaN instead), so its model is converted here from a fixed seed (the prompt tokens' new rows are drawn
    from the global RNG, which earlier tests move) and converted and trained on one thread (the thread count
    changes the last bits)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.random.fork_rng():
            torch.manual_seed(0)
            llara_st.convert(str(tiny_llama_dir), tmp_path / "llara", query_max_length=32, passage_max_length=48)
        model = llara_st.load(tmp_path / "llara", device="cpu")
        train(model, contrastive_rows, tmp_path / "run", learning_rate=1e3)
        with pytest.raises(DegenerateEmbeddingsError, match="all zero query embeddings: the model has collapsed"):
            check_probe_embeddings(model)
    finally:
        torch.set_num_threads(threads)


def test_identical_non_zero_embeddings_are_refused(training_llara):
    class Constant(nn.Module):
        def forward(self, features):
            embedding = features["sentence_embedding"]
            features["sentence_embedding"] = torch.ones_like(embedding) + 1e-9 * embedding
            return features

    training_llara.append(Constant())
    with pytest.raises(DegenerateEmbeddingsError, match=r"all equal \(largest difference"):
        check_probe_embeddings(training_llara)


def test_non_finite_embeddings_are_refused(training_llara):
    with torch.no_grad():
        training_llara[0].model.get_input_embeddings().weight.fill_(float("nan"))
    with pytest.raises(DegenerateEmbeddingsError, match="probe query embeddings contain NaN or inf"):
        check_probe_embeddings(training_llara)
