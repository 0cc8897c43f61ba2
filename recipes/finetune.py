"""Contrastive fine-tuning of a LLaRA retriever with hard negatives (Li et al., 2023, arXiv:2312.15503, §3).

InfoNCE (temperature 0.01) of each query against its positive, its mined hard negatives and every other passage
in the batch; LoRA (r 64, α 16, all seven projections) with the ``<sK>`` rows trainable, merged on save.

Run:
    python recipes/finetune.py recipes/configs/finetune_smollm2_scifact_cpu.yaml
    torchrun --nproc_per_node 8 recipes/finetune.py recipes/configs/finetune_llama2_7b_msmarco_8gpu.yaml
    python recipes/finetune.py --model_name_or_path llara-base --train_data ../shared/data/scifact --output_dir out

From Python (what the end-to-end pipeline does: mine once, fine-tune several models on identical rows):
    sys.path.insert(0, "recipes"); from finetune import FinetuneConfig, build_training_rows, run
    rows = build_training_rows(config); run(config, train_dataset=rows)
"""

from __future__ import annotations

import json
import logging
import os
import sys
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
from datasets import Dataset
from sentence_transformers import SentenceTransformer, SentenceTransformerTrainer
from sentence_transformers.sentence_transformer.training_args import SentenceTransformerTrainingArguments
from transformers import HfArgumentParser, set_seed

import llara_st
from llara_st.data.contrastive import (
    beir_examples,
    build_contrastive_dataset,
    contrastive_router_mapping,
    load_beir,
    load_contrastive_dataset,
)
from llara_st.data.mining import mine_hard_negatives_from_qrels
from llara_st.training.finetuning import (
    LLAMA_LINEAR_PROJECTIONS,
    add_lora_adapter,
    autocast_available,
    beir_ir_evaluator,
    contrastive_loss,
    merge_lora_adapter,
)

logger = logging.getLogger("finetune")


@dataclass
class FinetuneConfig:
    """Every setting of a fine-tuning run (YAML/JSON file or command line, via ``HfArgumentParser``)."""

    model_name_or_path: str = field(
        metadata={"help": "A LLaRA folder (llara-st convert, or adapted); a plain causal LM is converted first."}
    )
    output_dir: str = field(metadata={"help": "Checkpoints, metrics.json and the final model (output_dir/final)."})
    train_data: str | None = field(
        default=None,
        metadata={
            "help": "A BEIR folder (negatives mined here), an authors' {query,pos,neg} JSONL, or rows saved with "
            "Dataset.save_to_disk / as JSONL or Parquet with anchor, positive, negative_* columns."
        },
    )
    train_split: str = field(default="train", metadata={"help": "qrels split of a BEIR train_data."})
    dev_data: str | None = field(default=None, metadata={"help": "BEIR folder evaluated before and after training."})
    dev_split: str = field(default="dev")
    dev_corpus_size: int | None = field(
        default=None, metadata={"help": "Evaluate on the relevant documents plus a random sample (None: all)."}
    )
    # Data and mining
    group_size: int = field(default=16, metadata={"help": "Passages per query: 1 positive + group_size-1 negatives."})
    positives: str = field(default="sample", metadata={"help": "'sample' one positive per query, or 'all'."})
    max_train_rows: int | None = field(default=None)
    mining_retriever: str = field(
        default="bm25", metadata={"help": "'bm25', 'self' (the model being trained) or a model folder."}
    )
    mining_range_min: int = 10
    mining_range_max: int = 200
    mining_relative_margin: float | None = field(
        default=0.05, metadata={"help": "Drop candidates scoring within this fraction of the positive (None: off)."}
    )
    mining_max_score: float | None = None
    mined_negatives: int = field(
        default=15, metadata={"help": "Negatives mined per query (the group draws from them)."}
    )
    # Model
    query_max_length: int = 64
    passage_max_length: int = 160
    model_dtype: str | None = field(default=None, metadata={"help": "float32, float16 or bfloat16 weights."})
    # Loss
    temperature: float = 0.01
    cached_loss: bool = field(default=False, metadata={"help": "GradCache: large batches on small memory."})
    cached_mini_batch_size: int = 32
    gather_across_devices: bool = field(default=False, metadata={"help": "Negatives from all processes."})
    # LoRA
    lora: bool = True
    lora_r: int = 64
    lora_alpha: int = 16
    lora_dropout: float = 0.1
    lora_target_modules: list[str] = field(default_factory=lambda: list(LLAMA_LINEAR_PROJECTIONS))
    train_prompt_tokens: bool = field(default=True, metadata={"help": "Train the <s1>…<s16> embedding rows too."})
    merge_lora: bool = field(default=True, metadata={"help": "Save merged weights (else the adapter alone)."})
    # Trainer
    num_train_epochs: float = 1.0
    max_steps: int = -1
    per_device_train_batch_size: int = 8
    learning_rate: float = 3e-4
    warmup_ratio: float = 0.1
    weight_decay: float = 0.0
    lr_scheduler_type: str = "linear"
    batch_sampler: str = field(
        default="no_duplicates", metadata={"help": "'no_duplicates' keeps a query's other positives out of its batch."}
    )
    gradient_checkpointing: bool = field(default=False, metadata={"help": "Recompute activations in backward."})
    fp16: bool = False
    bf16: bool = False
    logging_steps: int = 10
    save_steps: int = 500
    save_total_limit: int | None = 2
    eval_batch_size: int = 32
    seed: int = 42
    resume_from_checkpoint: str | None = field(
        default=None, metadata={"help": "A checkpoint folder, or 'latest' for the newest in output_dir."}
    )


def load_model(config: FinetuneConfig) -> SentenceTransformer:
    """The LLaRA model to train; a plain causal LM is converted into ``output_dir/base`` first, since an
    adapter is saved relative to a base folder that has the ``<sK>`` tokens."""
    model_kwargs = {"dtype": config.model_dtype} if config.model_dtype else None
    source = Path(config.model_name_or_path)
    if not (source / "modules.json").is_file():
        base = Path(config.output_dir) / "base"
        logger.info("Converting %s into a LLaRA folder at %s", config.model_name_or_path, base)
        llara_st.convert(
            config.model_name_or_path,
            base,
            query_max_length=config.query_max_length,
            passage_max_length=config.passage_max_length,
        )
        source = base
    model = llara_st.load(source.resolve(), model_kwargs=model_kwargs)
    model[0].query_max_length = config.query_max_length
    model[0].passage_max_length = config.passage_max_length
    return model


def build_training_rows(config: FinetuneConfig, model: SentenceTransformer | None = None) -> Dataset:
    """Training rows ``(anchor, positive, negative_1 …)`` from ``config.train_data``; negatives of a BEIR
    folder are mined here (BM25, the model itself, or another retriever)."""
    if config.train_data is None:
        raise ValueError("train_data is not set and no train_dataset was given")
    path = Path(config.train_data)
    if (path / "corpus.jsonl").is_file():
        corpus, queries, qrels = load_beir(path, config.train_split)
        if config.mining_retriever == "bm25":
            retriever = "bm25"
        elif config.mining_retriever == "self":
            retriever = model if model is not None else load_model(config)
        else:
            retriever = llara_st.load(config.mining_retriever)
        negatives = mine_hard_negatives_from_qrels(
            corpus,
            queries,
            qrels,
            retriever,
            num_negatives=config.mined_negatives,
            range_min=config.mining_range_min,
            range_max=config.mining_range_max,
            relative_margin=config.mining_relative_margin,
            max_score=config.mining_max_score,
            seed=config.seed,
        )
        examples = beir_examples(corpus, queries, qrels, negatives)
        rows = build_contrastive_dataset(examples, config.group_size, config.positives, config.seed)
    else:
        rows = load_contrastive_dataset(path, config.group_size, config.positives, config.seed)
    if config.max_train_rows is not None:
        rows = rows.shuffle(seed=config.seed).select(range(min(config.max_train_rows, len(rows))))
    return rows


def run(config: FinetuneConfig, train_dataset: Dataset | str | os.PathLike | None = None) -> str:
    """Fine-tune, evaluate on the dev split before and after, save; returns the final model folder.

    Args:
        config: The run's settings.
        train_dataset: Precomputed rows (a ``Dataset`` or a path :func:`load_contrastive_dataset` reads),
            which override ``config.train_data``: the same rows can train several models.
    """
    config = replace(config)  # the precision fallback below must not change the caller's object
    output_dir = Path(config.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    for precision in ("fp16", "bf16"):
        if getattr(config, precision) and not autocast_available(precision):
            logger.warning("%s needs a CUDA device that supports it; training in float32", precision)
            setattr(config, precision, False)

    if config.fp16 and config.model_dtype == "float16" and not config.lora:
        raise ValueError(
            "fp16 mixed precision keeps float32 master weights: full fine-tuning cannot train float16 weights "
            "(use model_dtype float32, or lora: true, whose adapter weights stay float32)"
        )

    set_seed(config.seed)  # before the adapter's random initialisation, not only before training

    # 1. Model (+ LoRA adapter)
    model = load_model(config)
    if config.lora:
        add_lora_adapter(
            model,
            r=config.lora_r,
            alpha=config.lora_alpha,
            dropout=config.lora_dropout,
            target_modules=config.lora_target_modules,
            train_prompt_tokens=config.train_prompt_tokens,
        )

    # 2. Data: rows (anchor, positive, negative_1 … negative_{group_size-1})
    if train_dataset is None:
        train_dataset = build_training_rows(config, model)
    elif not isinstance(train_dataset, Dataset):
        train_dataset = load_contrastive_dataset(train_dataset, config.group_size, config.positives, config.seed)
    logger.info("Training rows: %d, columns %s", len(train_dataset), train_dataset.column_names)

    # 3. Loss: InfoNCE with in-batch and hard negatives, temperature 0.01
    loss = contrastive_loss(
        model,
        temperature=config.temperature,
        cached=config.cached_loss,
        mini_batch_size=config.cached_mini_batch_size,
        gather_across_devices=config.gather_across_devices,
    )

    # 4. Training arguments; router_mapping sends the anchor to the query template, the rest to the passage one
    args = SentenceTransformerTrainingArguments(
        output_dir=str(output_dir),
        num_train_epochs=config.num_train_epochs,
        max_steps=config.max_steps,
        per_device_train_batch_size=config.per_device_train_batch_size,
        learning_rate=config.learning_rate,
        warmup_ratio=config.warmup_ratio,
        weight_decay=config.weight_decay,
        lr_scheduler_type=config.lr_scheduler_type,
        batch_sampler=config.batch_sampler,
        router_mapping=contrastive_router_mapping(train_dataset.column_names),
        activation_checkpointing=config.gradient_checkpointing,
        activation_checkpointing_kwargs={"use_reentrant": False} if config.gradient_checkpointing else None,
        fp16=config.fp16,
        bf16=config.bf16,
        # transformers runs bf16 autocast on the CPU only when told the CPU is the device.
        use_cpu=not torch.cuda.is_available(),
        logging_steps=config.logging_steps,
        save_steps=config.save_steps,
        save_total_limit=config.save_total_limit,
        seed=config.seed,
        # Equal batches on every process: gathered negatives need the same count everywhere.
        dataloader_drop_last=config.gather_across_devices,
        ddp_find_unused_parameters=False,
        report_to="none",
    )

    # 5. Evaluator on the dev split (queries via encode_query, corpus via encode_document)
    evaluator = None
    if config.dev_data:
        evaluator = beir_ir_evaluator(
            *load_beir(config.dev_data, config.dev_split),
            name=config.dev_split,
            corpus_size=config.dev_corpus_size,
            batch_size=config.eval_batch_size,
            seed=config.seed,
        )
    metrics: dict[str, dict[str, float]] = {}
    if evaluator is not None:
        metrics["before"] = evaluator(model)
        logger.info(
            "Dev before training: %s = %.4f", evaluator.primary_metric, metrics["before"][evaluator.primary_metric]
        )

    # 6. Train
    trainer = SentenceTransformerTrainer(
        model=model, args=args, train_dataset=train_dataset, loss=loss, evaluator=evaluator
    )
    resume = config.resume_from_checkpoint
    trainer.train(resume_from_checkpoint=True if resume == "latest" else resume)

    # 7. Evaluate after training
    if evaluator is not None:
        metrics["after"] = evaluator(model)
        logger.info(
            "Dev after training: %s = %.4f", evaluator.primary_metric, metrics["after"][evaluator.primary_metric]
        )

    # 8. Save (merged weights by default), on the main process only
    final_dir = output_dir / "final"
    if trainer.is_world_process_zero():
        if config.lora and config.merge_lora:
            merge_lora_adapter(model)
        model.save(str(final_dir), safe_serialization=True)
        (output_dir / "metrics.json").write_text(
            json.dumps({"config": asdict(config), "metrics": metrics}, indent=2, default=str), encoding="utf8"
        )
        logger.info("Saved the fine-tuned model to %s", final_dir)
    return str(final_dir)


def main() -> None:
    logging.basicConfig(format="%(asctime)s %(name)s %(levelname)s %(message)s", level=logging.INFO)
    parser = HfArgumentParser(FinetuneConfig)
    if len(sys.argv) == 2 and sys.argv[1].endswith((".yaml", ".yml")):
        (config,) = parser.parse_yaml_file(sys.argv[1])
    elif len(sys.argv) == 2 and sys.argv[1].endswith(".json"):
        (config,) = parser.parse_json_file(sys.argv[1])
    else:
        (config,) = parser.parse_args_into_dataclasses()
    run(config)


if __name__ == "__main__":
    main()
