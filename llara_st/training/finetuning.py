"""LLaRA contrastive fine-tuning (Li et al., 2023, arXiv:2312.15503, §3; docs/finetuning.md): the arguments, the
rows and :func:`run_finetuning`, which ``recipes/finetune.py``, ``llara-st finetune`` and the reproduction call."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from datasets import Dataset
from sentence_transformers import SentenceTransformer
from transformers import TrainerCallback, set_seed

import llara_st
from llara_st.data.beir import load_beir
from llara_st.data.contrastive import (
    beir_examples,
    build_contrastive_dataset,
    check_text_rows,
    contrastive_router_mapping,
    load_contrastive_dataset,
)
from llara_st.data.mining import mine_hard_negatives_from_qrels
from llara_st.evaluation.ir_evaluator import beir_ir_evaluator, run_on_main_process
from llara_st.folders import check_replaceable
from llara_st.losses.contrastive import DEFAULT_TEMPERATURE, contrastive_loss
from llara_st.model import llara_module
from llara_st.training.arguments import LLaRATrainingArguments, check_choices, check_local_model_path, parse_arguments
from llara_st.training.checkpoints import RunFingerprint, resolve_checkpoint
from llara_st.training.guards import save_trained_model, train_with_guards
from llara_st.training.lora import adapter_folder, add_lora_adapter_from_config, load_model_to_train, save_lora_model

logger = logging.getLogger(__name__)


@dataclass
class FinetuneArguments(LLaRATrainingArguments):
    """The trainer's arguments plus the model, data, hard-negative, loss and LoRA settings of LLaRA's contrastive
    fine-tuning (Li et al., 2023, arXiv:2312.15503, §3), with the reference's defaults; LoRA is on by default here.

    Example (a BEIR folder: hard negatives mined here; evaluated on its dev split before and after)::

        >>> import json
        >>> from llara_st.training import parse_finetune_arguments, run_finetuning
        >>> (args,) = parse_finetune_arguments(
        ...     {"model_name_or_path": llara_path, "output_dir": "runs/ft", "train_data": beir_path, "lora": False,
        ...      "dev_data": beir_path, "temperature": 0.02, "group_size": 2,  # a positive and one mined negative
        ...      "mining_retriever": "self", "mining_range_min": 0, "max_steps": 2, "per_device_train_batch_size": 2}
        ... )
        >>> run_finetuning(args)  # the trainer prints its summary on the way
        {...'train_loss': ...}
        'runs/ft/final'
        >>> metrics = json.loads(open("runs/ft/metrics.json").read())["metrics"]
        >>> sorted(metrics), "dev_cosine_ndcg@10" in metrics["after"]
        (['after', 'before'], True)
    """

    train_data: str | None = field(
        default=None, metadata={"help": "A BEIR folder (negatives mined here), the authors' JSONL, or saved rows."}
    )
    train_split: str = field(default="train", metadata={"help": "qrels split of a BEIR train_data."})
    dev_data: str | None = field(default=None, metadata={"help": "BEIR folder evaluated before and after training."})
    dev_split: str = field(default="dev", metadata={"help": "qrels split of dev_data."})
    dev_corpus_size: int | None = field(default=None, metadata={"help": "Relevant + sampled documents (None: all)."})
    group_size: int = field(default=16, metadata={"help": "Passages per query: 1 positive + group_size-1 negatives."})
    positives: str = field(default="sample", metadata={"help": "'sample' one positive per query, or 'all'."})
    max_rows: int | None = field(default=None, metadata={"help": "Keep a seeded sample of this many rows."})
    mining_retriever: str = field(default="bm25", metadata={"help": "'bm25', 'self' (the model) or a model folder."})
    mining_range_min: int = field(default=10, metadata={"help": "Hard negatives come from ranks range_min.."})
    mining_range_max: int = field(default=200, metadata={"help": "..range_max of the mining retriever."})
    mining_relative_margin: float | None = field(default=0.05, metadata={"help": "Drop near-positive candidates."})
    mining_max_score: float | None = field(default=None, metadata={"help": "Drop candidates scoring above this."})
    mined_negatives: int = field(default=15, metadata={"help": "Negatives mined per query (the group draws them)."})
    query_max_length: int = field(default=64, metadata={"help": "Query token budget, template included."})
    passage_max_length: int = field(default=160, metadata={"help": "Passage token budget, template included."})
    temperature: float = field(default=DEFAULT_TEMPERATURE, metadata={"help": "InfoNCE temperature."})
    cached_loss: bool = field(default=False, metadata={"help": "GradCache: large batches on small memory."})
    cached_mini_batch_size: int = field(default=32, metadata={"help": "Mini-batch of the cached loss."})
    gather_across_devices: bool = field(default=False, metadata={"help": "Negatives from all processes."})
    lora: bool = field(default=True, metadata={"help": "Train a LoRA adapter (false: full fine-tuning)."})
    # The trainer's settings whose defaults differ for LLaRA fine-tuning.
    learning_rate: float = field(default=3e-4, metadata={"help": "Peak learning rate."})
    warmup_steps: float = field(default=0.1, metadata={"help": "Warm-up steps; a float < 1 is a fraction of them."})
    batch_sampler: str = field(default="no_duplicates", metadata={"help": "Keep a query's other positives out."})
    logging_steps: float = field(default=10, metadata={"help": "Log the loss every this many steps."})
    save_total_limit: int | None = field(default=2, metadata={"help": "Checkpoints kept."})

    def __post_init__(self) -> None:
        if self.output_dir is None:
            raise ValueError("output_dir is required: checkpoints, metrics.json and the final model go there")
        check_choices(self, {"positives": ("sample", "all")})
        if self.gradient_checkpointing:  # sentence-transformers checkpoints the input module's activations
            self.gradient_checkpointing, self.activation_checkpointing = False, True
        if self.activation_checkpointing:
            self.activation_checkpointing_kwargs = self.activation_checkpointing_kwargs or {"use_reentrant": False}
        if self.gather_across_devices:  # gathered negatives need the same count on every process
            self.dataloader_drop_last = True
        super().__post_init__()


def parse_finetune_arguments(
    source: str | os.PathLike | Mapping[str, Any] | Sequence[str],
) -> tuple[FinetuneArguments]:
    """:class:`FinetuneArguments` from a JSON/YAML file, a dict or command-line arguments (unknown keys: error)."""
    return parse_arguments((FinetuneArguments,), source)


def load_finetune_model(args: FinetuneArguments) -> SentenceTransformer:
    """The LLaRA model to train (:func:`~llara_st.training.lora.load_model_to_train`) with the run's text budgets."""
    model, _ = load_model_to_train(args)
    transformer = llara_module(model, required=True)
    transformer.query_max_length, transformer.passage_max_length = args.query_max_length, args.passage_max_length
    return model


def freeze_output_head(model: SentenceTransformer) -> bool:
    """Freeze the causal LM's output head unless it is tied to the input embeddings (SmolLM2); returns whether it was
    frozen. The loss never applies the head, so it gets no gradient, which DDP refuses ("parameters that were not
    used in producing loss")."""
    causal_lm = llara_module(model, required=True).causal_lm
    head, embeddings = causal_lm.get_output_embeddings(), causal_lm.get_input_embeddings()
    if head is None or head.weight is embeddings.weight:
        return False
    head.requires_grad_(False)
    return True


def build_training_rows(args: FinetuneArguments, model: SentenceTransformer | None = None) -> Dataset:
    """Training rows ``(anchor, positive, negative_1 …)`` from ``args.train_data``; negatives of a BEIR
    folder are mined here (BM25, the model itself, or another retriever)."""
    if args.train_data is None:
        raise ValueError("train_data is not set and no train_dataset was given")
    path = Path(args.train_data)
    if (path / "corpus.jsonl").is_file():
        corpus, queries, qrels = load_beir(path, args.train_split)
        retriever: Any = args.mining_retriever  # "bm25", "self" or a model folder
        if retriever == "self":
            retriever = model if model is not None else load_finetune_model(args)
        elif retriever != "bm25":
            retriever = llara_st.load(retriever)
        mine = partial(
            mine_hard_negatives_from_qrels,
            corpus,
            queries,
            qrels,
            retriever,
            num_negatives=args.mined_negatives,
            range_min=args.mining_range_min,
            range_max=args.mining_range_max,
            relative_margin=args.mining_relative_margin,
            max_score=args.mining_max_score,
            seed=args.seed,
        )
        # Under torchrun rank 0 mines (a dense retriever's encoding shared by all processes), the others receive it.
        negatives = run_on_main_process(mine, None if isinstance(retriever, str) else retriever)
        examples = beir_examples(corpus, queries, qrels, negatives)
        rows = build_contrastive_dataset(examples, args.group_size, args.positives, args.seed)
    else:
        rows = load_contrastive_dataset(path, args.group_size, args.positives, args.seed)
    if args.max_rows is not None:
        rows = rows.shuffle(seed=args.seed).select(range(min(args.max_rows, len(rows))))
    return rows


def run_finetuning(
    args: FinetuneArguments,
    train_dataset: Dataset | str | os.PathLike | None = None,
    callbacks: list[TrainerCallback] | None = None,
) -> str:
    """Fine-tune, evaluate on the dev split before and after, save; returns the final model folder.

    Args:
        args: The run's settings (``args.router_mapping`` is set here from the rows' columns).
        train_dataset: Precomputed rows (a ``Dataset`` or a path :func:`load_contrastive_dataset` reads), which
            override ``args.train_data``: the same rows can train several models.
        callbacks: Extra trainer callbacks.
    """
    check_local_model_path(args.model_name_or_path)  # before output_dir is created or anything loads
    output_dir = Path(args.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    set_seed(args.seed)  # before the adapter's random initialisation, not only before training

    # 0. Only a run with the same settings and data (by content) is resumed; another run's work is an error, now.
    for folder in (output_dir / "final", adapter_folder(output_dir / "final", "both")):
        check_replaceable(folder, "the final model folder")  # replaced only if llara_st wrote it
    given_rows = {"train_dataset": train_dataset} if train_dataset is not None else {}
    fingerprint = RunFingerprint.from_configs(args, given_rows, ignore=("router_mapping",))
    checkpoint = resolve_checkpoint(
        args.output_dir,
        args.resume_from_checkpoint,
        fingerprint,
        overwrite=args.overwrite_output_dir,
        stale_outputs=("final", "final-adapter", "metrics.json"),
    )

    # 1. Model (+ LoRA adapter)
    model = load_finetune_model(args)
    if args.lora:
        add_lora_adapter_from_config(model, args)
    elif freeze_output_head(model):
        logger.info("Full fine-tuning: the untied output head (lm_head) is unused by the loss and stays frozen")

    # 2. Data: rows (anchor, positive, negative_1 … negative_{group_size-1})
    if train_dataset is None:
        train_dataset = build_training_rows(args, model)
    elif not isinstance(train_dataset, Dataset):
        train_dataset = load_contrastive_dataset(train_dataset, args.group_size, args.positives, args.seed)
    train_dataset = check_text_rows(train_dataset, source=str(args.train_data or "train_dataset"))
    logger.info("Training rows: %d, columns %s", len(train_dataset), train_dataset.column_names)

    # 3. Loss: InfoNCE with in-batch and hard negatives
    loss = contrastive_loss(
        model,
        temperature=args.temperature,
        cached=args.cached_loss,
        mini_batch_size=args.cached_mini_batch_size,
        gather_across_devices=args.gather_across_devices,
    )

    # 4. Routing: the anchor gets the query template, every other column the passage template
    args.router_mapping = contrastive_router_mapping(train_dataset.column_names)

    # 5. Evaluator on the dev split (queries via encode_query, corpus via encode_document)
    evaluator = None
    if args.dev_data:
        evaluator = beir_ir_evaluator(
            *load_beir(args.dev_data, args.dev_split),
            name=args.dev_split,
            corpus_size=args.dev_corpus_size,
            batch_size=args.per_device_eval_batch_size,
            seed=args.seed,
        )
    metrics: dict[str, dict[str, float]] = {}

    def dev_evaluation(stage: str) -> None:
        # Under torchrun every process gets rank 0's metrics and primary metric (learnt when the evaluator runs).
        def evaluate() -> tuple[dict[str, float], str]:
            return evaluator(model), evaluator.primary_metric

        sharded = bool(args.deepspeed or args.fsdp)
        metrics[stage], primary = run_on_main_process(evaluate, model, share_encoding=not sharded)
        evaluator.primary_metric = primary
        logger.info("Dev %s training: %s = %.4f", stage, primary, metrics[stage][primary])

    if evaluator is not None:
        dev_evaluation("before")

    # 6. Train, resuming from a checkpoint if asked; a non-finite loss or gradient stops the run.
    trainer = train_with_guards(model, args, train_dataset, loss, checkpoint, callbacks, evaluator=evaluator)

    # 7. Evaluate after training
    if evaluator is not None:
        dev_evaluation("after")

    # 8. Save as lora_save asks, with the metrics, unless the probe embeddings are non-finite or collapsed.
    final_dir = output_dir / "final"

    def save() -> None:
        save_lora_model(model, final_dir, args.lora_save, "the final model folder")  # each folder whole, or as before
        staging = output_dir / f".metrics.json.{os.getpid()}"  # replaces metrics.json whole
        staging.write_text(json.dumps({"config": args.to_dict(), "metrics": metrics}, indent=2, default=str), "utf8")
        staging.replace(output_dir / "metrics.json")
        logger.info("Saved the fine-tuned model to %s", final_dir)

    save_trained_model(trainer, save)
    return str(final_dir)
