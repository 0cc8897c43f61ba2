"""LLaRA's adaptation loss: EBAE and EBAR bag-of-words prediction in one forward pass
(Li et al., 2023, arXiv:2312.15503, §2)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any

import torch.nn.functional as F
from sentence_transformers import SentenceTransformer
from torch import Tensor, nn
from torch.distributed.fsdp import FullyShardedDataParallel

from llara_st.citation import LLARA_CITATION
from llara_st.losses.ebae_ebar_collator import IGNORE_INDEX, AdaptationBatch
from llara_st.model import llara_module

BAG_OF_WORDS_SCALE = 10.0
"""Each bag-of-words term is divided by this (as in the reference implementation)."""

# Attention implementations that add a float 4D mask to the attention scores. Flash-attention kernels take
# only a padding mask, flex attention a block mask: they cannot express "query suffix cannot see passage suffix".
MASK_AWARE_ATTENTION: tuple[str, ...] = ("eager", "sdpa")


def bag_of_words_loss(prompt_logits: Tensor, target_ids: Tensor) -> Tensor:
    """One bag-of-words term (EBAE or EBAR), a scalar, from the logits at a prompt's special positions.

    The logits are max-pooled over the prompt positions, log-softmaxed (in float32), and each row scores the mean
    negative log-probability of its target ids; rows without targets are left out of the batch mean (none at all:
    0, still attached to the graph). The result is divided by :data:`BAG_OF_WORDS_SCALE`.

    Args:
        prompt_logits: ``[batch, positions, vocab]`` logits at the prompt's special tokens.
        target_ids: ``[batch, targets]`` unique target ids per row, padded with :data:`IGNORE_INDEX`.
    """
    if prompt_logits.ndim != 3 or target_ids.ndim != 2 or prompt_logits.shape[0] != target_ids.shape[0]:
        raise ValueError(
            f"Expected prompt logits [batch, positions, vocab] and target ids [batch, targets], got "
            f"{tuple(prompt_logits.shape)} and {tuple(target_ids.shape)}"
        )
    valid = target_ids != IGNORE_INDEX
    vocab_size = prompt_logits.shape[-1]
    if valid.any() and (target_ids[valid].min() < 0 or target_ids[valid].max() >= vocab_size):
        raise ValueError(f"Target ids must lie in [0, {vocab_size}) (the vocabulary) or be {IGNORE_INDEX}")
    log_probs = prompt_logits.max(dim=1).values.float().log_softmax(dim=-1)
    picked = log_probs.gather(1, target_ids.clamp(min=0)).masked_fill(~valid, 0.0)
    counts = valid.sum(dim=1)
    per_row = -picked.sum(dim=1) / counts.clamp(min=1)
    has_targets = counts > 0
    mean = (per_row * has_targets).sum() / has_targets.sum().clamp(min=1)
    return mean / BAG_OF_WORDS_SCALE


def next_token_loss(text_logits: Tensor, text_target_ids: Tensor) -> Tensor:
    """Mean next-token cross-entropy of ``text_logits`` (``[tokens, vocab]``, at the position before each text
    token) against the ``[tokens]`` text tokens (0, attached, if there are none)."""
    if text_target_ids.numel() == 0:
        return text_logits.sum() * 0.0
    return F.cross_entropy(text_logits.float(), text_target_ids)


def ebae_ebar_loss(
    passage_prompt_logits: Tensor,
    query_prompt_logits: Tensor,
    ebae_target_ids: Tensor,
    ebar_target_ids: Tensor,
    text_logits: Tensor | None = None,
    text_target_ids: Tensor | None = None,
    lm_weight: float = 1.0,
) -> dict[str, Tensor]:
    """The components of :class:`EBAEEBARLoss`, ``{"ebae": ebae / 2, "ebar": ebar / 2, "lm": lm_weight * lm}``
    (``"lm"`` absent when ``lm_weight`` is 0), whose sum is the loss: :func:`bag_of_words_loss` at each prompt
    against its targets, and :func:`next_token_loss` on the text (``text_logits`` and ``text_target_ids``, needed
    when ``lm_weight`` > 0). Shapes as in :class:`AdaptationLogits` and :class:`AdaptationBatch`.
    """
    components = {
        "ebae": bag_of_words_loss(passage_prompt_logits, ebae_target_ids) / 2,
        "ebar": bag_of_words_loss(query_prompt_logits, ebar_target_ids) / 2,
    }
    if lm_weight:
        if text_logits is None or text_target_ids is None:
            raise ValueError("lm_weight > 0 needs text_logits and text_target_ids")
        components["lm"] = lm_weight * next_token_loss(text_logits, text_target_ids)
    return components


@dataclass
class AdaptationLogits:
    """Logits of one adaptation pass, computed only where a loss term reads them: ``[batch, 8, vocab]`` at
    ``<s1>``…``<s8>`` and at ``<s9>``…``<s16>``; ``[tokens, vocab]`` before each text token, and those ``[tokens]``
    (both None without the LM term)."""

    passage_prompt_logits: Tensor
    query_prompt_logits: Tensor
    text_logits: Tensor | None
    text_target_ids: Tensor | None


class EBAEEBARLoss(nn.Module):
    """LLaRA's adaptation loss: EBAE (embedding-based auto-encoding) and EBAR (embedding-based auto-regression),
    Li et al., 2023, arXiv:2312.15503.

    Each (``text``, ``next_text``) row is one input built by :class:`~llara_st.losses.EBAEEBARDataCollator`, read
    in **one** forward pass in which the query suffix cannot see the passage suffix and reuses its position ids.
    The output head then runs only at the 16 prompt positions (and the text positions for the LM term):

    * **EBAE**: :func:`bag_of_words_loss` at ``<s1>``…``<s8>`` against the unique token ids of the text;
    * **EBAR**: the same at ``<s9>``…``<s16>`` against those of the *next* text;
    * **LM**: next-token cross-entropy on the text tokens (prefix and suffixes are not predicted).

    ``loss = lm_weight * lm + (ebae + ebar) / 2`` (reference ``lm_weight=1``; 0 disables the LM term, which keeps
    the bag-of-words terms from collapsing the embeddings); ``forward`` returns the three terms, which the trainer
    sums and logs. The model must run eager or SDPA attention; FSDP is refused (docs/adaptation_loss.md).

    Example::

        >>> from datasets import Dataset
        >>> from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments
        >>> from llara_st.losses import EBAEEBARDataCollator, EBAEEBARLoss
        >>> pairs = Dataset.from_dict({"text": ["The river rose.", "Rain."], "next_text": ["Fields flooded.", "Sun."]})
        >>> trainer = SentenceTransformerTrainer(
        ...     model=model,
        ...     args=SentenceTransformerTrainingArguments(output_dir="out", max_steps=1, report_to="none"),
        ...     train_dataset=pairs,
        ...     loss=EBAEEBARLoss(model, lm_weight=1.0),
        ...     data_collator=EBAEEBARDataCollator(model, cutoff_length=128),  # builds the adaptation input
        ... )
        >>> trainer.train().global_step  # the trainer prints its summary on the way
        {...'train_loss': ...}
        1
    """

    def __init__(self, model: SentenceTransformer, lm_weight: float = 1.0) -> None:
        super().__init__()
        self.model = model
        config = llara_module(model, required=True).causal_lm.config  # refuses a model that is not a LLaRA model
        if isinstance(lm_weight, bool) or not isinstance(lm_weight, int | float) or not math.isfinite(lm_weight):
            raise TypeError(f"lm_weight must be a finite number, got {lm_weight!r}")
        if lm_weight < 0:
            raise ValueError(f"lm_weight must be >= 0 (0 disables the LM term), got {lm_weight}")
        self.lm_weight = float(lm_weight)
        if getattr(config, "final_logit_softcapping", None) is not None:
            raise ValueError("EBAEEBARLoss supports plain linear output heads only, not final_logit_softcapping")

    def compute_logits(self, batch: AdaptationBatch) -> AdaptationLogits:
        """One model pass over the batch, then the output head at the prompt (and text) positions only."""
        causal_lm = llara_module(self.model, required=True).causal_lm  # looks through DDP / DeepSpeed wrappers
        implementation = getattr(causal_lm.config, "_attn_implementation", None)
        if implementation is not None and implementation not in MASK_AWARE_ATTENTION:
            raise ValueError(
                f"EBAEEBARLoss needs {' or '.join(MASK_AWARE_ATTENTION)} attention (4D mask), not {implementation!r}: "
                "load with model_kwargs={'attn_implementation': 'sdpa'} or set_attn_implementation('sdpa')"
            )
        if isinstance(self.model, FullyShardedDataParallel):
            # The output head runs after the wrapped forward, when FSDP has sharded its weights again.
            raise NotImplementedError("EBAEEBARLoss does not support FSDP; use DDP or DeepSpeed ZeRO")
        if isinstance(self.model, nn.parallel.DistributedDataParallel) and self.model.find_unused_parameters:
            # DDP would search the forward's outputs for used parameters and miss the head applied after it.
            raise ValueError("EBAEEBARLoss under DDP needs ddp_find_unused_parameters=False in the training arguments")
        # Through the model's own forward (a DDP wrapper's gradient all-reduce depends on it): LLaRATransformer
        # hands `attention_bias` and `position_ids` to the decoder; the pooling output is not used.
        inputs = ("input_ids", "attention_mask", "attention_bias", "position_ids")
        hidden = self.model({name: getattr(batch, name) for name in inputs} | {"task": "raw"})["token_embeddings"]
        head = causal_lm.get_output_embeddings()

        def logits_at(positions: Tensor) -> Tensor:
            return head(hidden.gather(1, positions.unsqueeze(-1).expand(-1, -1, hidden.shape[-1])))

        # The head is applied separately to each group of positions: slicing one joint logits tensor would
        # make autograd allocate a zero-filled gradient of the whole joint tensor for every slice.
        text_logits = text_target_ids = None
        if self.lm_weight:
            # Position t predicts token t+1: keep the positions whose next token is a text token.
            next_labels = batch.labels[:, 1:]
            predicts_text = next_labels != IGNORE_INDEX
            text_logits = head(hidden[:, :-1][predicts_text])
            text_target_ids = next_labels[predicts_text]
        return AdaptationLogits(
            passage_prompt_logits=logits_at(batch.passage_prompt_positions),
            query_prompt_logits=logits_at(batch.query_prompt_positions),
            text_logits=text_logits,
            text_target_ids=text_target_ids,
        )

    def forward(self, sentence_features: Sequence[dict[str, Any]], labels: Tensor | None = None) -> dict[str, Tensor]:
        """The loss components ``{"ebae", "ebar", "lm"}`` (their sum is the loss); ``labels`` is unused."""
        # The trainer hands the collator's batch as one feature group, its keys without the prefix.
        names = [field.name for field in fields(AdaptationBatch)]
        if len(sentence_features) != 1 or not all(name in sentence_features[0] for name in names):
            raise ValueError(
                f"EBAEEBARLoss got {len(sentence_features)} feature group(s) of another collator: pass "
                "data_collator=EBAEEBARDataCollator(model, cutoff_length=...) to SentenceTransformerTrainer"
            )
        batch = AdaptationBatch(**{name: sentence_features[0][name] for name in names})
        logits = self.compute_logits(batch)
        return ebae_ebar_loss(
            logits.passage_prompt_logits,
            logits.query_prompt_logits,
            batch.ebae_target_ids,
            batch.ebar_target_ids,
            logits.text_logits,
            logits.text_target_ids,
            lm_weight=self.lm_weight,
        )

    def get_config_dict(self) -> dict[str, Any]:
        return {"lm_weight": self.lm_weight}

    @property
    def citation(self) -> str:
        return LLARA_CITATION
