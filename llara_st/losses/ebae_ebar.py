"""LLaRA's adaptation loss: EBAE and EBAR bag-of-words prediction in one forward pass (METHOD.md §2)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from sentence_transformers import SentenceTransformer
from torch import Tensor, nn
from torch.distributed.fsdp import FullyShardedDataParallel

from llara_st.citation import LLARA_CITATION
from llara_st.model import llara_module
from llara_st.modules.llara_transformer import LLaRATransformer
from llara_st.prompts import NUM_PROMPT_TOKENS, PASSAGE_PROMPT_TOKENS, QUERY_PROMPT_TOKENS

IGNORE_INDEX = -100
"""Padding of target-id tensors and label positions that are not predicted (the Hugging Face convention)."""

BAG_OF_WORDS_SCALE = 10.0
"""Each bag-of-words term is divided by this (as in the reference implementation)."""

DEFAULT_CUTOFF_LENGTH = 128
"""Length of the whole adaptation input, both suffixes included (the reference ``cutoff_len``)."""

# Attention implementations that add a float 4D mask to the attention scores. Flash-attention kernels take
# only a padding mask, flex attention a block mask: they cannot express "query suffix cannot see passage suffix".
MASK_AWARE_ATTENTION: tuple[str, ...] = ("eager", "sdpa")

STOP_WORDS_RESOURCE = "data/stopwords_en.txt"


# ---------------------------------------------------------------------------------------------- tensor functions


def adaptation_position_ids(real_mask: Tensor, passage_suffix_mask: Tensor, query_suffix_mask: Tensor) -> Tensor:
    """Position ids under which both suffixes sit right after the text.

    Prefix and text tokens are numbered 0, 1, … over real tokens only (padding on either side moves
    nothing); the passage suffix continues the count, and the query suffix restarts it at the same place,
    so the k-th query-suffix token shares the position of the k-th passage-suffix token.

    Args:
        real_mask: ``[batch, length]``, 1 on real tokens, 0 on padding.
        passage_suffix_mask: ``[batch, length]``, 1 on the passage-suffix tokens.
        query_suffix_mask: ``[batch, length]``, 1 on the query-suffix tokens.

    Returns:
        ``[batch, length]`` long tensor; 0 on padding.
    """
    real = real_mask.bool()
    passage = passage_suffix_mask.bool() & real
    query = query_suffix_mask.bool() & real
    content_seen = (real & ~passage & ~query).long().cumsum(-1)
    positions = content_seen - 1
    positions = torch.where(passage, content_seen + passage.long().cumsum(-1) - 1, positions)
    positions = torch.where(query, content_seen + query.long().cumsum(-1) - 1, positions)
    return positions.clamp(min=0).masked_fill(~real, 0)


def adaptation_attention_mask(
    real_mask: Tensor, passage_suffix_mask: Tensor, query_suffix_mask: Tensor, dtype: torch.dtype
) -> Tensor:
    """The additive 4D attention mask of the adaptation pass.

    Causal attention over real tokens, except that query-suffix rows cannot see passage-suffix columns.
    Allowed entries are 0, forbidden ones the dtype's minimum (not ``-inf``, and every row may see at least
    itself: a fully masked padding row would otherwise turn into NaN under eager attention). The mask must
    be a float tensor in the model's dtype: eager attention adds it to the scores, so a boolean mask would be
    added as 0/1 and silently mask nothing.

    Args:
        real_mask, passage_suffix_mask, query_suffix_mask: ``[batch, length]`` as in
            :func:`adaptation_position_ids`.
        dtype: The model's floating dtype.

    Returns:
        ``[batch, 1, length, length]`` tensor of ``dtype``.
    """
    if not dtype.is_floating_point:
        raise TypeError(f"The additive attention mask must be a floating dtype (the model's), got {dtype}")
    real = real_mask.bool()
    length = real.shape[-1]
    causal = torch.ones(length, length, dtype=torch.bool, device=real.device).tril()
    allowed = causal.unsqueeze(0) & real.unsqueeze(1)
    allowed = allowed & ~(query_suffix_mask.bool().unsqueeze(2) & passage_suffix_mask.bool().unsqueeze(1))
    allowed = allowed | torch.eye(length, dtype=torch.bool, device=real.device).unsqueeze(0)
    bias = torch.zeros(allowed.shape, dtype=dtype, device=real.device)
    bias = bias.masked_fill(~allowed, torch.finfo(dtype).min)
    return bias.unsqueeze(1)


def bag_of_words_loss(prompt_logits: Tensor, target_ids: Tensor) -> Tensor:
    """One bag-of-words term (EBAE or EBAR) from the logits at a prompt's special positions.

    The logits are max-pooled over the prompt positions, log-softmaxed over the vocabulary (in float32),
    and each row scores the mean negative log-probability of its target ids. Rows without any target id
    are left out of the batch mean (a batch without any gives 0, still attached to the graph). The result
    is divided by :data:`BAG_OF_WORDS_SCALE`.

    Args:
        prompt_logits: ``[batch, positions, vocab]`` logits at the prompt's special tokens.
        target_ids: ``[batch, targets]`` unique target ids per row, padded with :data:`IGNORE_INDEX`.

    Returns:
        A scalar tensor.
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
    """Mean next-token cross-entropy over the text tokens of the batch (0, attached, if there are none).

    Args:
        text_logits: ``[tokens, vocab]`` logits at the position before each text token.
        text_target_ids: ``[tokens]`` the text tokens.
    """
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
    """The LLaRA adaptation loss as named components whose sum is the loss.

    ``loss = lm_weight * lm + (ebae + ebar) / 2``, returned as ``{"ebae": ebae / 2, "ebar": ebar / 2,
    "lm": lm_weight * lm}`` (``"lm"`` absent when ``lm_weight`` is 0), where ``ebae`` and ``ebar`` are
    :func:`bag_of_words_loss` at the passage prompt ``<s1>…<s8>`` against the text's ids and at the query
    prompt ``<s9>…<s16>`` against the next text's ids, and ``lm`` is :func:`next_token_loss` on the text.

    Args:
        passage_prompt_logits, query_prompt_logits: ``[batch, 8, vocab]``.
        ebae_target_ids, ebar_target_ids: ``[batch, targets]``, padded with :data:`IGNORE_INDEX`.
        text_logits, text_target_ids: ``[tokens, vocab]`` and ``[tokens]``; needed when ``lm_weight`` > 0.
        lm_weight: Weight of the next-token term; 0 leaves it out.
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


# ---------------------------------------------------------------------------------------------- stop words


def load_stop_words() -> list[str]:
    """The English stop-word list shipped with llara_st (``llara_st/data/stopwords_en.txt``)."""
    text = resources.files("llara_st").joinpath(STOP_WORDS_RESOURCE).read_text(encoding="utf8")
    return [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]


def stop_word_token_ids(tokenizer: Any, stop_words: Iterable[str]) -> set[int]:
    """Ids of the tokens that are, on their own, one of ``stop_words``.

    Each word is tokenised lower-case and capitalised, at the start of a text and after a space; a form
    that becomes a single token contributes that token's id (``▁the`` and ``▁The`` for Llama-2, ``the``,
    ``Ġthe``, ``The`` and ``ĠThe`` for GPT-2-style tokenizers). Words split into several tokens contribute
    nothing: removing their pieces would also remove pieces of other words.
    """
    ids: set[int] = set()
    for word in stop_words:
        for form in {word, word.capitalize()}:
            at_start = tokenizer(form, add_special_tokens=False)["input_ids"]
            after_space = tokenizer(" " + form, add_special_tokens=False)["input_ids"]
            for token_ids in (at_start, after_space):
                if len(token_ids) == 1:
                    ids.add(token_ids[0])
    return ids


# ---------------------------------------------------------------------------------------------- the loss


@dataclass
class AdaptationBatch:
    """The inputs of one adaptation pass, built by :meth:`EBAEEBARLoss.build_inputs`.

    Attributes:
        input_ids: ``[batch, length]`` prefix + text + passage suffix + query suffix, left-padded.
        attention_mask: ``[batch, length]`` 1 on real tokens.
        position_ids: ``[batch, length]`` see :func:`adaptation_position_ids`.
        attention_bias: ``[batch, 1, length, length]`` see :func:`adaptation_attention_mask`.
        labels: ``[batch, length]`` the text ids on the text positions, :data:`IGNORE_INDEX` elsewhere.
        passage_prompt_positions: ``[batch, 8]`` columns of ``<s1>``…``<s8>``.
        query_prompt_positions: ``[batch, 8]`` columns of ``<s9>``…``<s16>``.
        ebae_target_ids: ``[batch, targets]`` unique ids of each text, padded with :data:`IGNORE_INDEX`.
        ebar_target_ids: ``[batch, targets]`` unique ids of each next text, padded likewise.
    """

    input_ids: Tensor
    attention_mask: Tensor
    position_ids: Tensor
    attention_bias: Tensor
    labels: Tensor
    passage_prompt_positions: Tensor
    query_prompt_positions: Tensor
    ebae_target_ids: Tensor
    ebar_target_ids: Tensor


@dataclass
class AdaptationLogits:
    """Logits of one adaptation pass, computed only where a loss term reads them.

    Attributes:
        passage_prompt_logits: ``[batch, 8, vocab]`` at ``<s1>``…``<s8>``.
        query_prompt_logits: ``[batch, 8, vocab]`` at ``<s9>``…``<s16>``.
        text_logits: ``[tokens, vocab]`` at the position before each text token (None if not needed).
        text_target_ids: ``[tokens]`` the text tokens those logits predict (None if not needed).
    """

    passage_prompt_logits: Tensor
    query_prompt_logits: Tensor
    text_logits: Tensor | None
    text_target_ids: Tensor | None


class EBAEEBARLoss(nn.Module):
    """LLaRA's adaptation loss: EBAE (embedding-based auto-encoding) and EBAR (embedding-based
    auto-regression), Li et al., 2023, "Making Large Language Models A Better Foundation For Dense
    Retrieval", arXiv:2312.15503.

    For each pair (``text``, ``next_text``) the loss reads one input::

        <prefix> text <passage suffix ... <s1>…<s8>> <query suffix ... <s9>…<s16>>

    i.e. ``BOS " text", summarize the above passage within eight words: <s1>…<s8>", predict the following
    passage within eight words: <s9>…<s16>`` for Llama-2, in **one** forward pass, in which

    * the query-suffix positions cannot attend to the passage-suffix positions (a 4D additive attention
      mask, otherwise causal), and
    * the query suffix reuses the position ids of the passage suffix, so each prompt sits right after the
      text;

    both passed through the decoder's public ``attention_mask`` / ``position_ids`` arguments. Then:

    * **EBAE**: the LM-head logits at ``<s1>``…``<s8>`` are max-pooled over the 8 positions and
      log-softmaxed; the term is the mean negative log-probability of the unique token ids of the text
      (its bag of words), averaged over the rows that have any, divided by 10.
    * **EBAR**: the same at ``<s9>``…``<s16>`` with the bag of words of the *next* text.
    * **LM**: next-token cross-entropy on the text tokens (prefix and suffixes are not predicted).

    ``loss = lm_weight * lm + (ebae + ebar) / 2``. With the defaults (``lm_weight=1``, no stop-word
    removal, ``cutoff_length=128``) this is the reference implementation's loss. Reports say the
    bag-of-words terms alone can collapse the embeddings (all similarities near 1); the LM term and
    stop-word removal guard against it.

    Targets follow the reference: each target is the target text tokenised on its own (the tokenizer's
    special tokens included) up to ``cutoff_length`` tokens, so the EBAE target of a long text also holds
    tokens beyond the part that fits the input. The tokenizer's special ids and the 16 prompt ids are
    removed (the reference drops ids ≤ 2: unk/pad, BOS, EOS), optionally the English stop words, and
    the rest is deduplicated: a bag, no order, no counts.

    The input text is truncated so that the whole input, both suffixes included, has at most
    ``cutoff_length`` tokens (128 − 2 − 19 − 18 = 89 text tokens for Llama-2).

    Only the logits the terms read are computed: the last hidden states once (the model's forward, with
    ``attention_bias`` and ``position_ids`` for :class:`~llara_st.modules.LLaRATransformer`), then the
    output head at the 16 prompt positions and, for the LM term, at the text positions; never
    full-sequence logits.

    **Inputs.** A dataset with the columns ``text`` and ``next_text`` (in that order; e.g. consecutive
    chunks of a corpus). The loss reads both columns tokenised by ``model.preprocess(..., task="raw")``
    (the text alone with the tokenizer's special tokens), which the trainer does when the training
    arguments set ``router_mapping=EBAEEBARLoss.ROUTER_MAPPING``; other features raise an error.
    ``cutoff_length`` may not exceed the model's passage max length (the raw texts are truncated to it).

    **Logged components.** ``forward`` returns ``{"ebae": ebae / 2, "ebar": ebar / 2, "lm": lm_weight *
    lm}``; the sentence-transformers trainer sums them into the loss and logs each (``ebae``, ``ebar``,
    ``lm``; ``eval_ebae``, …). The logged ``ebae``/``ebar`` are thus each term's share of the loss, half
    the term itself.

    **Attention.** The model must run eager or SDPA attention (the default): flash-attention kernels
    cannot take the 4D mask, and the loss refuses them with an error rather than train on a wrong mask.

    **Trainable prompt tokens.** With LoRA, the 16 prompt-token embedding rows are frozen unless made
    trainable (e.g. ``trainable_token_indices`` in peft's ``LoraConfig``); see ``docs/adaptation.md``.

    **Distributed training.** The hidden states come from the model's own forward (so DDP's gradient
    all-reduce sees it) and the output head is applied to them afterwards; DDP therefore needs
    ``ddp_find_unused_parameters=False`` (the loss says so otherwise). FSDP is refused (the head would run
    on resharded weights); DeepSpeed ZeRO is untested.

    Args:
        model: A LLaRA :class:`~sentence_transformers.SentenceTransformer` whose first module is a
            :class:`~llara_st.modules.LLaRATransformer` (e.g. from :func:`llara_st.build_llara_model`).
        cutoff_length: Max tokens of the whole input and of each target, special tokens included (reference
            128). Must leave room for text after the prefix and both suffixes.
        lm_weight: Weight of the next-token LM term on the text tokens (reference 1); 0 disables it.
        remove_stop_words: Drop English stop-word tokens from both targets (reference default: off).
        stop_words: Words to drop when ``remove_stop_words``; default :func:`load_stop_words` (the list
            shipped in ``llara_st/data/stopwords_en.txt``, nothing is downloaded).

    Example::

        from datasets import Dataset
        from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments
        import llara_st
        from llara_st.losses import EBAEEBARLoss

        model = llara_st.build_llara_model("HuggingFaceTB/SmolLM2-135M")
        pairs = Dataset.from_dict({"text": ["The river rose."], "next_text": ["The fields flooded."]})
        loss = EBAEEBARLoss(model, cutoff_length=128, lm_weight=1.0)
        args = SentenceTransformerTrainingArguments(
            output_dir="out", router_mapping=EBAEEBARLoss.ROUTER_MAPPING, learning_rate=1e-5
        )
        SentenceTransformerTrainer(model=model, args=args, train_dataset=pairs, loss=loss).train()
    """

    COLUMNS: ClassVar[tuple[str, str]] = ("text", "next_text")
    """The dataset columns the loss reads, in order."""

    ROUTER_MAPPING: ClassVar[dict[str, str]] = {"text": "raw", "next_text": "raw"}
    """Pass as ``router_mapping`` in the training arguments: both columns tokenised raw."""

    def __init__(
        self,
        model: SentenceTransformer,
        cutoff_length: int = DEFAULT_CUTOFF_LENGTH,
        lm_weight: float = 1.0,
        remove_stop_words: bool = False,
        stop_words: Iterable[str] | None = None,
    ) -> None:
        super().__init__()
        self.model = model
        transformer = self._input_module()
        if not isinstance(cutoff_length, int) or isinstance(cutoff_length, bool):
            raise TypeError(f"cutoff_length must be an integer, got {cutoff_length!r}")
        if isinstance(lm_weight, bool) or not isinstance(lm_weight, int | float) or not math.isfinite(lm_weight):
            raise TypeError(f"lm_weight must be a finite number, got {lm_weight!r}")
        if lm_weight < 0:
            raise ValueError(f"lm_weight must be >= 0 (0 disables the LM term), got {lm_weight}")
        if stop_words is not None and not remove_stop_words:
            raise ValueError("stop_words was given but remove_stop_words is False: set remove_stop_words=True")
        self.cutoff_length = cutoff_length
        self.lm_weight = float(lm_weight)
        self.remove_stop_words = remove_stop_words

        config = transformer.causal_lm.config
        if getattr(config, "final_logit_softcapping", None) is not None:
            raise ValueError(
                "This model soft-caps its logits (final_logit_softcapping); EBAEEBARLoss applies the output "
                "head alone and supports plain linear heads only"
            )

        tokenizer = transformer.tokenizer
        self._prefix_ids = transformer.prefix_ids
        self._passage_suffix_ids = transformer.suffix_ids("passage")
        self._query_suffix_ids = transformer.suffix_ids("query")
        template_length = len(self._prefix_ids) + len(self._passage_suffix_ids) + len(self._query_suffix_ids)
        self.text_budget = cutoff_length - template_length
        if self.text_budget < 1:
            raise ValueError(
                f"cutoff_length={cutoff_length} leaves no room for text: the prefix and both suffixes already "
                f"take {template_length} tokens"
            )
        if cutoff_length > transformer.passage_max_length:
            raise ValueError(
                f"cutoff_length={cutoff_length} exceeds the model's passage_max_length="
                f"{transformer.passage_max_length}, to which the raw texts are truncated, so the targets would "
                "be cut short. Lower cutoff_length or raise passage_max_length."
            )
        self._leading_special_ids, self._trailing_special_ids = _special_ids_added_by(tokenizer)
        self._pad_id = tokenizer.pad_token_id

        prompt_ids = transformer.prompt_token_ids
        self._passage_prompt_offsets = _offsets_of(
            [prompt_ids[token] for token in PASSAGE_PROMPT_TOKENS], self._passage_suffix_ids, "passage"
        )
        self._query_prompt_offsets = _offsets_of(
            [prompt_ids[token] for token in QUERY_PROMPT_TOKENS], self._query_suffix_ids, "query"
        )

        excluded = set(tokenizer.all_special_ids) | set(prompt_ids.values())
        if self._pad_id is not None:
            excluded.add(self._pad_id)
        if remove_stop_words:
            words = list(stop_words) if stop_words is not None else load_stop_words()
            excluded |= stop_word_token_ids(tokenizer, words)
        self.excluded_target_ids: frozenset[int] = frozenset(excluded)

    # ------------------------------------------------------------------------------------------ model access

    def _input_module(self) -> LLaRATransformer:
        return llara_module(self.model, required=True)  # looks through DDP / DeepSpeed wrappers (`.module`)

    def _check_wrapper(self) -> None:
        if isinstance(self.model, FullyShardedDataParallel):
            # The output head runs after the wrapped forward, when FSDP has sharded its weights again.
            raise NotImplementedError("EBAEEBARLoss does not support FSDP; use DDP or DeepSpeed ZeRO")
        if isinstance(self.model, nn.parallel.DistributedDataParallel) and self.model.find_unused_parameters:
            # DDP would search the forward's outputs for used parameters and miss the output head, which
            # the loss applies to the hidden states afterwards.
            raise ValueError(
                "EBAEEBARLoss under DistributedDataParallel needs find_unused_parameters=False: set "
                "ddp_find_unused_parameters=False in the training arguments"
            )

    @staticmethod
    def _check_attention_implementation(causal_lm: nn.Module) -> None:
        implementation = getattr(causal_lm.config, "_attn_implementation", None)
        if implementation is not None and implementation not in MASK_AWARE_ATTENTION:
            raise ValueError(
                f"EBAEEBARLoss needs an attention implementation that takes a 4D float attention mask "
                f"({' or '.join(MASK_AWARE_ATTENTION)}), but the model uses {implementation!r}, which cannot keep "
                "the query suffix from seeing the passage suffix. Load the model with "
                "model_kwargs={'attn_implementation': 'sdpa'} or call "
                "model[0].causal_lm.set_attn_implementation('sdpa')."
            )

    # ------------------------------------------------------------------------------------------ inputs

    def _check_features(self, sentence_features: Sequence[dict[str, Any]]) -> tuple[dict, dict]:
        if len(sentence_features) != 2:
            raise ValueError(
                f"EBAEEBARLoss reads two columns, {self.COLUMNS[0]!r} and {self.COLUMNS[1]!r}, got "
                f"{len(sentence_features)} feature group(s): the dataset must have exactly these two text columns"
            )
        for column, features in zip(self.COLUMNS, sentence_features, strict=True):
            task = features.get("task")
            if task != "raw":
                raise ValueError(
                    f"EBAEEBARLoss reads texts tokenised with task='raw', but column {column!r} arrived with "
                    f"task={task!r}. Set router_mapping=EBAEEBARLoss.ROUTER_MAPPING ({self.ROUTER_MAPPING}) in "
                    "the training arguments."
                )
            if "input_ids" not in features or "attention_mask" not in features:
                raise ValueError(f"Column {column!r} has no input_ids/attention_mask (not a tokenised text column)")
        return sentence_features[0], sentence_features[1]

    def _text_ids(self, features: dict[str, Tensor], column: str) -> list[list[int]]:
        """Each row's text ids: the real tokens (left- or right-padded) without the added special tokens."""
        lead, trail = self._leading_special_ids, self._trailing_special_ids
        rows = []
        for ids, mask in zip(features["input_ids"].tolist(), features["attention_mask"].tolist(), strict=True):
            real = [token for token, keep in zip(ids, mask, strict=True) if keep]
            if real[: len(lead)] != lead:
                raise ValueError(
                    f"A row of column {column!r} does not start with the tokenizer's special tokens {lead}: "
                    f"it was not tokenised with task='raw' (starts with {real[:5]})"
                )
            end = len(real) - len(trail) if trail and real[-len(trail) :] == trail else len(real)
            rows.append(real[len(lead) : end])
        return rows

    def _bag_of_words(self, text_ids: list[int]) -> list[int]:
        # The target text as tokenised on its own up to the cutoff, the tokenizer's special tokens counted.
        budget = self.cutoff_length - len(self._leading_special_ids) - len(self._trailing_special_ids)
        return sorted(set(text_ids[:budget]) - self.excluded_target_ids)

    def build_inputs(self, text_features: dict[str, Tensor], next_text_features: dict[str, Tensor]) -> AdaptationBatch:
        """The adaptation batch from the raw features of the ``text`` and ``next_text`` columns.

        Args:
            text_features, next_text_features: ``input_ids`` and ``attention_mask`` from
                ``model.preprocess(texts, task="raw")`` (padded on either side).
        """
        texts = self._text_ids(text_features, self.COLUMNS[0])
        next_texts = self._text_ids(next_text_features, self.COLUMNS[1])
        if len(texts) != len(next_texts):
            raise ValueError(f"Got {len(texts)} texts but {len(next_texts)} next texts")
        device = text_features["input_ids"].device
        prefix, passage_suffix, query_suffix = self._prefix_ids, self._passage_suffix_ids, self._query_suffix_ids
        suffix = passage_suffix + query_suffix
        rows, label_rows = [], []
        for text in texts:
            kept = text[: self.text_budget]
            rows.append(prefix + kept + suffix)
            label_rows.append([IGNORE_INDEX] * len(prefix) + kept + [IGNORE_INDEX] * len(suffix))

        batch_size, width = len(rows), max(len(row) for row in rows)
        pad_id = self._pad_id if self._pad_id is not None else 0
        input_ids = torch.full((batch_size, width), pad_id, dtype=torch.long)
        labels = torch.full((batch_size, width), IGNORE_INDEX, dtype=torch.long)
        attention_mask = torch.zeros((batch_size, width), dtype=torch.long)
        for i, (row, label_row) in enumerate(zip(rows, label_rows, strict=True)):
            input_ids[i, width - len(row) :] = torch.tensor(row)
            labels[i, width - len(row) :] = torch.tensor(label_row)
            attention_mask[i, width - len(row) :] = 1
        # Left padding puts both suffixes at the same columns in every row.
        query_start = width - len(query_suffix)
        passage_start = query_start - len(passage_suffix)
        columns = torch.arange(width)
        passage_suffix_mask = ((columns >= passage_start) & (columns < query_start)).expand(batch_size, -1)
        query_suffix_mask = (columns >= query_start).expand(batch_size, -1)

        input_ids, labels, attention_mask = input_ids.to(device), labels.to(device), attention_mask.to(device)
        passage_suffix_mask, query_suffix_mask = passage_suffix_mask.to(device), query_suffix_mask.to(device)
        dtype = self._input_module().causal_lm.get_input_embeddings().weight.dtype
        if not dtype.is_floating_point:  # quantised embeddings: the attention runs in the default float dtype
            dtype = torch.get_default_dtype()
        passage_prompts = torch.tensor(self._passage_prompt_offsets, device=device) + passage_start
        query_prompts = torch.tensor(self._query_prompt_offsets, device=device) + query_start
        return AdaptationBatch(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=adaptation_position_ids(attention_mask, passage_suffix_mask, query_suffix_mask),
            attention_bias=adaptation_attention_mask(attention_mask, passage_suffix_mask, query_suffix_mask, dtype),
            labels=labels,
            passage_prompt_positions=passage_prompts.expand(batch_size, -1),
            query_prompt_positions=query_prompts.expand(batch_size, -1),
            ebae_target_ids=_pad_id_lists([self._bag_of_words(text) for text in texts], device),
            ebar_target_ids=_pad_id_lists([self._bag_of_words(text) for text in next_texts], device),
        )

    # ------------------------------------------------------------------------------------------ forward

    def compute_logits(self, batch: AdaptationBatch) -> AdaptationLogits:
        """One model pass over the batch, then the output head at the prompt (and text) positions only."""
        causal_lm = self._input_module().causal_lm
        self._check_attention_implementation(causal_lm)
        self._check_wrapper()
        # Through the model's own forward (and so through a DDP wrapper's, whose gradient all-reduce depends
        # on it): LLaRATransformer hands `attention_bias` and `position_ids` to the decoder, the pooling
        # modules read the 2D mask and their output is not used.
        features = {
            "input_ids": batch.input_ids,
            "attention_mask": batch.attention_mask,
            "attention_bias": batch.attention_bias,
            "position_ids": batch.position_ids,
            "task": "raw",
        }
        hidden = self.model(features)["token_embeddings"]
        hidden_size = hidden.shape[-1]
        head = causal_lm.get_output_embeddings()

        def logits_at(positions: Tensor) -> Tensor:
            return head(hidden.gather(1, positions.unsqueeze(-1).expand(-1, -1, hidden_size)))

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
        text_features, next_text_features = self._check_features(sentence_features)
        batch = self.build_inputs(text_features, next_text_features)
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
        return {
            "cutoff_length": self.cutoff_length,
            "lm_weight": self.lm_weight,
            "remove_stop_words": self.remove_stop_words,
        }

    @property
    def citation(self) -> str:
        return LLARA_CITATION


# ---------------------------------------------------------------------------------------------- helpers


def _special_ids_added_by(tokenizer: Any) -> tuple[list[int], list[int]]:
    """The special ids the tokenizer puts before and after a text (e.g. ``[BOS]`` and ``[]`` for Llama-2)."""
    probe = "Hello world"
    plain = tokenizer(probe, add_special_tokens=False)["input_ids"]
    full = tokenizer(probe, add_special_tokens=True)["input_ids"]
    for start in range(len(full) - len(plain) + 1):
        if full[start : start + len(plain)] == plain:
            return full[:start], full[start + len(plain) :]
    raise ValueError(f"Cannot tell which special tokens the tokenizer adds: {plain} is not inside {full}")


def _offsets_of(prompt_ids: list[int], suffix_ids: list[int], side: str) -> list[int]:
    offsets = [index for prompt_id in prompt_ids for index, token in enumerate(suffix_ids) if token == prompt_id]
    if len(offsets) != NUM_PROMPT_TOKENS:
        raise ValueError(f"The {side} suffix must hold each of its {NUM_PROMPT_TOKENS} prompt tokens exactly once")
    return offsets


def _pad_id_lists(id_lists: list[list[int]], device: torch.device) -> Tensor:
    width = max((len(ids) for ids in id_lists), default=0)
    padded = torch.full((len(id_lists), width), IGNORE_INDEX, dtype=torch.long)
    for i, ids in enumerate(id_lists):
        padded[i, : len(ids)] = torch.tensor(ids, dtype=torch.long)
    return padded.to(device)
