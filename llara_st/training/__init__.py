"""Training LLaRA models: the two workflows, EBAE/EBAR adaptation (:func:`run_adaptation`) and contrastive fine-tuning
(:func:`run_finetuning`), and their tools: config parsing (``arguments``), LoRA and its settings (``lora``), guards
and resumable checkpoints (``guards``, ``checkpoints``) and precision (``precision``). The recipes,
``llara-st adapt|finetune`` and the pipelines of :mod:`llara_st.pipelines` call these.

``contrastive_loss`` (:mod:`llara_st.losses`) and ``beir_ir_evaluator`` (:mod:`llara_st.evaluation`) are also named
here, where the fine-tuning workflow uses them."""

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
