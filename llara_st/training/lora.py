"""LoRA for LLaRA models (PEFT through sentence-transformers' ``add_adapter``): the LoRA settings both workflows
share (:class:`LoraArguments`), an adapter on every linear layer with the ``<sK>`` embedding rows trainable, whether
a model has one, folding it into the weights, and saving per ``lora_save``."""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sentence_transformers import SentenceTransformer

from llara_st.folders import save_model_staged
from llara_st.model import llara_module
from llara_st.training.arguments import check_choices

logger = logging.getLogger(__name__)

ADAPTER_NAME = "default"
#: peft's shorthand for every linear layer but the output head: the seven projections of a Llama block (Mistral,
#: Qwen2 and SmolLM2 name them alike), the reference's targets; tests/training/test_lora.py compares the sets.
ALL_LINEAR = "all-linear"
LORA_SAVE_CHOICES = ("merged", "adapter", "both")


@dataclass
class LoraArguments:
    """The LoRA settings of both workflows (:class:`~llara_st.training.AdaptationArguments` and
    :class:`~llara_st.training.FinetuneArguments` inherit them): whether to train an adapter instead of all weights,
    its shape, whether the ``<sK>`` embedding rows train with it, and how the result is saved.

    Example::

        >>> from llara_st.training.lora import LoraArguments
        >>> LoraArguments(lora=True, lora_save="both").lora_target_modules
        ['all-linear']
        >>> LoraArguments(lora_save="adapters")
        Traceback (most recent call last):
            ...
        ValueError: lora_save must be one of ('merged', 'adapter', 'both'), got 'adapters'
    """

    lora: bool = field(default=False, metadata={"help": "Train a LoRA adapter instead of all weights"})
    lora_r: int = field(default=64, metadata={"help": "LoRA rank"})
    lora_alpha: int = field(default=16, metadata={"help": "LoRA alpha"})
    lora_dropout: float = field(default=0.1, metadata={"help": "LoRA dropout"})
    lora_target_modules: list[str] = field(
        default_factory=lambda: [ALL_LINEAR],
        metadata={"help": "Layers that get adapters: [all-linear] (every linear layer but the head) or their names"},
    )
    train_prompt_tokens: bool = field(
        default=True, metadata={"help": "Train the 16 <sK> embedding rows along with the adapter"}
    )
    lora_save: str = field(
        default="merged",
        metadata={"help": "merged (a plain LLaRA model), adapter (the adapter alone), or both (adapter in *-adapter)"},
    )

    def __post_init__(self) -> None:
        check_choices(self, {"lora_save": LORA_SAVE_CHOICES})
        if self.lora_r < 1:
            raise ValueError(f"LoRA rank lora_r must be at least 1, got {self.lora_r}")
        parent = getattr(super(), "__post_init__", None)  # the trainer's arguments, in a class that has them too
        if parent is not None:
            parent()


def add_lora_adapter(
    model: SentenceTransformer,
    r: int = 64,
    alpha: int = 16,
    dropout: float = 0.1,
    target_modules: str | Sequence[str] = ALL_LINEAR,
    train_prompt_tokens: bool = True,
) -> Any:
    """Attach a fresh LoRA adapter (PEFT) to the backbone of a LLaRA model, in place; only it trains.

    The reference fine-tunes with LoRA r 64, α 16, dropout 0.1 on all seven linear projections of a Llama block:
    peft's ``"all-linear"`` (every linear layer but the output head), the default. With ``train_prompt_tokens``
    the embedding rows of ``<s1>``…``<s16>`` train too (PEFT's ``trainable_token_indices``; the rest of the
    vocabulary stays frozen, and LoRA on linear layers alone would never train them): new tokens added by
    ``llara-st convert`` start as mean embeddings and need it. The adapter is injected with
    sentence-transformers' ``model.add_adapter``, so a saved model holds the adapter only (and loads on top
    of its base folder), checkpoints resume, and :func:`merge_lora_adapter` folds it into the weights.

    Args:
        model: A LLaRA model (the base must be a saved folder for an unmerged adapter to load later).
        r, alpha, dropout: LoRA rank, scaling numerator and dropout.
        target_modules: ``"all-linear"`` (or ``["all-linear"]``), or the names of the layers to adapt.
        train_prompt_tokens: Also train the 16 prompt-token embedding rows.

    Returns:
        The ``peft.LoraConfig`` in effect (``target_modules``: the full names of the adapted layers).

    Example::

        >>> from llara_st.training import add_lora_adapter, has_lora_adapter
        >>> config = add_lora_adapter(model, r=64, alpha=16, dropout=0.1)
        >>> sorted({name.rsplit(".", 1)[-1] for name in config.target_modules})
        ['down_proj', 'gate_proj', 'k_proj', 'o_proj', 'q_proj', 'up_proj', 'v_proj']
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
    if not isinstance(target_modules, str):
        target_modules = list(target_modules)
        if target_modules == [ALL_LINEAR]:  # the config's list form of the shorthand
            target_modules = ALL_LINEAR
        else:
            # peft refuses a list none of whose names exists, but adapts silently fewer layers for a partial typo.
            names = {name.rsplit(".", 1)[-1] for name, _ in transformer.model.named_modules()}
            unknown = sorted(set(target_modules) - names)
            if unknown:
                raise ValueError(f"LoRA target modules {unknown} are no layers of this model")
    config = LoraConfig(
        r=r,
        lora_alpha=alpha,
        lora_dropout=dropout,
        target_modules=target_modules,
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
    return transformer.model.peft_config[ADAPTER_NAME]


def add_lora_adapter_from_config(model: SentenceTransformer, config: LoraArguments) -> Any:
    """:func:`add_lora_adapter` with a workflow's :class:`LoraArguments` (``lora_r``, ``lora_alpha``,
    ``lora_dropout``, ``lora_target_modules``, ``train_prompt_tokens``); returns the ``peft.LoraConfig`` used.

    Example::

        >>> from llara_st.training import add_lora_adapter_from_config, has_lora_adapter, parse_finetune_arguments
        >>> (args,) = parse_finetune_arguments({"model_name_or_path": llara_path, "output_dir": "out", "lora_r": 4})
        >>> add_lora_adapter_from_config(model, args).r
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
        train_prompt_tokens=config.train_prompt_tokens,
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


def adapter_folder(final_dir: str | Path, lora_save: str) -> Path:
    """Where ``lora_save`` puts the adapter alone: ``final_dir`` itself for ``adapter``, else the sibling
    ``<final_dir>-adapter`` (written for ``both``)."""
    final_dir = Path(final_dir)
    return final_dir if lora_save == "adapter" else final_dir.with_name(final_dir.name + "-adapter")


def save_lora_model(
    model: SentenceTransformer,
    final_dir: str | Path,
    lora_save: str,
    what: str = "final_model_dir",
    base_model_name_or_path: str | None = None,
) -> Path:
    """Save a trained model as ``lora_save`` asks and return the model's folder: a model without an adapter whole
    in ``final_dir``; with one, the adapter merged into the weights in ``final_dir`` (``merged``), the adapter alone
    in ``final_dir`` (``adapter``), or both (the adapter in :func:`adapter_folder`). Each folder is staged and moved
    into place (:func:`~llara_st.folders.save_model_staged`); merging happens in place, after the adapter is saved.

    Args:
        model: The trained LLaRA model.
        final_dir: The model's folder.
        lora_save: ``merged``, ``adapter`` or ``both``.
        what: How an error names the folder.
        base_model_name_or_path: The adapter's base for merging (default: the folder the adapter records).
    """
    final_dir = Path(final_dir)
    if not has_lora_adapter(model):
        return save_model_staged(model, final_dir, what)
    if lora_save not in LORA_SAVE_CHOICES:
        raise ValueError(f"lora_save must be one of {LORA_SAVE_CHOICES}, got {lora_save!r}")
    if lora_save != "merged":
        save_model_staged(model, adapter_folder(final_dir, lora_save), what)
    if lora_save != "adapter":
        save_model_staged(merge_lora_adapter(model, base_model_name_or_path), final_dir, what)
    return adapter_folder(final_dir, lora_save) if lora_save == "adapter" else final_dir
