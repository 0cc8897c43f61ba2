"""LoRA for LLaRA models: adapters on the decoder with the ``<s1>``…``<s16>`` embeddings trainable, and merging.

LLaRA (Li et al., 2023, arXiv:2312.15503) adds 16 prompt tokens to a causal LM; their embedding rows start
from an initial guess and must be trained along with the adapter, otherwise the prompts never learn. With
peft this is ``trainable_token_indices`` (a sparse delta on the selected rows only; with tied input and output
embeddings peft ties the delta to the output head too) or, as an alternative, full training of both
embedding matrices (``modules_to_save``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from peft import LoraConfig, PeftModel
from sentence_transformers import SentenceTransformer

import llara_st
from llara_st.modules import LLaRATransformer

logger = logging.getLogger(__name__)

LLAMA_LORA_TARGET_MODULES: tuple[str, ...] = (
    "q_proj",
    "k_proj",
    "v_proj",
    "o_proj",
    "gate_proj",
    "up_proj",
    "down_proj",
)
"""The reference LoRA targets (attention and MLP projections of Llama-style decoders)."""

TrainableEmbeddings = Literal["prompt_tokens", "all", "none"]


def llara_input_module(model: SentenceTransformer) -> LLaRATransformer:
    """The :class:`~llara_st.modules.LLaRATransformer` of a LLaRA model, or a clear error."""
    module = model[0] if len(model) else None
    if not isinstance(module, LLaRATransformer):
        raise TypeError(
            "Expected a LLaRA SentenceTransformer whose first module is LLaRATransformer "
            f"(see llara_st.build_llara_model), got first module {type(module).__name__}"
        )
    return module


def _module_name(root, target) -> str:
    for name, module in root.named_modules():
        if module is target:
            return name.rsplit(".", 1)[-1]
    raise ValueError(f"{type(target).__name__} is not a submodule of {type(root).__name__}")


def lora_config_for(
    model: SentenceTransformer,
    *,
    r: int = 64,
    alpha: int = 16,
    dropout: float = 0.1,
    target_modules: Sequence[str] = LLAMA_LORA_TARGET_MODULES,
    trainable_embeddings: TrainableEmbeddings = "prompt_tokens",
) -> LoraConfig:
    """The :class:`peft.LoraConfig` for a LLaRA model (reference: r 64, alpha 16, dropout 0.1).

    Args:
        model: The LLaRA model (its tokenizer gives the prompt-token ids).
        r, alpha, dropout: LoRA rank, scaling numerator, dropout.
        target_modules: Names of the linear layers that get adapters.
        trainable_embeddings: ``"prompt_tokens"`` trains the 16 ``<sK>`` embedding rows only (peft's
            ``trainable_token_indices``); ``"all"`` trains the whole input and output embedding matrices
            (``modules_to_save``); ``"none"`` freezes them (only sensible if the prompts are trained already).
    """
    if trainable_embeddings not in ("prompt_tokens", "all", "none"):
        raise ValueError(
            f"trainable_embeddings must be 'prompt_tokens', 'all' or 'none', got {trainable_embeddings!r}"
        )
    if r < 1:
        raise ValueError(f"LoRA rank r must be >= 1, got {r}")
    if not 0 <= dropout < 1:
        raise ValueError(f"LoRA dropout must be in [0, 1), got {dropout}")
    if not target_modules:
        raise ValueError("target_modules is empty: name the linear layers that get LoRA adapters")
    transformer = llara_input_module(model)
    causal_lm = transformer.causal_lm
    extra: dict = {}
    if trainable_embeddings == "prompt_tokens":
        embedding_name = _module_name(causal_lm, causal_lm.get_input_embeddings())
        extra["trainable_token_indices"] = {embedding_name: sorted(transformer.prompt_token_ids.values())}
    elif trainable_embeddings == "all":
        names = [_module_name(causal_lm, causal_lm.get_input_embeddings())]
        output = causal_lm.get_output_embeddings()
        if output is not None and output.weight is not causal_lm.get_input_embeddings().weight:
            names.append(_module_name(causal_lm, output))
        extra["modules_to_save"] = names
    return LoraConfig(
        r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=list(target_modules), bias="none", **extra
    )


def add_lora_adapter(model: SentenceTransformer, config: LoraConfig) -> None:
    """Attach a fresh LoRA adapter to the model's causal LM (only the adapter, and the chosen embeddings, train).

    Uses sentence-transformers' ``model.add_adapter`` so the trainer's checkpoints hold the adapter and
    resume restores it.

    Example::

        model = llara_st.load("llara-7b")
        add_lora_adapter(model, lora_config_for(model, r=64, alpha=16, dropout=0.1))
    """
    transformer = llara_input_module(model)
    missing = [
        name
        for name in (config.target_modules or [])
        if not any(module_name.split(".")[-1] == name for module_name, _ in transformer.causal_lm.named_modules())
    ]
    if missing:
        raise ValueError(
            f"LoRA target modules {missing} do not exist in {type(transformer.causal_lm).__name__}; "
            "set the target module names of this architecture"
        )
    model.add_adapter(config)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    logger.info("LoRA adapter added: %d of %d parameters trainable (%.3f%%)", trainable, total, 100 * trainable / total)


def merge_lora_adapter(adapter_dir: str | os.PathLike, base_dir: str | os.PathLike, output_dir: str | os.PathLike) -> str:
    """Merge a saved LoRA adapter into its base LLaRA model and save a plain LLaRA folder.

    Args:
        adapter_dir: A LLaRA sentence-transformers folder saved while an adapter was attached (it holds
            ``adapter_config.json`` and the adapter weights, not the base weights).
        base_dir: The LLaRA sentence-transformers folder the adapter was trained on.
        output_dir: Where to save the merged model; it loads with :func:`llara_st.load`.

    Returns:
        ``output_dir`` as a string.
    """
    adapter_dir = Path(adapter_dir)
    if not (adapter_dir / "adapter_config.json").is_file():
        raise FileNotFoundError(f"{adapter_dir} holds no adapter_config.json: it is not a saved LoRA adapter")
    model = llara_st.load(base_dir, device="cpu")
    transformer = llara_input_module(model)
    peft_model = PeftModel.from_pretrained(transformer.causal_lm, str(adapter_dir))
    transformer.model = peft_model.merge_and_unload()
    model.save(str(output_dir), safe_serialization=True)
    logger.info("Merged the LoRA adapter of %s into %s and saved %s", adapter_dir, base_dir, output_dir)
    return str(output_dir)
