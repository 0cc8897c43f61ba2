"""Training helpers shared by the recipes: LoRA adapters for LLaRA models."""

from llara_st.training.lora import (
    LLAMA_LORA_TARGET_MODULES,
    add_lora_adapter,
    llara_input_module,
    lora_config_for,
    merge_lora_adapter,
)

__all__ = [
    "LLAMA_LORA_TARGET_MODULES",
    "add_lora_adapter",
    "llara_input_module",
    "lora_config_for",
    "merge_lora_adapter",
]
