"""Mean of the last-layer hidden states at the last k real positions of each row."""

from __future__ import annotations

from typing import Any

import torch
from sentence_transformers.base.modules import Module

from llara_st.prompts import NUM_PROMPT_TOKENS


class LastKPooling(Module):
    """LLaRA pooling: the mean of ``token_embeddings`` over the last ``num_tokens`` positions whose
    attention mask is 1, i.e. over the 8 prompt tokens ``<s1>``…``<s8>`` (passages) or ``<s9>``…``<s16>``
    (queries) that end every LLaRA input.

    The positions follow the attention mask, so rows padded on the left (inference), on the right, or on
    both sides (the trainer merges columns by right-padding left-padded rows) pool the same tokens.
    The mean is computed in float32 and returned in the input dtype.

    Args:
        num_tokens: How many trailing positions to average (8 in LLaRA).

    Example::

        from llara_st.modules import LastKPooling
        pooling = LastKPooling(num_tokens=8)

    Reference: Li et al., 2023, arXiv:2312.15503.
    """

    config_keys: list[str] = ["num_tokens"]

    def __init__(self, num_tokens: int = NUM_PROMPT_TOKENS, **kwargs: Any) -> None:
        super().__init__()
        if not isinstance(num_tokens, int) or isinstance(num_tokens, bool) or num_tokens < 1:
            raise ValueError(f"num_tokens must be a positive integer, got {num_tokens!r}")
        self.num_tokens = num_tokens

    def forward(self, features: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        token_embeddings: torch.Tensor = features["token_embeddings"]
        mask = features["attention_mask"].bool()
        # How many real tokens lie at or after each position: the last k real tokens have 1..k.
        remaining = mask.flip(-1).long().cumsum(-1).flip(-1)
        selected = (mask & (remaining <= self.num_tokens)).unsqueeze(-1)
        summed = (token_embeddings.float() * selected).sum(dim=1)
        counts = selected.sum(dim=1).clamp(min=1)
        features["sentence_embedding"] = (summed / counts).to(token_embeddings.dtype)
        return features

    def get_embedding_dimension(self) -> int | None:
        return None

    def save(self, output_path: str, *args: Any, safe_serialization: bool = True, **kwargs: Any) -> None:
        self.save_config(output_path)
