"""Training LLaRA models: EBAE/EBAR adaptation (:func:`run_adaptation`) and contrastive fine-tuning
(:func:`run_finetuning`), with their tools: config parsing, LoRA, guards, resumable checkpoints and precision.
``contrastive_loss`` and ``beir_ir_evaluator``, which fine-tuning uses, are named here too."""

from llara_st.evaluation.ir_evaluator import beir_ir_evaluator
from llara_st.losses.contrastive import contrastive_loss
from llara_st.training.adaptation import (
    AdaptationArguments,
    build_adaptation_dataset,
    parse_adaptation_arguments,
    run_adaptation,
)
from llara_st.training.arguments import parse_arguments, read_config_file
from llara_st.training.checkpoints import RunFingerprint, resolve_checkpoint
from llara_st.training.finetuning import (
    FinetuneArguments,
    build_training_rows,
    parse_finetune_arguments,
    run_finetuning,
)
from llara_st.training.lora import (
    LoraArguments,
    add_lora_adapter,
    add_lora_adapter_from_config,
    has_lora_adapter,
    merge_lora_adapter,
)
from llara_st.training.precision import autocast_available

__all__ = [
    "AdaptationArguments",
    "FinetuneArguments",
    "LoraArguments",
    "RunFingerprint",
    "add_lora_adapter",
    "add_lora_adapter_from_config",
    "autocast_available",
    "beir_ir_evaluator",
    "build_adaptation_dataset",
    "build_training_rows",
    "contrastive_loss",
    "has_lora_adapter",
    "merge_lora_adapter",
    "parse_adaptation_arguments",
    "parse_arguments",
    "parse_finetune_arguments",
    "read_config_file",
    "resolve_checkpoint",
    "run_adaptation",
    "run_finetuning",
]
