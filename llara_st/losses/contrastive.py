"""LLaRA's fine-tuning loss (Li et al., 2023, arXiv:2312.15503, §3): InfoNCE over cosine similarities at a
temperature, with in-batch and hard negatives; sentence-transformers' ranking losses at ``scale = 1 / temperature``."""

from __future__ import annotations

from sentence_transformers import SentenceTransformer
from sentence_transformers.sentence_transformer.losses import (
    CachedMultipleNegativesRankingLoss,
    MultipleNegativesRankingLoss,
)
from torch import nn

DEFAULT_TEMPERATURE = 0.01


def contrastive_loss(
    model: SentenceTransformer,
    temperature: float = DEFAULT_TEMPERATURE,
    cached: bool = False,
    mini_batch_size: int = 32,
    gather_across_devices: bool = False,
) -> nn.Module:
    """LLaRA's fine-tuning loss: InfoNCE over cosine similarities divided by ``temperature``.

    Each query (column ``anchor``) is scored against its positive, its hard negatives (``negative_1`` …) and every
    other passage of the batch, as the reference's ``q_reps @ p_reps.T / 0.01`` and cross entropy:
    ``MultipleNegativesRankingLoss`` with ``scale = 1 / temperature``, or with ``cached`` its GradCache variant
    (the same loss and gradients, ``mini_batch_size`` texts in memory at a time).

    Args:
        temperature: Softmax temperature (reference 0.01, i.e. scale 100).
        gather_across_devices: Also score each query against the other processes' passages (the reference's
            ``negatives_cross_device``).

    Example::

        >>> from llara_st.losses import contrastive_loss
        >>> contrastive_loss(model, temperature=0.01, cached=True, mini_batch_size=16).scale
        100.0
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    if cached:
        if mini_batch_size < 1:
            raise ValueError(f"mini_batch_size must be at least 1, got {mini_batch_size}")
        return CachedMultipleNegativesRankingLoss(
            model,
            scale=1.0 / temperature,
            mini_batch_size=mini_batch_size,
            gather_across_devices=gather_across_devices,
        )
    return MultipleNegativesRankingLoss(model, scale=1.0 / temperature, gather_across_devices=gather_across_devices)
