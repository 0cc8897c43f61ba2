"""The adaptation input of LLaRA (Li et al., 2023, arXiv:2312.15503, §2), built by a data collator where
sentence-transformers builds inputs."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields
from importlib import resources
from typing import Any

import torch
from sentence_transformers import SentenceTransformer
from sentence_transformers.sentence_transformer.data_collator import SentenceTransformerDataCollator
from torch import Tensor
from torch.nn.utils.rnn import pad_sequence

from llara_st.model import llara_module
from llara_st.prompts import NUM_PROMPT_TOKENS

IGNORE_INDEX = -100
"""Padding of target-id tensors and label positions that are not predicted (the Hugging Face convention)."""

DEFAULT_CUTOFF_LENGTH = 128
"""Length of the whole adaptation input, both suffixes included (the reference ``cutoff_len``)."""

FEATURE_PREFIX = "adaptation_"
"""The collator's keys start with this; the trainer hands the loss one feature group without it."""


def adaptation_position_ids(real_mask: Tensor, passage_suffix_mask: Tensor, query_suffix_mask: Tensor) -> Tensor:
    """Position ids (``[batch, length]``, 0 on padding) under which both suffixes sit right after the text.

    Prefix and text tokens are numbered 0, 1, … over real tokens only (the masks, ``[batch, length]``, are 1 on real
    tokens, on the passage suffix, on the query suffix); the passage suffix continues the count, and the query
    suffix restarts it at the same place, so the k-th tokens of both suffixes share a position.
    """
    real = real_mask.bool()
    passage = passage_suffix_mask.bool() & real
    query = query_suffix_mask.bool() & real
    content_seen = (real & ~passage & ~query).long().cumsum(-1)
    positions = content_seen - 1
    positions = torch.where(passage, content_seen + passage.long().cumsum(-1) - 1, positions)
    positions = torch.where(query, content_seen + query.long().cumsum(-1) - 1, positions)
    return positions.clamp(min=0).masked_fill(~real, 0)


def adaptation_attention_mask(real_mask: Tensor, passage_suffix_mask: Tensor, query_suffix_mask: Tensor) -> Tensor:
    """The ``[batch, 1, length, length]`` boolean mask of the adaptation pass (masks of
    :func:`adaptation_position_ids`): True where a row may attend to a column.

    Causal attention over real tokens, except that query-suffix rows cannot see passage-suffix columns. Every row
    sees at least itself (a fully masked padding row would be NaN under eager attention).
    :class:`~llara_st.modules.LLaRATransformer` turns it into the additive float mask eager and SDPA attention take.
    """
    real = real_mask.bool()
    length = real.shape[-1]
    causal = torch.ones(length, length, dtype=torch.bool, device=real.device).tril()
    allowed = causal.unsqueeze(0) & real.unsqueeze(1)
    allowed = allowed & ~(query_suffix_mask.bool().unsqueeze(2) & passage_suffix_mask.bool().unsqueeze(1))
    allowed = allowed | torch.eye(length, dtype=torch.bool, device=real.device).unsqueeze(0)
    return allowed.unsqueeze(1)


def load_stop_words() -> list[str]:
    """The English stop-word list shipped with llara_st (``llara_st/data/stopwords_en.txt``)."""
    text = resources.files("llara_st").joinpath("data/stopwords_en.txt").read_text(encoding="utf8")
    return [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]


def stop_word_token_ids(tokenizer: Any, stop_words: Iterable[str]) -> set[int]:
    """Ids of the tokens that are, on their own, one of ``stop_words``.

    Each word is tokenised lower-case and capitalised, at the start of a text and after a space; a form that is
    a single token gives its id (``▁the``, ``▁The`` for Llama-2). A word of several tokens gives nothing: removing
    its pieces would also remove pieces of other words.
    """
    ids: set[int] = set()
    for word in stop_words:
        for form in {word, word.capitalize()}:
            for text in (form, " " + form):  # at the start of a text and after a space
                token_ids = tokenizer(text, add_special_tokens=False)["input_ids"]
                if len(token_ids) == 1:
                    ids.add(token_ids[0])
    return ids


@dataclass
class AdaptationBatch:
    """The inputs of one adaptation pass, built by :meth:`EBAEEBARDataCollator.build`.

    Attributes:
        input_ids: ``[batch, length]`` prefix + text + passage suffix + query suffix, left-padded (as the
            reference), so both suffixes sit at the same columns in every row.
        labels: ``[batch, length]`` the text ids on the text positions, :data:`IGNORE_INDEX` elsewhere.
        passage_prompt_positions: ``[batch, 8]`` columns of ``<s1>``…``<s8>`` (``query_prompt_positions``: of
            ``<s9>``…``<s16>``).
        ebae_target_ids: ``[batch, targets]`` unique ids of each text (``ebar_target_ids``: of each next text),
            padded with :data:`IGNORE_INDEX`.
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


class EBAEEBARDataCollator(SentenceTransformerDataCollator):
    """Data collator of LLaRA's adaptation (Li et al., 2023, arXiv:2312.15503): builds the one-pass EBAE/EBAR input
    of each (text, next text) row, the dataset's two text columns in that order.

    Each row becomes ``<prefix> text <passage suffix … <s1>…<s8>> <query suffix … <s9>…<s16>>``, left-padded,
    the text truncated so that the whole input has at most ``cutoff_length`` tokens (the suffixes are never cut;
    89 text tokens for Llama-2 at 128). The bag-of-words targets are ``text`` (EBAE) and ``next_text`` (EBAR) each
    tokenised on its own to ``cutoff_length`` tokens (special tokens counted, as the reference does), without the
    special ids, the 16 prompt ids and, with ``remove_stop_words``, the stop words; unique, sorted. The batch
    reaches :class:`~llara_st.losses.EBAEEBARLoss` as one feature group (docs/adaptation_loss.md).

    Args:
        cutoff_length: Max tokens of the whole input and of each target, special tokens included (reference 128).
        remove_stop_words: Drop English stop-word tokens from both targets (reference default: off).
        stop_words: Words to drop when ``remove_stop_words``; default :func:`load_stop_words`.

    Example::

        >>> from llara_st.losses import EBAEEBARDataCollator
        >>> collator = EBAEEBARDataCollator(model, cutoff_length=128)
        >>> batch = collator([{"text": "The river rose.", "next_text": "Fields flooded."}])  # a batch of rows
        >>> model[0].tokenizer.decode(batch["adaptation_input_ids"][0])
        '<s> " The river rose. ", summarize the above passage within eight words: <s1>...<s8>
        ", predict the following passage within eight words: <s9>...<s16>'
    """

    def __init__(
        self,
        model: SentenceTransformer,
        cutoff_length: int = DEFAULT_CUTOFF_LENGTH,
        remove_stop_words: bool = False,
        stop_words: Iterable[str] | None = None,
    ) -> None:
        super().__init__(preprocess_fn=model.preprocess)
        transformer = llara_module(model, required=True)
        if not isinstance(cutoff_length, int) or isinstance(cutoff_length, bool):
            raise TypeError(f"cutoff_length must be an integer, got {cutoff_length!r}")
        if stop_words is not None and not remove_stop_words:
            raise ValueError("stop_words was given but remove_stop_words is False: set remove_stop_words=True")
        self.transformer = transformer
        self.cutoff_length = cutoff_length
        self.remove_stop_words = remove_stop_words

        self._prefix_ids = transformer.prefix_ids
        self._passage_suffix_ids = transformer.suffix_ids("passage")
        self._query_suffix_ids = transformer.suffix_ids("query")
        template_length = len(self._prefix_ids) + len(self._passage_suffix_ids) + len(self._query_suffix_ids)
        self.text_budget = cutoff_length - template_length  # text tokens that fit beside the prefix and suffixes
        if self.text_budget < 1:
            raise ValueError(f"cutoff_length={cutoff_length} leaves no room for text ({template_length} taken)")
        transformer.check_positions("cutoff_length", cutoff_length)
        tokenizer = transformer.tokenizer
        # The reference tokenises each target with the tokenizer's special tokens up to the cutoff, then drops them.
        self.target_length = cutoff_length - tokenizer.num_special_tokens_to_add(pair=False)
        self._pad_id = tokenizer.pad_token_id  # LLaRATransformer gives every tokenizer one

        # LLaRATransformer checks that each suffix ends with its 8 prompt tokens, and left padding puts both suffixes
        # at the same distance from the last column in every row.
        self._query_prompt_from_end = torch.arange(-NUM_PROMPT_TOKENS, 0)
        self._passage_prompt_from_end = self._query_prompt_from_end - len(self._query_suffix_ids)

        excluded = set(tokenizer.all_special_ids) | set(transformer.prompt_token_ids.values()) | {self._pad_id}
        if remove_stop_words:
            words = list(stop_words) if stop_words is not None else load_stop_words()
            excluded |= stop_word_token_ids(tokenizer, words)
        self.excluded_target_ids: frozenset[int] = frozenset(excluded)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(cutoff_length={self.cutoff_length}, remove_stop_words={self.remove_stop_words})"

    def _bag_of_words(self, target_ids: list[list[int]]) -> Tensor:
        bags = [torch.tensor(sorted(set(ids) - self.excluded_target_ids), dtype=torch.long) for ids in target_ids]
        if all(len(bag) == 0 for bag in bags):
            return torch.empty((len(bags), 0), dtype=torch.long)
        return pad_sequence(bags, batch_first=True, padding_value=IGNORE_INDEX)

    def build(self, texts: Sequence[str], next_texts: Sequence[str]) -> AdaptationBatch:
        if len(texts) != len(next_texts):
            raise ValueError(f"Got {len(texts)} texts but {len(next_texts)} next texts")
        if not texts:
            raise ValueError("An adaptation batch needs at least one (text, next text) row")
        target_ids = self.transformer.tokenize_plain(texts, self.target_length)
        next_target_ids = self.transformer.tokenize_plain(next_texts, self.target_length)

        prefix = torch.tensor(self._prefix_ids, dtype=torch.long)
        suffix = torch.tensor(self._passage_suffix_ids + self._query_suffix_ids, dtype=torch.long)
        kept = [torch.tensor(ids[: self.text_budget], dtype=torch.long) for ids in target_ids]
        rows = [torch.cat([prefix, text, suffix]) for text in kept]
        label_rows = [
            torch.cat([prefix.new_full(prefix.shape, IGNORE_INDEX), text, suffix.new_full(suffix.shape, IGNORE_INDEX)])
            for text in kept
        ]
        input_ids = pad_sequence(rows, batch_first=True, padding_value=self._pad_id, padding_side="left")
        labels = pad_sequence(label_rows, batch_first=True, padding_value=IGNORE_INDEX, padding_side="left")
        attention_mask = pad_sequence(
            [torch.ones(len(row), dtype=torch.long) for row in rows], batch_first=True, padding_side="left"
        )

        batch_size, width = input_ids.shape
        query_start = width - len(self._query_suffix_ids)
        passage_start = query_start - len(self._passage_suffix_ids)
        columns = torch.arange(width)
        passage_suffix_mask = ((columns >= passage_start) & (columns < query_start)).expand(batch_size, -1)
        query_suffix_mask = (columns >= query_start).expand(batch_size, -1)
        return AdaptationBatch(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=adaptation_position_ids(attention_mask, passage_suffix_mask, query_suffix_mask),
            attention_bias=adaptation_attention_mask(attention_mask, passage_suffix_mask, query_suffix_mask),
            labels=labels,
            passage_prompt_positions=(self._passage_prompt_from_end + width).expand(batch_size, -1),
            query_prompt_positions=(self._query_prompt_from_end + width).expand(batch_size, -1),
            ebae_target_ids=self._bag_of_words(target_ids),
            ebar_target_ids=self._bag_of_words(next_target_ids),
        )

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        if not features:
            return {}
        batch = {"dataset_name": features[0]["dataset_name"]} if "dataset_name" in features[0] else {}
        columns = [column for column in features[0] if column not in {"dataset_name", *self.valid_label_columns}]
        if len(columns) != 2:
            raise ValueError(
                f"EBAEEBARDataCollator reads two text columns (text, next text), the dataset has {columns}"
            )
        for row_index, row in enumerate(features):
            for column in columns:
                if not isinstance(row[column], str):
                    raise TypeError(
                        f"Column {column!r} must hold strings, row {row_index} holds {type(row[column]).__name__}"
                    )
        built = self.build(*([row[column] for row in features] for column in columns))
        for field in fields(AdaptationBatch):
            batch[FEATURE_PREFIX + field.name] = getattr(built, field.name)
        return batch
