"""Training building blocks shared by the recipes: the contrastive loss, LoRA adapters with trainable ``<sK>``
rows, merging, evaluators."""

from llara_st.training.finetuning import (
    LLAMA_LINEAR_PROJECTIONS,
    add_lora_adapter,
    autocast_available,
    beir_ir_evaluator,
    contrastive_loss,
    has_lora_adapter,
    llara_transformer,
    merge_lora_adapter,
)

__all__ = [
    "LLAMA_LINEAR_PROJECTIONS",
    "add_lora_adapter",
    "autocast_available",
    "beir_ir_evaluator",
    "contrastive_loss",
    "has_lora_adapter",
    "llara_transformer",
    "merge_lora_adapter",
]
