"""LLaRA adaptation (EBAE + EBAR, Li et al., 2023, arXiv:2312.15503; docs/adaptation.md): the arguments, the rows
and :func:`run_adaptation`, which ``recipes/adapt.py``, ``llara-st adapt`` and the reproduction pipeline call."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from datasets import Dataset, concatenate_datasets
from sentence_transformers import SentenceTransformer
from sentence_transformers.base.sampler import DefaultBatchSampler
from torch.utils.data import SequentialSampler
from transformers import TrainerCallback, set_seed

from llara_st.data import DocumentChunker, read_adaptation_pairs
from llara_st.folders import check_replaceable
from llara_st.losses import EBAEEBARDataCollator, EBAEEBARLoss
from llara_st.losses.ebae_ebar import MASK_AWARE_ATTENTION
from llara_st.model import llara_module
from llara_st.training.arguments import (
    MODEL_DTYPES,
    LLaRATrainingArguments,
    check_choices,
    parse_arguments,
)
from llara_st.training.checkpoints import RunFingerprint, resolve_checkpoint
from llara_st.training.guards import save_trained_model, train_with_guards
from llara_st.training.lora import adapter_folder, add_lora_adapter_from_config, load_model_to_train, save_lora_model

logger = logging.getLogger(__name__)


@dataclass
class AdaptationArguments(LLaRATrainingArguments):
    """The trainer's arguments plus what to adapt, on which data, with which loss and adapter: LLaRA's EBAE/EBAR stage
    (Li et al., 2023, arXiv:2312.15503). LoRA is off by default here (the reference trains all weights).

    Example (adapting on a plain text file, documents separated by blank lines)::

        >>> from pathlib import Path
        >>> import llara_st
        >>> from llara_st.training import parse_adaptation_arguments, run_adaptation
        >>> documents = [
        ...     "The tides rise and fall twice a day as the Moon pulls on the water of the oceans.",
        ...     "Honeybees dance on the comb to show the other bees where the flowers and the water are.",
        ...     "A volcano erupts when hot magma rises through cracks in the crust of the Earth.",
        ... ]
        >>> _ = Path("documents.txt").write_text("\\n\\n".join(documents), encoding="utf8")
        >>> (args,) = parse_adaptation_arguments(
        ...     {"model_name_or_path": llara_path, "text_paths": ["documents.txt"], "output_dir": "out",
        ...      "chunk_unit": "words", "chunk_size": 8,  # (text, next_text): consecutive 8-word chunks of a document
        ...      "max_steps": 1, "per_device_train_batch_size": 4}
        ... )
        >>> run_adaptation(args)  # the trainer prints its summary on the way
        {...'train_loss': ...}
        'out/final'
        >>> llara_st.load("out/final").encode_query(["why do tides rise?"]).shape
        (1, 64)
    """

    wikitext_paths: list[str] = field(default_factory=list, metadata={"help": "WikiText *.raw files, folders, globs"})
    beir_corpus_paths: list[str] = field(default_factory=list, metadata={"help": 'BEIR folders, {"text"} JSONL'})
    llara_jsonl_paths: list[str] = field(default_factory=list, metadata={"help": "The authors' JSONL files"})
    text_paths: list[str] = field(default_factory=list, metadata={"help": "Text files; blank lines split documents"})
    max_rows: int | None = field(default=None, metadata={"help": "Use at most this many (text, next_text) rows"})
    eval_rows: int = field(default=0, metadata={"help": "Hold out this many rows for the eval loss (0: none)"})
    chunk_unit: str = field(default="tokens", metadata={"help": "Chunk documents in 'tokens' or 'words'"})
    chunk_size: int | None = field(default=None, metadata={"help": "Chunk size; default: the collator's text budget"})
    shuffle: bool = field(default=True, metadata={"help": "Shuffle rows and batches (seeded); false keeps the order"})
    cutoff_length: int = field(default=128, metadata={"help": "Max adaptation input length, suffixes included"})
    lm_weight: float = field(default=1.0, metadata={"help": "Weight of the next-token term (0 disables it)"})
    remove_stop_words: bool = field(default=False, metadata={"help": "Drop English stop words from the targets"})
    model_dtype: str = field(default="float32", metadata={"help": "Weights dtype: float32, bfloat16 or float16"})
    attn_implementation: str = field(default="sdpa", metadata={"help": "sdpa or eager (the loss's 4D mask)"})
    final_model_dir: str | None = field(default=None, metadata={"help": "Default: <output_dir>/final"})

    def __post_init__(self) -> None:
        kernels = {"attn_implementation": MASK_AWARE_ATTENTION}  # the loss's 4D mask: no flash attention
        check_choices(self, {"chunk_unit": ("tokens", "words"), "model_dtype": MODEL_DTYPES, **kernels})
        if not (self.wikitext_paths or self.beir_corpus_paths or self.text_paths or self.llara_jsonl_paths):
            raise ValueError("No training data: set wikitext_paths, beir_corpus_paths, text_paths or llara_jsonl_paths")
        if self.chunk_unit == "words" and self.chunk_size is None:
            raise ValueError("chunk_unit='words' needs an explicit chunk_size (e.g. 64)")
        if self.max_rows is not None and self.max_rows < 1:
            raise ValueError(f"max_rows must be positive, got {self.max_rows}")
        if self.eval_rows < 0:
            raise ValueError(f"eval_rows must be >= 0, got {self.eval_rows}")
        super().__post_init__()


def sequential_batch_sampler(dataset: Dataset, **kwargs: Any) -> DefaultBatchSampler:
    """Batches in dataset order (sentence-transformers' default sampler shuffles), for ``shuffle: false``."""
    return DefaultBatchSampler(SequentialSampler(dataset), **kwargs)


def build_adaptation_dataset(
    config: AdaptationArguments, model: SentenceTransformer, text_budget: int, seed: int
) -> Dataset:
    """All ``(text, next_text)`` rows of the configured sources, shuffled (seeded) and capped."""
    tokenizer = llara_module(model, required=True).tokenizer if config.chunk_unit == "tokens" else None
    chunker = DocumentChunker(chunk_size=config.chunk_size or text_budget, unit=config.chunk_unit, tokenizer=tokenizer)
    sources = {"wikitext": config.wikitext_paths, "beir_corpus": config.beir_corpus_paths, "text": config.text_paths}
    parts = [read_adaptation_pairs(paths, kind, chunker) for kind, paths in sources.items() if paths]
    if config.llara_jsonl_paths:  # whole rows, not chunked
        parts.append(read_adaptation_pairs(config.llara_jsonl_paths, "llara_jsonl"))
    dataset = concatenate_datasets(parts)
    if config.shuffle:
        dataset = dataset.shuffle(seed=seed).flatten_indices()
    if config.max_rows is not None:
        dataset = dataset.select(range(min(config.max_rows, len(dataset))))
    if len(dataset) <= config.eval_rows:
        raise ValueError(f"Only {len(dataset)} rows, not enough for eval_rows={config.eval_rows} plus training")
    logger.info("%d (text, next_text) rows", len(dataset))
    return dataset


def run_adaptation(args: AdaptationArguments, callbacks: list[TrainerCallback] | None = None) -> str:
    """Adapt the model as configured and return the folder of the adapted LLaRA model."""
    final_dir = Path(args.final_model_dir or Path(args.output_dir) / "final")
    for folder in (final_dir, adapter_folder(final_dir, "both")):  # checked now, not after training
        check_replaceable(folder, "final_model_dir")  # replaced only if llara_st wrote it

    # 1. Model (+ LoRA adapter), seeded first: the adapter's random initialisation happens here.
    set_seed(args.seed)
    model, base = load_model_to_train(args)
    if args.lora:
        add_lora_adapter_from_config(model, args)

    # 2. Collator (builds the adaptation input; before the data: its text budget sizes the chunks) and loss.
    collator = EBAEEBARDataCollator(model, cutoff_length=args.cutoff_length, remove_stop_words=args.remove_stop_words)
    loss = EBAEEBARLoss(model, lm_weight=args.lm_weight)

    # 3. Data: (text, next_text) rows from every source; the last eval_rows rows are held out.
    dataset = build_adaptation_dataset(args, model, collator.text_budget, seed=args.seed)
    eval_dataset = None
    if args.eval_rows:
        eval_dataset = dataset.select(range(len(dataset) - args.eval_rows, len(dataset)))
        dataset = dataset.select(range(len(dataset) - args.eval_rows))

    # 4. Training arguments: optionally in data order.
    if not args.shuffle:
        args.batch_sampler = sequential_batch_sampler

    # 5. Evaluate before training (held-out loss at step 0) unless resuming the same run (another run: an error).
    fingerprint = RunFingerprint.from_configs(args, {"train_dataset": dataset})
    output_dir = Path(args.output_dir).resolve()
    own_outputs = [path.name for path in (final_dir, adapter_folder(final_dir, "both"))]
    checkpoint = resolve_checkpoint(
        args.output_dir,
        args.resume_from_checkpoint,
        fingerprint,
        overwrite=args.overwrite_output_dir,
        stale_outputs=own_outputs if final_dir.resolve().parent == output_dir else (),
    )
    if eval_dataset is not None and checkpoint is None:
        args.eval_on_start = True

    # 6. Train, resuming from a checkpoint if asked; a non-finite loss or gradient stops the run.
    trainer = train_with_guards(
        model, args, dataset, loss, checkpoint, callbacks, eval_dataset=eval_dataset, data_collator=collator
    )

    # 7. Evaluate after training; the log history (losses, eval losses) goes to output_dir/trainer_state.json.
    if eval_dataset is not None:
        logger.info("After adaptation: %s", trainer.evaluate())

    # 8. Save as lora_save asks, unless the probe embeddings are non-finite or collapsed.
    save_trained_model(trainer, lambda: save_lora_model(model, final_dir, args.lora_save, base_model_name_or_path=base))
    return str(final_dir)  # the merged model, or for lora_save: adapter, the adapter


def parse_adaptation_arguments(
    source: str | os.PathLike | Mapping[str, Any] | Sequence[str],
) -> tuple[AdaptationArguments]:
    """:class:`AdaptationArguments` from a JSON/YAML file, a dict or command-line arguments (unknown keys: error)."""
    return parse_arguments((AdaptationArguments,), source)
