"""Building blocks of LLaRA contrastive fine-tuning (Li et al., 2023, arXiv:2312.15503, §3 of docs/METHOD.md):
the InfoNCE loss, LoRA on the seven linear projections with trainable ``<sK>`` rows, merging the adapter, and a
retrieval evaluator on a BEIR split. ``recipes/finetune.py`` strings them together."""

from __future__ import annotations

import logging
import random
import tempfile
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from sentence_transformers import SentenceTransformer
from sentence_transformers.sentence_transformer.evaluation import InformationRetrievalEvaluator
from sentence_transformers.sentence_transformer.losses import (
    CachedMultipleNegativesRankingLoss,
    MultipleNegativesRankingLoss,
)
from torch import nn

from llara_st.data.contrastive import relevant_documents
from llara_st.modules import LLaRATransformer

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


def llara_transformer(model: SentenceTransformer) -> LLaRATransformer:
    """The :class:`~llara_st.modules.LLaRATransformer` input module of a LLaRA model (an error otherwise)."""
    first = model[0]
    if not isinstance(first, LLaRATransformer):
        raise TypeError(
            f"expected a LLaRA model whose first module is LLaRATransformer, got {type(first).__name__}; "
            "build one with llara_st.build_llara_model or load one with llara_st.load"
        )
    return first


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

        loss = contrastive_loss(model, temperature=0.01, cached=True, mini_batch_size=16)
        trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=rows, loss=loss)
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

        model = llara_st.load("llara-base")
        add_lora_adapter(model, r=64, alpha=16, dropout=0.1)
    """
    from peft import LoraConfig
    from peft.functional import cast_adapter_dtype

    transformer = llara_transformer(model)
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


def has_lora_adapter(model: SentenceTransformer) -> bool:
    """Whether the backbone carries a PEFT adapter (added by :func:`add_lora_adapter` or loaded with one)."""
    return bool(getattr(llara_transformer(model).model, "peft_config", None))


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

        add_lora_adapter(model)
        trainer.train()
        merge_lora_adapter(model).save("llara-finetuned")
    """
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    transformer = llara_transformer(model)
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
