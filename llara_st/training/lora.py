"""LoRA for LLaRA models (PEFT through sentence-transformers' ``add_adapter``): add an adapter on the linear
projections with the ``<sK>`` embedding rows trainable, ask whether a model has one, and fold it into the weights."""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Sequence
from typing import Any

from sentence_transformers import SentenceTransformer
from torch import nn

from llara_st.model import llara_module

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
ADAPTER_NAME = "default"


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
