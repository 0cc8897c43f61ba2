"""LLaRA training losses: EBAE/EBAR adaptation (with the data collator that builds its input) and contrastive."""

from llara_st.losses.contrastive import DEFAULT_TEMPERATURE, contrastive_loss
from llara_st.losses.ebae_ebar import (
    AdaptationLogits,
    EBAEEBARLoss,
    bag_of_words_loss,
    ebae_ebar_loss,
    next_token_loss,
)
from llara_st.losses.ebae_ebar_collator import (
    AdaptationBatch,
    EBAEEBARDataCollator,
    adaptation_attention_mask,
    adaptation_position_ids,
    load_stop_words,
    stop_word_token_ids,
)

__all__ = [
    "DEFAULT_TEMPERATURE",
    "AdaptationBatch",
    "AdaptationLogits",
    "EBAEEBARDataCollator",
    "EBAEEBARLoss",
    "adaptation_attention_mask",
    "adaptation_position_ids",
    "bag_of_words_loss",
    "contrastive_loss",
    "ebae_ebar_loss",
    "load_stop_words",
    "next_token_loss",
    "stop_word_token_ids",
]
