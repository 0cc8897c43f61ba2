"""Training workflows and their building blocks: EBAE/EBAR adaptation, contrastive fine-tuning (LoRA or full), the
end-to-end reproduction pipeline and its report. The recipes and ``llara-st adapt|finetune|reproduce`` call these."""

from llara_st.training.adaptation import (
    AdaptationArguments,
    build_adaptation_dataset,
    parse_adaptation_arguments,
    run_adaptation,
)
from llara_st.training.arguments import parse_arguments, read_config_file
from llara_st.training.checkpoints import RunFingerprint, resolve_checkpoint
from llara_st.training.finetuning import (
    LLAMA_LINEAR_PROJECTIONS,
    FinetuneArguments,
    add_lora_adapter,
    add_lora_adapter_from_config,
    autocast_available,
    beir_ir_evaluator,
    build_training_rows,
    contrastive_loss,
    has_lora_adapter,
    merge_lora_adapter,
    parse_finetune_arguments,
    run_finetuning,
)

__all__ = [
    "LLAMA_LINEAR_PROJECTIONS",
    "AdaptationArguments",
    "FinetuneArguments",
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
