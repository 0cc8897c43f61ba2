"""Mean of the last-layer hidden states at the last k real positions of each row."""

from __future__ import annotations

from typing import Any

import torch
from sentence_transformers.base.modules import Module

from llara_st.prompts import NUM_PROMPT_TOKENS


class LastKPooling(Module):
    """LLaRA pooling: the float32 mean of ``token_embeddings`` over the last ``num_tokens`` real positions (the 8
    prompt tokens ending every LLaRA input), in the input dtype, whatever the padding side. A ``num_tokens`` other
    than the input module's ``features["prompt_token_count"]`` is refused.

    Example::

        >>> import torch
        >>> from llara_st.modules import LastKPooling
        >>> pooling = LastKPooling(num_tokens=2)  # LLaRA: 8
        >>> features = {
        ...     "token_embeddings": torch.tensor([[[1.0], [2.0], [3.0], [0.0]], [[0.0], [5.0], [6.0], [7.0]]]),
        ...     "attention_mask": torch.tensor([[1, 1, 1, 0], [0, 1, 1, 1]]),  # right and left padding
        ... }
        >>> pooling(features)["sentence_embedding"]
        tensor([[2.5000],
                [6.5000]])

    Reference: Li et al., 2023, arXiv:2312.15503.
    """

    config_keys: list[str] = ["num_tokens"]

    def __init__(self, num_tokens: int = NUM_PROMPT_TOKENS, **kwargs: Any) -> None:
        super().__init__()
        if not isinstance(num_tokens, int) or isinstance(num_tokens, bool) or num_tokens < 1:
            raise ValueError(f"num_tokens must be a positive integer, got {num_tokens!r}")
        self.num_tokens = num_tokens

    def check_width(self, prompt_token_count: int | None) -> None:
        if prompt_token_count is not None and prompt_token_count != self.num_tokens:
            raise ValueError(
                f"LastKPooling averages the last {self.num_tokens} tokens, but every LLaRA template ends with "
                f"{prompt_token_count} prompt tokens: use LastKPooling(num_tokens={prompt_token_count})"
            )

    def forward(self, features: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        self.check_width(features.get("prompt_token_count"))
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
