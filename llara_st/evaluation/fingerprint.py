"""A short hash that tells models apart: the revision of a local model, the key of caches and search indexes.

It needs torch and sentence-transformers only (not mteb), so a search index can record its model with the base
install.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from sentence_transformers import SentenceTransformer

from llara_st.folders import content_digest

# Values sampled per parameter tensor for the fingerprint: enough to tell checkpoints apart, cheap for 7B.
_FINGERPRINT_SAMPLES = 4096


def model_fingerprint(model: SentenceTransformer) -> str:
    """A short hash of a model's module configs, prompts and a strided sample of every weight tensor.

    Two checkpoints (or one model with different max lengths) get different fingerprints, so it serves
    as the revision of a local model in result folders and as the key of the embedding cache. It reads
    at most 4096 values per tensor, so it costs milliseconds even for a 7B model.
    """
    description = [
        [type(module).__module__ + "." + type(module).__qualname__, _module_config(module)] for module in model
    ]
    settings = {"modules": description, "prompts": model.prompts, "similarity": model.similarity_fn_name}
    return content_digest(_fingerprint_parts(model, settings))[:12]


def _fingerprint_parts(model: SentenceTransformer, settings: dict[str, Any]) -> Iterator[bytes]:
    """The settings as JSON, then each weight tensor's name, shape and strided sample of at most 4096 values."""
    yield json.dumps(settings, sort_keys=True, default=str).encode()
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            flat = tensor.detach().reshape(-1)
            step = max(1, flat.numel() // _FINGERPRINT_SAMPLES)
            sample = flat[::step][:_FINGERPRINT_SAMPLES].to(device="cpu", dtype=torch.float32).numpy()
            yield name.encode()
            yield str(tuple(tensor.shape)).encode()
            yield np.ascontiguousarray(sample).tobytes()


def _module_config(module: Any) -> Any:
    getter = getattr(module, "get_config_dict", None)
    return getter() if callable(getter) else None


__all__ = ["model_fingerprint"]
