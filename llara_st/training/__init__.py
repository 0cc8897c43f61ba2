"""Training LLaRA models: EBAE/EBAR adaptation (:func:`run_adaptation`) and contrastive fine-tuning
(:func:`run_finetuning`), with their tools: config parsing, LoRA, guards, resumable checkpoints and precision."""

from llara_st.evaluation.ir_evaluator import beir_ir_evaluator
from llara_st.training.adaptation import AdaptationArguments, parse_adaptation_arguments, run_adaptation
from llara_st.training.arguments import LLaRATrainingArguments, parse_arguments
from llara_st.training.checkpoints import RunFingerprint
from llara_st.training.finetuning import (
    FinetuneArguments,
    build_training_rows,
    parse_finetune_arguments,
    run_finetuning,
)
from llara_st.training.lora import (
    add_lora_adapter,
    add_lora_adapter_from_config,
    has_lora_adapter,
    merge_lora_adapter,
)

__all__ = [
    "AdaptationArguments",
    "FinetuneArguments",
    "LLaRATrainingArguments",
    "RunFingerprint",
    "add_lora_adapter",
    "add_lora_adapter_from_config",
    "beir_ir_evaluator",
    "build_training_rows",
    "has_lora_adapter",
    "merge_lora_adapter",
    "parse_adaptation_arguments",
    "parse_arguments",
    "parse_finetune_arguments",
    "run_adaptation",
    "run_finetuning",
]
