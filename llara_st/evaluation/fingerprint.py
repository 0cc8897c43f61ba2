"""A short hash that tells models apart (the revision of a local model, the key of caches and search indexes),
without mteb."""

from __future__ import annotations

import json
from collections.abc import Iterator

import numpy as np
import torch
from sentence_transformers import SentenceTransformer

from llara_st.folders import content_digest

# Values sampled per parameter tensor: enough to tell checkpoints apart, cheap for 7B.
_FINGERPRINT_SAMPLES = 4096


def model_fingerprint(model: SentenceTransformer) -> str:
    """A 12-character hash of a model's module configs, prompts, similarity and a strided sample of at most 4096
    values of every weight tensor (milliseconds even for a 7B model)."""
    modules = [
        [f"{type(module).__module__}.{type(module).__qualname__}", getattr(module, "get_config_dict", lambda: None)()]
        for module in model
    ]
    settings = {"modules": modules, "prompts": model.prompts, "similarity": model.similarity_fn_name}

    def parts() -> Iterator[bytes]:
        yield json.dumps(settings, sort_keys=True, default=str).encode()
        with torch.no_grad():
            for name, tensor in model.state_dict().items():
                flat = tensor.detach().reshape(-1)
                step = max(1, flat.numel() // _FINGERPRINT_SAMPLES)
                sample = flat[::step][:_FINGERPRINT_SAMPLES].to(device="cpu", dtype=torch.float32).numpy()
                yield from (name.encode(), str(tuple(tensor.shape)).encode(), np.ascontiguousarray(sample).tobytes())

    return content_digest(parts())[:12]


__all__ = ["model_fingerprint"]
