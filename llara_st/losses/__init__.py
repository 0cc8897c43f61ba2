"""LLaRA training losses for sentence-transformers."""

from llara_st.losses.ebae_ebar import (
    AdaptationBatch,
    AdaptationLogits,
    EBAEEBARLoss,
    adaptation_attention_mask,
    adaptation_position_ids,
    bag_of_words_loss,
    ebae_ebar_loss,
    load_stop_words,
    next_token_loss,
    stop_word_token_ids,
)

__all__ = [
    "AdaptationBatch",
    "AdaptationLogits",
    "EBAEEBARLoss",
    "adaptation_attention_mask",
    "adaptation_position_ids",
    "bag_of_words_loss",
    "ebae_ebar_loss",
    "load_stop_words",
    "next_token_loss",
    "stop_word_token_ids",
]
