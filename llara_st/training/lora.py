"""LoRA for LLaRA models (PEFT through sentence-transformers' ``add_adapter``): the settings both workflows share,
an adapter on every linear layer with the ``<sK>`` rows trainable, merging it, and saving per ``lora_save``."""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sentence_transformers import SentenceTransformer

import llara_st
from llara_st.folders import save_model_staged
from llara_st.model import llara_module
from llara_st.training.arguments import (
    ALL_LINEAR,
    LORA_SAVE_CHOICES,
    LLaRATrainingArguments,
    check_local_model_path,
)
from llara_st.training.checkpoints import path_identity

logger = logging.getLogger(__name__)

ADAPTER_NAME = "default"


def load_model_to_train(args: LLaRATrainingArguments) -> tuple[SentenceTransformer, str | None]:
    """The LLaRA model a workflow trains, and the LLaRA folder it was read from (None if converted in memory). A causal
    LM is converted; for a LoRA adapter, which records its base folder, into ``output_dir/base-llara-<id>``, named for
    the model's content (another model gets its own folder) and written by the main process alone."""
    check_local_model_path(args.model_name_or_path)  # a missing local folder is an error, never a Hub id
    model_kwargs = {"dtype": args.model_dtype, "attn_implementation": args.attn_implementation}
    model_kwargs = {key: value for key, value in model_kwargs.items() if value} or None
    source = Path(args.model_name_or_path)
    if not (source / "modules.json").is_file():
        if not args.lora:
            return llara_st.build_llara_model(args.model_name_or_path, model_kwargs=model_kwargs), None
        source = Path(args.output_dir) / f"base-llara-{path_identity(args.model_name_or_path)[:12]}"
        with args.main_process_first(local=False, desc="converting the causal LM"):
            if not (source / "modules.json").is_file():
                llara_st.convert(args.model_name_or_path, source)
    source = source.resolve()
    return llara_st.load(source, model_kwargs=model_kwargs), str(source)


def add_lora_adapter(
    model: SentenceTransformer,
    r: int = 64,
    alpha: int = 16,
    dropout: float = 0.1,
    target_modules: str | Sequence[str] = ALL_LINEAR,
    train_prompt_tokens: bool = True,
) -> Any:
    """Attach a fresh LoRA adapter (PEFT, via ``model.add_adapter``) to a LLaRA model's backbone, in place; only the
    adapter, kept in float32, trains. The defaults are the reference's (r 64, alpha 16, dropout 0.1, all-linear).
    Returns the ``peft.LoraConfig`` in effect (``target_modules``: the full names of the adapted layers).

    Args:
        model: A LLaRA model (the base must be a saved folder for an unmerged adapter to load later).
        target_modules: ``"all-linear"`` (or ``["all-linear"]``), or the names of the layers to adapt.
        train_prompt_tokens: Also train the embedding rows of ``<s1>``…``<s16>`` (PEFT's
            ``trainable_token_indices``), which ``llara-st convert`` initialises as mean embeddings.

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
    target_modules = target_modules if isinstance(target_modules, str) else list(target_modules)
    if target_modules == [ALL_LINEAR]:  # the config's list form of the shorthand
        target_modules = ALL_LINEAR
    elif isinstance(target_modules, list):  # peft would silently adapt fewer layers for a partial typo
        layers = {name.rsplit(".", 1)[-1] for name, _ in transformer.model.named_modules()}
        if unknown := sorted(set(target_modules) - layers):
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
    # fp16 mixed precision needs float32 trainable weights (its gradient scaler), even on a float16/bfloat16 base.
    cast_adapter_dtype(transformer.model, ADAPTER_NAME, autocast_adapter_dtype=True)
    trainable = sum(parameter.numel() for parameter in model.parameters() if parameter.requires_grad)
    total = sum(parameter.numel() for parameter in model.parameters())
    logger.info("LoRA adapter added: %d of %d parameters trainable (%.3f%%)", trainable, total, 100 * trainable / total)
    return transformer.model.peft_config[ADAPTER_NAME]


def add_lora_adapter_from_config(model: SentenceTransformer, config: LLaRATrainingArguments) -> Any:
    """:func:`add_lora_adapter` with a workflow's LoRA settings; returns the ``peft.LoraConfig`` used.

    Example::

        >>> from llara_st.training import add_lora_adapter_from_config, parse_finetune_arguments
        >>> (args,) = parse_finetune_arguments({"model_name_or_path": llara_path, "output_dir": "out", "lora_r": 4})
        >>> add_lora_adapter_from_config(model, args).r
        4
    """
    settings = (config.lora_r, config.lora_alpha, config.lora_dropout, config.lora_target_modules)
    return add_lora_adapter(model, *settings, train_prompt_tokens=config.train_prompt_tokens)


def has_lora_adapter(model: SentenceTransformer) -> bool:
    """Whether the backbone carries a PEFT adapter (added by :func:`add_lora_adapter` or loaded with one)."""
    return bool(getattr(llara_module(model, required=True).model, "peft_config", None))


def merge_lora_adapter(model: SentenceTransformer, base_model_name_or_path: str | None = None) -> SentenceTransformer:
    """Fold the LoRA adapter into the backbone's weights, in place (PEFT's ``merge_and_unload`` on the base weights,
    re-read from ``base_model_name_or_path``, default: the folder the adapter records): the model then saves as a
    plain LLaRA folder and embeds as before, up to float rounding.

    Example::

        >>> import numpy as np
        >>> import llara_st
        >>> from llara_st.training import add_lora_adapter, has_lora_adapter, merge_lora_adapter
        >>> model = llara_st.load(llara_path)  # the adapter records this folder as its base
        >>> _ = add_lora_adapter(model)
        >>> # move the adapter as training would (a fresh adapter's B matrices are zero)
        >>> _ = [parameter.data.normal_(std=0.05) for name, parameter in model.named_parameters() if "lora_B" in name]
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
    """Where ``lora_save`` puts the adapter alone: ``final_dir`` for ``adapter``, else ``<final_dir>-adapter``."""
    final_dir = Path(final_dir)
    return final_dir if lora_save == "adapter" else final_dir.with_name(final_dir.name + "-adapter")


def save_lora_model(
    model: SentenceTransformer,
    final_dir: str | Path,
    lora_save: str,
    what: str = "final_model_dir",
    base_model_name_or_path: str | None = None,
) -> Path:
    """Save a trained model as ``lora_save`` asks and return the model's folder: without an adapter, whole in
    ``final_dir``; with one, merged into the weights (``merged``), the adapter alone (``adapter``) or both (the adapter
    in :func:`adapter_folder`). Each folder is staged (:func:`~llara_st.folders.save_model_staged`); ``what`` names
    it in errors; ``base_model_name_or_path`` goes to :func:`merge_lora_adapter`."""
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
