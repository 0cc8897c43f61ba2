"""Guards of a training run: a stop at the first non-finite loss or gradient, no save of a model whose embeddings are
non-finite or collapsed, on every process at once (docs/training_guards.md; empty texts: ``llara_st.data``)."""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from accelerate import PartialState
from accelerate.utils import gather_object
from datasets import Dataset
from sentence_transformers import SentenceTransformer, SentenceTransformerTrainer, SentenceTransformerTrainingArguments
from torch import nn
from transformers import TrainerCallback

from llara_st.errors import LLaRAUserError
from llara_st.folders import DEGENERATE_MARKER
from llara_st.training.checkpoints import trainer_checkpoints

logger = logging.getLogger(__name__)

# Short texts on unrelated subjects, as a query and as a passage: a working retriever embeds them apart.
PROBE_TEXTS: tuple[str, ...] = (
    "what causes the tides in the ocean",
    "The Moon's gravity pulls the oceans, raising tides twice a day.",
    "how do vaccines train the immune system",
    "Photosynthesis turns light, water and carbon dioxide into sugar.",
    "Bach wrote the Brandenburg Concertos around 1720.",
    "best way to store fresh basil",
    "The stock market fell sharply after the interest rate decision.",
    "A goalkeeper may handle the ball only inside the penalty area.",
)


class TrainingDivergedError(LLaRAUserError, RuntimeError):
    """Training produced a non-finite loss or gradient; the run stops before the optimizer applies it."""


class DegenerateEmbeddingsError(LLaRAUserError, RuntimeError):
    """A model about to be saved embeds a probe of different texts into non-finite or identical vectors."""


def first_problem_of_any_process(problem: str | None) -> str | None:
    """The first problem (by rank) any process found, on every process, so that none raises alone while others hang."""
    if PartialState().num_processes == 1:
        return problem
    here = PartialState().process_index
    for rank, found in enumerate(gather_object([problem])):
        if found is not None:
            return found if rank == here else f"{found} (found by process {rank})"
    return None


class DivergenceCallback(TrainerCallback):
    """Stop training with :class:`TrainingDivergedError` at the first non-finite loss or gradient (which the trainer
    logs as the mean of the earlier losses): checked before each optimizer update on every process, and in the logs.

    Args:
        loss: The loss module given to the trainer; None checks the gradients and logs only.
        fp16_patience: Consecutive non-finite gradient steps tolerated under ``fp16`` (the gradient scaler skips
            them).

    Example (``SentenceTransformerTrainer(..., callbacks=[DivergenceCallback(loss)])``; :func:`train_with_guards`
    adds it)::

        >>> from transformers import TrainerState
        >>> from llara_st.training.guards import DivergenceCallback
        >>> DivergenceCallback().on_log(None, TrainerState(global_step=3), None, logs={"loss": float("nan")})
        Traceback (most recent call last):
            ...
        llara_st.training.guards.TrainingDivergedError: training diverged at step 3: the logged loss is nan. Nothing ...
    """

    def __init__(self, loss: nn.Module | None = None, fp16_patience: int = 25) -> None:
        self.loss = loss
        self.fp16_patience = fp16_patience
        self._hook: Any = None
        self._losses: list[torch.Tensor] = []  # since the last step, kept on device: no host sync per micro-batch
        self._overflow_steps = 0

    def _record_loss(self, module: nn.Module, inputs: Any, output: Any) -> None:
        value = output[0] if isinstance(output, tuple | list) else output
        if isinstance(value, torch.Tensor) and value.numel():
            self._losses.append(value.detach().float().flatten()[:1])

    def on_train_begin(self, args, state, control, **kwargs):
        if self.loss is not None and self._hook is None:
            self._hook = self.loss.register_forward_hook(self._record_loss)
        self._overflow_steps = 0

    def on_train_end(self, args, state, control, **kwargs):
        if self._hook is not None:
            self._hook.remove()
            self._hook = None

    def on_pre_optimizer_step(self, args, state, control, model: nn.Module | None = None, **kwargs):
        problem = first_problem_of_any_process(self._problem(args, model))
        if problem is not None:
            self._stop(problem, state.global_step + 1)

    def _problem(self, args, model: nn.Module | None) -> str | None:
        """What this process found non-finite since the last step, or None."""
        if self._losses:
            losses, self._losses = torch.cat(self._losses), []
            if not bool(torch.isfinite(losses).all()):
                return f"the loss is {losses[~torch.isfinite(losses)][0].item()}"
        if model is None:
            return None
        gradients = [(name, p.grad) for name, p in model.named_parameters() if p.requires_grad and p.grad is not None]
        if not gradients:
            return None
        if bool(torch.stack([torch.isfinite(grad).all() for _, grad in gradients]).all()):
            self._overflow_steps = 0
            return None
        if args.fp16:
            self._overflow_steps += 1
            if self._overflow_steps <= self.fp16_patience:
                return None  # the fp16 gradient scaler skips this step and lowers its scale
        bad = [name for name, grad in gradients if not bool(torch.isfinite(grad).all())]
        where = ", ".join(bad[:3]) + (f" and {len(bad) - 3} more" if len(bad) > 3 else "")
        streak = f" ({self._overflow_steps} steps in a row under fp16)" if args.fp16 else ""
        return f"the gradient is not finite{streak} in {where}"

    def on_log(self, args, state, control, logs: dict[str, Any] | None = None, **kwargs):
        for key, value in (logs or {}).items():
            if (key.endswith("loss") or key == "grad_norm") and isinstance(value, int | float):
                if not math.isfinite(value):
                    self._stop(f"the logged {key} is {value}", state.global_step)

    def _stop(self, what: str, step: int) -> None:
        raise TrainingDivergedError(
            f"training diverged at step {step}: {what}. Nothing more is trained or saved; lower the learning "
            "rate (or raise warm-up / lower max_grad_norm) and start again in a new output_dir"
        )


def check_probe_embeddings(
    model: SentenceTransformer,
    texts: Sequence[str] = PROBE_TEXTS,
    rtol: float = 1e-4,
    atol: float = 1e-6,
    batch_size: int = 8,
) -> torch.Tensor:
    """Raise :class:`DegenerateEmbeddingsError` if a probe of different texts, embedded as queries and as passages,
    gets non-finite or collapsed embeddings; else return them (float32, CPU).

    Args:
        rtol, atol: Collapsed means every embedding is within ``atol + rtol × (largest absolute value)`` of their
            mean, coordinate by coordinate.

    Example::

        >>> import torch
        >>> from llara_st.training.guards import check_probe_embeddings
        >>> check_probe_embeddings(model).shape  # 8 probe texts, as queries and as passages
        torch.Size([16, 64])
        >>> with torch.no_grad():  # every token the same input: every text the same embedding
        ...     _ = model[0].auto_model.get_input_embeddings().weight.zero_()
        >>> check_probe_embeddings(model)  # raised before model.save("llara-finetuned")
        Traceback (most recent call last):
            ...
        llara_st.training.guards.DegenerateEmbeddingsError: ...
    """
    if len(set(texts)) < 2:
        raise ValueError("the probe needs at least two different texts")
    parts = []
    with torch.no_grad():
        for kind, encode in [("query", model.encode_query), ("passage", model.encode_document)]:
            embeddings = encode(list(texts), batch_size=batch_size, convert_to_tensor=True, show_progress_bar=False)
            embeddings = embeddings.detach().float().cpu()
            non_finite = int((~torch.isfinite(embeddings)).any(dim=1).sum())
            if non_finite:
                raise DegenerateEmbeddingsError(
                    f"{non_finite} of {len(texts)} probe {kind} embeddings contain NaN or inf: the model diverged "
                    "in training and is not saved; lower the learning rate and train again"
                )
            parts.append(embeddings)
            spread = (embeddings - embeddings.mean(dim=0)).abs().max().item()
            scale = embeddings.abs().max().item()
            if spread <= atol + rtol * scale:
                what = "all zero" if scale == 0 else f"all equal (largest difference {spread:.3g})"
                raise DegenerateEmbeddingsError(
                    f"the {len(texts)} different probe texts get {what} {kind} embeddings: the model has collapsed "
                    "in training and is not saved; lower the learning rate and train again"
                )
    return torch.cat(parts)


class _MainProcessSavingTrainer(SentenceTransformerTrainer):
    """A trainer whose ``_save``, which transformers 5 calls on every process, writes only where ``should_save``."""

    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        if self.args.should_save:
            super()._save(output_dir, state_dict=state_dict)


def check_eval_split(eval_dataset: Any, args: SentenceTransformerTrainingArguments) -> None:
    """Refuse held-out rows that are no multiple of processes × ``per_device_eval_batch_size`` (the trainer would
    repeat rows to fill the last batches and bias ``eval_loss``); one process takes any number."""
    if eval_dataset is None or args.world_size == 1:
        return
    step = args.world_size * args.eval_batch_size  # rows evaluated per step, over all processes
    for rows in eval_dataset.values() if isinstance(eval_dataset, Mapping) else [eval_dataset]:
        if hasattr(rows, "__len__") and len(rows) % step:
            raise LLaRAUserError(
                f"{len(rows)} evaluation rows (eval_rows) cannot be shared by {args.world_size} processes in whole "
                f"batches of per_device_eval_batch_size {args.eval_batch_size}: the trainer would repeat rows to fill "
                f"the last batches and eval_loss would be biased; set eval_rows to a multiple of {step}"
            )


def train_with_guards(
    model: SentenceTransformer,
    args: SentenceTransformerTrainingArguments,
    train_dataset: Dataset,
    loss: nn.Module,
    resume_from_checkpoint: str | None = None,
    callbacks: Sequence[TrainerCallback] | None = None,
    **trainer_kwargs: Any,
) -> SentenceTransformerTrainer:
    """Train with sentence-transformers' trainer, stopped by :class:`DivergenceCallback` (``callbacks`` come after it),
    and return the trainer (``eval_dataset`` checked by :func:`check_eval_split`; only the main process writes
    checkpoint model files). ``trainer_kwargs``: more ``SentenceTransformerTrainer`` arguments (``evaluator``, ...).

    Example (training and saving, as both LLaRA workflows do)::

        >>> from pathlib import Path
        >>> from datasets import Dataset
        >>> from sentence_transformers import SentenceTransformerTrainingArguments
        >>> from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss
        >>> from llara_st.training.guards import save_trained_model, train_with_guards
        >>> rows = Dataset.from_dict({"anchor": ["what causes tides?", "why dance?"], "positive": ["Moon.", "Food."]})
        >>> mapping = {"anchor": "query", "positive": "document"}  # the LLaRA templates
        >>> args = SentenceTransformerTrainingArguments(output_dir="out", max_steps=1, router_mapping=mapping)
        >>> trainer = train_with_guards(model, args, rows, MultipleNegativesRankingLoss(model))
        {...'train_loss': ...}
        >>> save_trained_model(trainer, lambda: model.save("out/final"))  # checks the probe embeddings first
        >>> Path("out/trainer_state.json").is_file(), Path("out/final/modules.json").is_file()
        (True, True)
    """
    check_eval_split(trainer_kwargs.get("eval_dataset"), args)
    trainer = _MainProcessSavingTrainer(
        model=model,
        args=args,
        train_dataset=train_dataset,
        loss=loss,
        callbacks=[DivergenceCallback(loss), *(callbacks or [])],
        **trainer_kwargs,
    )
    trainer.train(resume_from_checkpoint=resume_from_checkpoint)
    return trainer


def save_trained_model(trainer: SentenceTransformerTrainer, save: Callable[[], None]) -> None:
    """Write the trainer state, refuse a model whose probe embeddings are non-finite or collapsed on any process
    (:func:`check_probe_embeddings` on every process, as a ZeRO-3 forward needs all; the checkpoints are then
    marked), then call ``save`` on the main process while the others wait. Example: :func:`train_with_guards`."""
    trainer.save_state()
    failure: DegenerateEmbeddingsError | None = None
    try:
        check_probe_embeddings(trainer.model)
    except DegenerateEmbeddingsError as error:
        failure = error
    problem = first_problem_of_any_process(None if failure is None else str(failure))
    if problem is not None:
        if trainer.is_world_process_zero():
            mark_degenerate_checkpoints(trainer.args.output_dir, f"{problem} (step {trainer.state.global_step})")
        PartialState().wait_for_everyone()  # the checkpoints are marked before any process stops
        raise failure if failure is not None else DegenerateEmbeddingsError(problem)
    if trainer.is_world_process_zero():
        save()
    PartialState().wait_for_everyone()


def mark_degenerate_checkpoints(output_dir: str | os.PathLike, reason: str) -> list[Path]:
    """Mark every ``checkpoint-N`` folder of a collapsed run (:data:`~llara_st.folders.DEGENERATE_MARKER`, with
    ``reason``) so that :func:`llara_st.load` refuses them (they stay on disk); returns the folders marked."""
    marked = trainer_checkpoints(output_dir)
    for checkpoint in marked:
        (checkpoint / DEGENERATE_MARKER).write_text(json.dumps({"reason": reason}, indent=1), encoding="utf8")
    if marked:
        logger.warning(
            "Marked %d checkpoints of %s as unusable (%s): llara_st.load refuses them", len(marked), output_dir, reason
        )
    return marked
