"""LoRA on a LLaRA model: only the adapter and the 16 prompt rows train, in float32; wrong targets and a merge
without an adapter are refused. (Merged vs unmerged embeddings: tests/recipes/test_finetune.py.)"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import llara_st
from llara_st.training.lora import LLAMA_LINEAR_PROJECTIONS, add_lora_adapter, merge_lora_adapter


def test_lora_trains_only_the_adapter_and_prompt_rows_in_float32(reference_llara_dir: Path) -> None:
    model = llara_st.load(reference_llara_dir, device="cpu", model_kwargs={"dtype": "float16"})
    add_lora_adapter(model, r=4, alpha=8)
    trainable = {name: p for name, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(p.dtype == torch.float32 for p in trainable.values())  # fp16 autocast needs it
    assert all("lora_" in name or "trainable_tokens_delta" in name for name in trainable)
    (delta,) = [p for name, p in trainable.items() if "trainable_tokens_delta" in name]
    assert delta.shape == (16, 64)  # the 16 <sK> rows only
    assert {name.split(".")[-4] for name in trainable if "lora_A" in name} == set(LLAMA_LINEAR_PROJECTIONS)

    with pytest.raises(ValueError, match="not linear layers"):
        add_lora_adapter(llara_st.load(reference_llara_dir, device="cpu"), target_modules=["qkv_proj"])
    with pytest.raises(ValueError, match="no adapter"):
        merge_lora_adapter(llara_st.load(reference_llara_dir, device="cpu"))
