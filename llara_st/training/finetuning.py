"""Building blocks of LLaRA contrastive fine-tuning (Li et al., 2023, arXiv:2312.15503, §3; docs/finetuning.md):
the InfoNCE loss, LoRA on the seven linear projections with trainable ``<sK>`` rows, merging the adapter, and a
retrieval evaluator on a BEIR split; and the workflow over them: :class:`FinetuneArguments` (the trainer's arguments
plus LLaRA's), :func:`build_training_rows` (BEIR folder + hard-negative mining, or saved rows) and
:func:`run_finetuning`, which ``recipes/finetune.py``, ``llara-st finetune CONFIG`` and the reproduction call."""

from __future__ import annotations

import json
import logging
import os
import random
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from datasets import Dataset
from sentence_transformers import SentenceTransformer, SentenceTransformerTrainingArguments
from sentence_transformers.sentence_transformer.evaluation import InformationRetrievalEvaluator
from sentence_transformers.sentence_transformer.losses import (
    CachedMultipleNegativesRankingLoss,
    MultipleNegativesRankingLoss,
)
from torch import nn
from transformers import TrainerCallback, set_seed

import llara_st
from llara_st.data.beir import load_beir
from llara_st.data.contrastive import (
    beir_examples,
    build_contrastive_dataset,
    contrastive_router_mapping,
    load_contrastive_dataset,
    relevant_documents,
)
from llara_st.data.mining import mine_hard_negatives_from_qrels
from llara_st.folders import check_replaceable, save_model_staged
from llara_st.model import llara_module
from llara_st.training.arguments import parse_arguments
from llara_st.training.callbacks import save_trained_model, train_with_guards
from llara_st.training.checkpoints import RunFingerprint, resolve_checkpoint
from llara_st.training.validation import check_text_rows

logger = logging.getLogger(__name__)

# The reference's LoRA targets: every linear projection of a Llama block (Mistral, Qwen2 and SmolLM2 share the names).
LLAMA_LINEAR_PROJECTIONS: tuple[str, ...] = (
    "q_proj",
    "k_proj",
    "v_proj",
    "o_proj",
    "gate_proj",
    "up_proj",
    "down_proj",
)
DEFAULT_TEMPERATURE = 0.01
ADAPTER_NAME = "default"


def contrastive_loss(
    model: SentenceTransformer,
    temperature: float = DEFAULT_TEMPERATURE,
    cached: bool = False,
    mini_batch_size: int = 32,
    gather_across_devices: bool = False,
) -> nn.Module:
    """LLaRA's fine-tuning loss: InfoNCE over cosine similarities divided by ``temperature``.

    Each query (column ``anchor``) is scored against its positive, its hard negatives (``negative_1`` …) and
    every other passage of the batch, as the reference's ``q_reps @ p_reps.T / 0.01`` followed by cross
    entropy. This is sentence-transformers'
    :class:`~sentence_transformers.sentence_transformer.losses.MultipleNegativesRankingLoss` with
    ``scale = 1 / temperature`` (cosine is its default similarity), or its GradCache variant
    :class:`~sentence_transformers.sentence_transformer.losses.CachedMultipleNegativesRankingLoss`, which
    gives the same loss and gradients with the memory of ``mini_batch_size`` texts at a time.

    Args:
        model: The model being trained.
        temperature: Softmax temperature (reference 0.01, i.e. scale 100).
        cached: Use the GradCache variant: for large batches on small memory.
        mini_batch_size: Texts embedded at once by the cached variant.
        gather_across_devices: Gather passages from all processes, so each query also sees the other
            devices' passages as negatives (the reference's ``negatives_cross_device``).

    Example::

        >>> from datasets import Dataset
        >>> from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments
        >>> from llara_st.data import contrastive_router_mapping
        >>> from llara_st.training import contrastive_loss
        >>> rows = Dataset.from_dict(
        ...     {
        ...         "anchor": ["why do tides rise?", "where do bees find water?"],
        ...         "positive": ["The Moon pulls the ocean.", "Bees dance to show water."],
        ...         "negative_1": ["A volcano erupts.", "The river flooded."],
        ...     }
        ... )
        >>> loss = contrastive_loss(model, temperature=0.01, cached=True, mini_batch_size=16)
        >>> loss.scale
        100.0
        >>> args = SentenceTransformerTrainingArguments(
        ...     output_dir="out", max_steps=1, router_mapping=contrastive_router_mapping(rows.column_names)
        ... )
        >>> trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=rows, loss=loss)
        >>> trainer.train().training_loss > 0  # the trainer prints its summary on the way
        {...'train_loss': ...}
        True
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    if cached:
        if mini_batch_size < 1:
            raise ValueError(f"mini_batch_size must be at least 1, got {mini_batch_size}")
        return CachedMultipleNegativesRankingLoss(
            model,
            scale=1.0 / temperature,
            mini_batch_size=mini_batch_size,
            gather_across_devices=gather_across_devices,
        )
    return MultipleNegativesRankingLoss(model, scale=1.0 / temperature, gather_across_devices=gather_across_devices)


def add_lora_adapter(
    model: SentenceTransformer,
    r: int = 64,
    alpha: int = 16,
    dropout: float = 0.1,
    target_modules: Sequence[str] = LLAMA_LINEAR_PROJECTIONS,
    train_prompt_tokens: bool = True,
) -> Any:
    """Attach a fresh LoRA adapter (PEFT) to the backbone of a LLaRA model, in place; only it trains.

    The reference fine-tunes with LoRA r 64, α 16, dropout 0.1 on all seven linear projections. With
    ``train_prompt_tokens`` the embedding rows of ``<s1>``…``<s16>`` train too (PEFT's
    ``trainable_token_indices``; the rest of the vocabulary stays frozen): new tokens added by
    ``llara-st convert`` start as mean embeddings and need it. The adapter is injected with
    sentence-transformers' ``model.add_adapter``, so a saved model holds the adapter only (and loads on top
    of its base folder), checkpoints resume, and :func:`merge_lora_adapter` folds it into the weights.

    Args:
        model: A LLaRA model (the base must be a saved folder for an unmerged adapter to load later).
        r, alpha, dropout: LoRA rank, scaling numerator and dropout.
        target_modules: Names of the linear layers to adapt.
        train_prompt_tokens: Also train the 16 prompt-token embedding rows.

    Returns:
        The ``peft.LoraConfig`` used.

    Example::

        >>> from llara_st.training import add_lora_adapter, has_lora_adapter
        >>> add_lora_adapter(model, r=64, alpha=16, dropout=0.1).target_modules == set(LLAMA_LINEAR_PROJECTIONS)
        True
        >>> has_lora_adapter(model)
        True
        >>> trainable = [name for name, parameter in model.named_parameters() if parameter.requires_grad]
        >>> all("lora_" in name or "trainable_tokens" in name for name in trainable)  # the base weights stay frozen
        True
    """
    from peft import LoraConfig
    from peft.functional import cast_adapter_dtype

    transformer = llara_module(model, required=True)
    if r < 1:
        raise ValueError(f"LoRA rank r must be at least 1, got {r}")
    names = {
        name.rsplit(".", 1)[-1] for name, module in transformer.model.named_modules() if isinstance(module, nn.Linear)
    }
    unknown = sorted(set(target_modules) - names)
    if unknown:
        raise ValueError(f"LoRA target modules {unknown} are not linear layers of this model; it has {sorted(names)}")
    config = LoraConfig(
        r=r,
        lora_alpha=alpha,
        lora_dropout=dropout,
        target_modules=list(target_modules),
        # A list applies to the input embedding layer, whatever the architecture calls it.
        trainable_token_indices=sorted(transformer.prompt_token_ids.values()) if train_prompt_tokens else None,
    )
    model.add_adapter(config, adapter_name=ADAPTER_NAME)
    # A float16/bfloat16 base would give float16 adapter weights, which fp16 mixed precision cannot train
    # (its gradient scaler needs float32 master weights): keep the trainable part in float32.
    cast_adapter_dtype(transformer.model, ADAPTER_NAME, autocast_adapter_dtype=True)
    trainable = sum(parameter.numel() for parameter in model.parameters() if parameter.requires_grad)
    total = sum(parameter.numel() for parameter in model.parameters())
    logger.info("LoRA adapter added: %d of %d parameters trainable (%.3f%%)", trainable, total, 100 * trainable / total)
    return config


def add_lora_adapter_from_config(model: SentenceTransformer, config: Any, train_prompt_tokens: bool) -> Any:
    """:func:`add_lora_adapter` with the rank, alpha, dropout and target modules of a workflow's settings (the
    ``lora_r``, ``lora_alpha``, ``lora_dropout`` and ``lora_target_modules`` of :class:`FinetuneArguments` and
    :class:`~llara_st.training.AdaptationArguments`); returns the ``peft.LoraConfig`` used.

    Example::

        >>> from llara_st.training import add_lora_adapter_from_config, has_lora_adapter, parse_finetune_arguments
        >>> (args,) = parse_finetune_arguments({"model_name_or_path": llara_path, "output_dir": "out", "lora_r": 4})
        >>> add_lora_adapter_from_config(model, args, train_prompt_tokens=args.train_prompt_tokens).r
        4
        >>> has_lora_adapter(model)
        True
    """
    return add_lora_adapter(
        model,
        r=config.lora_r,
        alpha=config.lora_alpha,
        dropout=config.lora_dropout,
        target_modules=config.lora_target_modules,
        train_prompt_tokens=train_prompt_tokens,
    )


def has_lora_adapter(model: SentenceTransformer) -> bool:
    """Whether the backbone carries a PEFT adapter (added by :func:`add_lora_adapter` or loaded with one)."""
    return bool(getattr(llara_module(model, required=True).model, "peft_config", None))


def merge_lora_adapter(model: SentenceTransformer, base_model_name_or_path: str | None = None) -> SentenceTransformer:
    """Fold the LoRA adapter into the backbone's weights, in place: the model then saves as a plain LLaRA
    folder (loadable with :func:`llara_st.load`, no PEFT needed) and embeds exactly as before, up to float
    rounding.

    The merge is PEFT's ``merge_and_unload`` on the base weights: they are re-read from the adapter's base
    folder (recorded when the adapter was added), then the adapter, saved to a temporary folder, is applied.

    Args:
        model: A LLaRA model with an adapter.
        base_model_name_or_path: Where to read the base weights; default: the folder the adapter records.

    Example::

        >>> import numpy as np
        >>> import torch
        >>> import llara_st
        >>> from llara_st.training import add_lora_adapter, has_lora_adapter, merge_lora_adapter
        >>> model = llara_st.load(llara_path)  # the adapter records this folder as its base
        >>> _ = add_lora_adapter(model)
        >>> with torch.no_grad():  # as training would: a fresh adapter's B matrices are zero
        ...     for name, parameter in model.named_parameters():
        ...         if "lora_B" in name:
        ...             _ = parameter.normal_(std=0.05)
        >>> adapted = model.encode_query(["why do tides rise?"])
        >>> merge_lora_adapter(model).save("llara-finetuned")
        >>> has_lora_adapter(model)
        False
        >>> merged = llara_st.load("llara-finetuned").encode_query(["why do tides rise?"])
        >>> bool(np.allclose(adapted, merged, atol=1e-4))
        True
    """
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    transformer = llara_module(model, required=True)
    adapted = transformer.model
    if not has_lora_adapter(model):
        raise ValueError("the model has no adapter to merge")
    base_path = base_model_name_or_path or adapted.peft_config[ADAPTER_NAME].base_model_name_or_path
    if not base_path:
        raise ValueError("the adapter does not record its base model; pass base_model_name_or_path")
    device, dtype = next(adapted.parameters()).device, next(adapted.parameters()).dtype
    with tempfile.TemporaryDirectory() as adapter_dir:
        adapted.save_pretrained(adapter_dir)  # transformers writes only the adapter of a PEFT-injected model
        base = AutoModelForCausalLM.from_pretrained(base_path, dtype=dtype)
        if base.config.vocab_size != adapted.config.vocab_size:
            raise ValueError(
                f"the base model at {base_path} has a vocabulary of {base.config.vocab_size} tokens but the adapted "
                f"model {adapted.config.vocab_size}: the adapter was trained on another (converted) base"
            )
        merged = PeftModel.from_pretrained(base, adapter_dir).merge_and_unload()
    transformer.model = merged.to(device)
    return model


def beir_ir_evaluator(
    corpus: Mapping[str, str],
    queries: Mapping[str, str],
    qrels: Mapping[str, Mapping[str, int]],
    name: str = "dev",
    corpus_size: int | None = None,
    batch_size: int = 32,
    seed: int = 42,
    min_relevance: int = 1,
) -> InformationRetrievalEvaluator:
    """sentence-transformers' :class:`InformationRetrievalEvaluator` (nDCG@10 first) on a BEIR split.

    It embeds queries with ``encode_query`` and the corpus with ``encode_document``, so a LLaRA model gets
    its query and passage templates. ``corpus_size`` keeps the relevant documents plus a seeded random
    sample of the others (a cheaper, easier proxy: use the full corpus for reported figures).

    Args:
        corpus, queries, qrels: As returned by :func:`llara_st.data.load_beir`.
        name: Prefix of the metric names (``{name}_cosine_ndcg@10``).
        corpus_size: Documents to keep; None keeps all.
        batch_size: Encoding batch size.
        seed: Seed of the corpus sample.
        min_relevance: Smallest qrels score that counts as relevant.
    """
    relevant = {query_id: set(doc_ids) for query_id, doc_ids in relevant_documents(qrels, min_relevance).items()}
    if not relevant:
        raise ValueError(f"no query has a document with qrels score >= {min_relevance}")
    if corpus_size is not None and corpus_size < len(corpus):
        needed = set().union(*relevant.values())
        others = sorted(set(corpus) - needed)
        keep = needed | set(random.Random(seed).sample(others, max(0, min(len(others), corpus_size - len(needed)))))
        corpus = {doc_id: text for doc_id, text in corpus.items() if doc_id in keep}
    return InformationRetrievalEvaluator(
        queries={query_id: queries[query_id] for query_id in relevant},
        corpus=dict(corpus),
        relevant_docs=relevant,
        name=name,
        batch_size=batch_size,
        write_csv=False,
    )


def autocast_available(precision: str) -> bool:
    """Whether mixed precision ``"fp16"`` / ``"bf16"`` training can run here: fp16 on CUDA; bf16 on CUDA devices
    that support it, and on the CPU (autocast; fast on CPUs with AVX512-BF16 or AMX, emulated elsewhere)."""
    if not torch.cuda.is_available():
        return precision == "bf16"
    return precision != "bf16" or torch.cuda.is_bf16_supported()


@dataclass
class FinetuneArguments(SentenceTransformerTrainingArguments):
    """Settings of LLaRA's contrastive fine-tuning (Li et al., 2023, arXiv:2312.15503, §3): the trainer's own
    arguments (learning rate, epochs, warm-up, precision, checkpoints, …) plus the model, data, hard-negative,
    loss and LoRA settings, in one dataclass as sentence-transformers' own families extend the trainer's.

    Defaults follow the reference (InfoNCE at temperature 0.01, LoRA r 64 / alpha 16 on the seven projections
    with the ``<sK>`` rows trainable, lr 3e-4, 10 % warm-up, no duplicate positives in a batch). Mixed precision
    the machine cannot run falls back to float32 with a warning; without CUDA the CPU is the device, so bf16
    autocast runs there.

    Example (a BEIR folder: hard negatives mined here; evaluated on its dev split before and after)::

        >>> import json
        >>> from llara_st.training import parse_finetune_arguments, run_finetuning
        >>> (args,) = parse_finetune_arguments(
        ...     {
        ...         "model_name_or_path": llara_path,
        ...         "output_dir": "runs/ft",
        ...         "train_data": beir_path,
        ...         "dev_data": beir_path,
        ...         "lora": False,
        ...         "temperature": 0.02,
        ...         "group_size": 2,  # a positive and one mined negative per query
        ...         "mining_retriever": "self",
        ...         "mining_range_min": 0,
        ...         "max_steps": 2,
        ...         "per_device_train_batch_size": 2,
        ...     }
        ... )
        >>> run_finetuning(args)  # the trainer prints its summary on the way
        {...'train_loss': ...}
        'runs/ft/final'
        >>> metrics = json.loads(open("runs/ft/metrics.json").read())["metrics"]
        >>> sorted(metrics), "dev_cosine_ndcg@10" in metrics["after"]
        (['after', 'before'], True)
    """

    model_name_or_path: str | None = field(
        default=None,
        metadata={"help": "A LLaRA folder (llara-st convert, or adapted); a plain causal LM is converted first."},
    )
    train_data: str | None = field(
        default=None,
        metadata={
            "help": "A BEIR folder (negatives mined here), an authors' {query,pos,neg} JSONL, or rows saved with "
            "Dataset.save_to_disk / as JSONL or Parquet with anchor, positive, negative_* columns."
        },
    )
    train_split: str = field(default="train", metadata={"help": "qrels split of a BEIR train_data."})
    dev_data: str | None = field(default=None, metadata={"help": "BEIR folder evaluated before and after training."})
    dev_split: str = field(default="dev", metadata={"help": "qrels split of dev_data."})
    dev_corpus_size: int | None = field(
        default=None, metadata={"help": "Evaluate on the relevant documents plus a random sample (None: all)."}
    )
    group_size: int = field(default=16, metadata={"help": "Passages per query: 1 positive + group_size-1 negatives."})
    positives: str = field(default="sample", metadata={"help": "'sample' one positive per query, or 'all'."})
    max_train_rows: int | None = field(default=None, metadata={"help": "Keep a seeded sample of this many rows."})
    mining_retriever: str = field(
        default="bm25", metadata={"help": "'bm25', 'self' (the model being trained) or a model folder."}
    )
    mining_range_min: int = field(default=10, metadata={"help": "Hard negatives come from ranks range_min.."})
    mining_range_max: int = field(default=200, metadata={"help": "..range_max of the mining retriever."})
    mining_relative_margin: float | None = field(
        default=0.05, metadata={"help": "Drop candidates scoring within this fraction of the positive (None: off)."}
    )
    mining_max_score: float | None = field(default=None, metadata={"help": "Drop candidates scoring above this."})
    mined_negatives: int = field(
        default=15, metadata={"help": "Negatives mined per query (the group draws from them)."}
    )
    query_max_length: int = field(default=64, metadata={"help": "Query token budget, template included."})
    passage_max_length: int = field(default=160, metadata={"help": "Passage token budget, template included."})
    model_dtype: str | None = field(default=None, metadata={"help": "float32, float16 or bfloat16 weights."})
    temperature: float = field(default=DEFAULT_TEMPERATURE, metadata={"help": "InfoNCE temperature."})
    cached_loss: bool = field(default=False, metadata={"help": "GradCache: large batches on small memory."})
    cached_mini_batch_size: int = field(default=32, metadata={"help": "Mini-batch of the cached loss."})
    gather_across_devices: bool = field(default=False, metadata={"help": "Negatives from all processes."})
    lora: bool = field(default=True, metadata={"help": "Train a LoRA adapter (false: full fine-tuning)."})
    lora_r: int = field(default=64, metadata={"help": "LoRA rank."})
    lora_alpha: int = field(default=16, metadata={"help": "LoRA alpha."})
    lora_dropout: float = field(default=0.1, metadata={"help": "LoRA dropout."})
    lora_target_modules: list[str] = field(
        default_factory=lambda: list(LLAMA_LINEAR_PROJECTIONS), metadata={"help": "Layers that get adapters."}
    )
    train_prompt_tokens: bool = field(default=True, metadata={"help": "Train the <s1>…<s16> embedding rows too."})
    merge_lora: bool = field(default=True, metadata={"help": "Save merged weights (else the adapter alone)."})
    overwrite_output_dir: bool = field(
        default=False,
        metadata={
            "help": "Delete another run's checkpoints and model in output_dir and start afresh (else an error); never "
            "a folder that llara_st did not write (docs/training_guards.md, 'Folders')."
        },
    )
    # The trainer's settings whose defaults differ for LLaRA fine-tuning.
    learning_rate: float = field(default=3e-4, metadata={"help": "Peak learning rate."})
    warmup_steps: float = field(
        default=0.1, metadata={"help": "Warm-up steps; a float < 1 is a fraction of the steps."}
    )
    batch_sampler: str = field(
        default="no_duplicates", metadata={"help": "'no_duplicates' keeps a query's other positives out of its batch."}
    )
    logging_steps: float = field(default=10, metadata={"help": "Log the loss every this many steps."})
    save_total_limit: int | None = field(default=2, metadata={"help": "Checkpoints kept."})

    def __post_init__(self) -> None:
        if self.model_name_or_path is None:
            raise ValueError("model_name_or_path is required: a LLaRA folder or a causal LM to convert")
        if self.output_dir is None:
            raise ValueError("output_dir is required: checkpoints, metrics.json and the final model go there")
        if self.positives not in ("sample", "all"):
            raise ValueError(f"positives must be 'sample' or 'all', got {self.positives!r}")
        if self.model_dtype not in (None, "float32", "float16", "bfloat16"):
            raise ValueError(f"model_dtype must be float32, float16 or bfloat16, got {self.model_dtype!r}")
        for precision in ("fp16", "bf16"):
            if getattr(self, precision) and not autocast_available(precision):
                logger.warning("%s needs a CUDA device that supports it; training in float32", precision)
                setattr(self, precision, False)
        if self.fp16 and self.model_dtype == "float16" and not self.lora:
            raise ValueError(
                "fp16 mixed precision keeps float32 master weights: full fine-tuning cannot train float16 weights "
                "(use model_dtype float32, or lora: true, whose adapter weights stay float32)"
            )
        if not torch.cuda.is_available():
            self.use_cpu = True  # transformers runs bf16 autocast on the CPU only when told the CPU is the device
        if self.gradient_checkpointing:  # sentence-transformers checkpoints the input module's activations
            self.gradient_checkpointing = False
            self.activation_checkpointing = True
        if self.activation_checkpointing:
            self.activation_checkpointing_kwargs = self.activation_checkpointing_kwargs or {"use_reentrant": False}
        if self.gather_across_devices:  # gathered negatives need the same count on every process
            self.dataloader_drop_last = True
        if self.ddp_find_unused_parameters is None:
            self.ddp_find_unused_parameters = False
        super().__post_init__()


def parse_finetune_arguments(
    source: str | os.PathLike | Mapping[str, Any] | Sequence[str],
) -> tuple[FinetuneArguments]:
    """:class:`FinetuneArguments` from a JSON/YAML file, a dict or command-line arguments (unknown keys: error)."""
    return parse_arguments((FinetuneArguments,), source)


def load_finetune_model(args: FinetuneArguments) -> SentenceTransformer:
    """The LLaRA model to train; a plain causal LM is converted into ``output_dir/base`` first, since an
    adapter is saved relative to a base folder that has the ``<sK>`` tokens."""
    model_kwargs = {"dtype": args.model_dtype} if args.model_dtype else None
    source = Path(args.model_name_or_path)
    if not (source / "modules.json").is_file():
        base = Path(args.output_dir) / "base"
        logger.info("Converting %s into a LLaRA folder at %s", args.model_name_or_path, base)
        llara_st.convert(
            args.model_name_or_path,
            base,
            query_max_length=args.query_max_length,
            passage_max_length=args.passage_max_length,
        )
        source = base
    model = llara_st.load(source.resolve(), model_kwargs=model_kwargs)
    transformer = llara_module(model, required=True)
    transformer.query_max_length = args.query_max_length
    transformer.passage_max_length = args.passage_max_length
    return model


def build_training_rows(args: FinetuneArguments, model: SentenceTransformer | None = None) -> Dataset:
    """Training rows ``(anchor, positive, negative_1 …)`` from ``args.train_data``; negatives of a BEIR
    folder are mined here (BM25, the model itself, or another retriever)."""
    if args.train_data is None:
        raise ValueError("train_data is not set and no train_dataset was given")
    path = Path(args.train_data)
    if (path / "corpus.jsonl").is_file():
        corpus, queries, qrels = load_beir(path, args.train_split)
        if args.mining_retriever == "bm25":
            retriever: Any = "bm25"
        elif args.mining_retriever == "self":
            retriever = model if model is not None else load_finetune_model(args)
        else:
            retriever = llara_st.load(args.mining_retriever)
        negatives = mine_hard_negatives_from_qrels(
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
        examples = beir_examples(corpus, queries, qrels, negatives)
        rows = build_contrastive_dataset(examples, args.group_size, args.positives, args.seed)
    else:
        rows = load_contrastive_dataset(path, args.group_size, args.positives, args.seed)
    if args.max_train_rows is not None:
        rows = rows.shuffle(seed=args.seed).select(range(min(args.max_train_rows, len(rows))))
    return rows


def run_finetuning(
    args: FinetuneArguments,
    train_dataset: Dataset | str | os.PathLike | None = None,
    callbacks: list[TrainerCallback] | None = None,
) -> str:
    """Fine-tune, evaluate on the dev split before and after, save; returns the final model folder.

    Steps: 0 check ``output_dir`` (before any expensive work), 1 model (+ LoRA), 2 data, 3 loss, 4 routing,
    5 evaluate, 6 train (resumable), 7 evaluate, 8 save.

    Args:
        args: The run's settings (``args.router_mapping`` is set here from the rows' columns).
        train_dataset: Precomputed rows (a ``Dataset`` or a path :func:`load_contrastive_dataset` reads),
            which override ``args.train_data``: the same rows can train several models.
        callbacks: Extra trainer callbacks.
    """
    output_dir = Path(args.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    set_seed(args.seed)  # before the adapter's random initialisation, not only before training

    # 0. Only a run with the same settings and data is resumed; another run's work in output_dir is an error,
    # raised before loading, mining or evaluating. The settings (data files and folders by their content,
    # mining settings, seed) determine mined rows, so only rows given here count on their own; the router
    # mapping follows from the rows' columns.
    check_replaceable(output_dir / "final", "the final model folder")  # replaced only if llara_st wrote it
    given_rows = {"train_dataset": train_dataset} if train_dataset is not None else {}
    fingerprint = RunFingerprint.from_configs(args, given_rows, ignore=("router_mapping",))
    checkpoint = resolve_checkpoint(
        args.output_dir,
        args.resume_from_checkpoint,
        fingerprint,
        overwrite=args.overwrite_output_dir,
        stale_outputs=("final", "metrics.json"),
    )

    # 1. Model (+ LoRA adapter)
    model = load_finetune_model(args)
    if args.lora:
        add_lora_adapter_from_config(model, args, train_prompt_tokens=args.train_prompt_tokens)

    # 2. Data: rows (anchor, positive, negative_1 … negative_{group_size-1})
    if train_dataset is None:
        train_dataset = build_training_rows(args, model)
    elif not isinstance(train_dataset, Dataset):
        train_dataset = load_contrastive_dataset(train_dataset, args.group_size, args.positives, args.seed)
    # An empty query or passage would train the model to match the template alone: refused, naming the row.
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
    if evaluator is not None:
        metrics["before"] = evaluator(model)
        logger.info(
            "Dev before training: %s = %.4f", evaluator.primary_metric, metrics["before"][evaluator.primary_metric]
        )

    # 6. Train, resuming from a checkpoint if asked; a non-finite loss or gradient stops the run.
    trainer = train_with_guards(model, args, train_dataset, loss, checkpoint, callbacks, evaluator=evaluator)

    # 7. Evaluate after training
    if evaluator is not None:
        metrics["after"] = evaluator(model)
        logger.info(
            "Dev after training: %s = %.4f", evaluator.primary_metric, metrics["after"][evaluator.primary_metric]
        )

    # 8. Save (merged weights by default) with the metrics, unless the probe embeddings are non-finite or collapsed
    # (merging changes them only by rounding).
    final_dir = output_dir / "final"

    def save() -> None:
        if args.lora and args.merge_lora:
            merge_lora_adapter(model)
        save_model_staged(model, final_dir, "the final model folder")  # the whole model, or what was there before
        partial = output_dir / f".metrics.json.{os.getpid()}"
        partial.write_text(
            json.dumps({"config": args.to_dict(), "metrics": metrics}, indent=2, default=str), encoding="utf8"
        )
        partial.replace(output_dir / "metrics.json")
        logger.info("Saved the fine-tuned model to %s", final_dir)

    save_trained_model(trainer, save)
    return str(final_dir)
