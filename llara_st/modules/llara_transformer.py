"""The LLaRA input module: a causal LM that reads ``BOS " text <suffix>`` and returns its hidden states."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, Literal

import torch
from sentence_transformers.base.modules import Transformer
from tokenizers import AddedToken

from llara_st.prompts import (
    DEFAULT_PASSAGE_MAX_LENGTH,
    DEFAULT_QUERY_MAX_LENGTH,
    PASSAGE_SUFFIX,
    PREFIX,
    PROMPT_TOKENS,
    QUERY_SUFFIX,
)

logger = logging.getLogger(__name__)

Side = Literal["query", "passage", "raw"]
_TASK_TO_SIDE: dict[str | None, Side] = {
    None: "passage",
    "document": "passage",
    "passage": "passage",
    "query": "query",
    # The text alone with the tokenizer's own special tokens, no template: what the adaptation loss reads.
    "raw": "raw",
}


class LLaRATransformer(Transformer):
    """Input module of a LLaRA embedder (Li et al., 2023, "Making Large Language Models A Better Foundation
    For Dense Retrieval", arXiv:2312.15503).

    Each text becomes ``prefix + text + suffix`` token by token: the prefix ``"`` tokenised with the
    tokenizer's own special tokens (BOS for Llama-2; nothing for a tokenizer without one, e.g. SmolLM2),
    the text without special tokens, and the passage suffix ``", summarize the above passage within eight
    words: <s1>…<s8>`` for documents or the query suffix ``", predict the following passage within eight
    words: <s9>…<s16>`` for queries. ``encode_query`` selects the query template, ``encode_document`` and
    plain ``encode`` the passage template. The text is truncated so that the whole input fits the side's
    max length; the suffix is never cut. Rows are left-padded. The module returns the last layer's hidden
    states (after the final norm) as ``token_embeddings``; :class:`~llara_st.modules.LastKPooling` averages
    the last 8 of them.

    The backbone is loaded with its causal-LM head (``AutoModelForCausalLM``), which the adaptation
    losses need; plain embedding never computes logits.

    Args:
        model_name_or_path: A Hugging Face causal LM (folder or Hub id) whose tokenizer holds ``<s1>``…``<s16>``.
        query_max_length: Max tokens of a query input, prefix and suffix included (reference 64).
        passage_max_length: Max tokens of a passage input, prefix and suffix included (reference 160).
        prefix, passage_suffix, query_suffix: The templates; the defaults are the released checkpoints'.
        add_prompt_tokens: Add any of ``<s1>``…``<s16>`` the tokenizer lacks as special tokens and resize the
            embeddings (what ``llara-st convert`` does). Tokens already present keep their ids.
        **kwargs: Passed to :class:`sentence_transformers.base.modules.Transformer`
            (``model_kwargs``, ``processor_kwargs``, ``config_kwargs``, ...).

    Example::

        from sentence_transformers import SentenceTransformer
        from sentence_transformers.base.modules import Normalize
        from llara_st.modules import LastKPooling, LLaRATransformer

        transformer = LLaRATransformer("meta-llama/Llama-2-7b-hf", add_prompt_tokens=True)
        model = SentenceTransformer(modules=[transformer, LastKPooling(), Normalize()])
        model.encode_query(["what causes tides?"])
    """

    config_keys: list[str] = Transformer.config_keys + [
        "query_max_length",
        "passage_max_length",
        "prefix",
        "passage_suffix",
        "query_suffix",
    ]

    def __init__(
        self,
        model_name_or_path: str,
        *,
        query_max_length: int = DEFAULT_QUERY_MAX_LENGTH,
        passage_max_length: int = DEFAULT_PASSAGE_MAX_LENGTH,
        prefix: str = PREFIX,
        passage_suffix: str = PASSAGE_SUFFIX,
        query_suffix: str = QUERY_SUFFIX,
        add_prompt_tokens: bool = False,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("transformer_task", "text-generation")
        if kwargs["transformer_task"] != "text-generation":
            raise ValueError(
                f"LLaRATransformer needs transformer_task='text-generation' (a causal LM with its output "
                f"head), got {kwargs['transformer_task']!r}"
            )
        kwargs.setdefault("modality_config", {"text": {"method": "forward", "method_output_name": None}})
        kwargs.setdefault("module_output_name", "token_embeddings")
        super().__init__(model_name_or_path, **kwargs)
        self.prefix = prefix
        self.passage_suffix = passage_suffix
        self.query_suffix = query_suffix
        self._ensure_prompt_tokens(add_prompt_tokens)
        self._ensure_pad_token()
        self.tokenizer.padding_side = "left"
        self._prefix_ids = self.tokenizer(prefix, add_special_tokens=True)["input_ids"]
        self._suffix_ids: dict[Side, list[int]] = {
            "passage": self.tokenizer(passage_suffix, add_special_tokens=False)["input_ids"],
            "query": self.tokenizer(query_suffix, add_special_tokens=False)["input_ids"],
        }
        self.query_max_length = query_max_length
        self.passage_max_length = passage_max_length
        for side in ("query", "passage"):
            self._text_budget(side)  # fail early on a max length that leaves no room for text

    # ------------------------------------------------------------------ set-up

    def _ensure_prompt_tokens(self, add_missing: bool) -> None:
        vocab = self.tokenizer.get_vocab()
        missing = [token for token in PROMPT_TOKENS if token not in vocab]
        if missing and not add_missing:
            raise ValueError(
                f"The tokenizer of this model lacks the LLaRA prompt tokens {missing}. Convert the causal LM "
                "first (`llara-st convert SRC DST` or `llara_st.convert(SRC, DST)`), or pass "
                "add_prompt_tokens=True."
            )
        if missing:
            self.tokenizer.add_special_tokens(
                {"extra_special_tokens": [AddedToken(token, special=True) for token in missing]},
                replace_extra_special_tokens=False,
            )
            # Mean-initialised new rows; training must make them trainable (see docs/adaptation.md).
            self.model.resize_token_embeddings(len(self.tokenizer))
            logger.info("Added %d LLaRA prompt tokens and resized the embeddings", len(missing))
        suffix_tokens = set(self.passage_suffix_tokens() + self.query_suffix_tokens())
        if not set(PROMPT_TOKENS) <= suffix_tokens:
            raise ValueError("The passage and query suffixes must end with <s1>…<s8> and <s9>…<s16>")

    def passage_suffix_tokens(self) -> list[str]:
        return self.tokenizer.tokenize(self.passage_suffix)

    def query_suffix_tokens(self) -> list[str]:
        return self.tokenizer.tokenize(self.query_suffix)

    def _ensure_pad_token(self) -> None:
        if self.tokenizer.pad_token_id is not None:
            return
        # The reference pads Llama-2 with <unk>; models without one (SmolLM2) pad with EOS. Pads are
        # masked out, so the choice never reaches an embedding.
        fallback = self.tokenizer.unk_token or self.tokenizer.eos_token
        if fallback is None:
            raise ValueError("The tokenizer has no pad, unk or eos token to pad with")
        self.tokenizer.pad_token = fallback

    # ------------------------------------------------------------------ properties

    @property
    def prompt_token_ids(self) -> dict[str, int]:
        """Ids of ``<s1>``…``<s16>`` as the tokenizer assigned them (not necessarily in order)."""
        return {token: self.tokenizer.convert_tokens_to_ids(token) for token in PROMPT_TOKENS}

    @property
    def prefix_ids(self) -> list[int]:
        return list(self._prefix_ids)

    def suffix_ids(self, side: Side) -> list[int]:
        return list(self._suffix_ids[side])

    def max_length(self, side: Side) -> int:
        return self.query_max_length if side == "query" else self.passage_max_length

    def _text_budget(self, side: Side, max_length: int | None = None) -> int:
        max_length = self.max_length(side) if max_length is None else max_length
        if side == "raw":
            return max_length
        budget = max_length - len(self._prefix_ids) - len(self._suffix_ids[side])
        if budget < 1:
            raise ValueError(
                f"{side}_max_length={max_length} leaves no room for text: the prefix and {side} suffix "
                f"already take {len(self._prefix_ids) + len(self._suffix_ids[side])} tokens"
            )
        return budget

    @property
    def causal_lm(self) -> torch.nn.Module:
        """The wrapped ``*ForCausalLM`` model, output head included."""
        return self.model

    @property
    def max_seq_length(self) -> int:
        return max(self.query_max_length, self.passage_max_length)

    @max_seq_length.setter
    def max_seq_length(self, value: int | None) -> None:
        # sentence-transformers sets this on the tokenizer; LLaRA's lengths are per side.
        if value is not None:
            self.passage_max_length = value

    # ------------------------------------------------------------------ preprocessing

    @staticmethod
    def side_for_task(task: str | None) -> Side:
        try:
            return _TASK_TO_SIDE[task]
        except KeyError:
            raise ValueError(
                f"Unknown task {task!r}: LLaRA embeds 'query' with the query template and "
                "'document'/'passage' (or no task) with the passage template"
            ) from None

    def tokenize_texts(self, texts: Sequence[str], side: Side, max_length: int | None = None) -> list[list[int]]:
        """Token ids of ``prefix + text + suffix`` for each text, unpadded, the text truncated to fit."""
        for position, text in enumerate(texts):
            if not isinstance(text, str):
                raise TypeError(
                    f"LLaRA embeds strings; the input at position {position} is "
                    f"{type(text).__name__}: {text!r:.80}"
                )
        budget = self._text_budget(side, max_length)
        if not texts:
            return []
        if side == "raw":
            return self.tokenizer(list(texts), add_special_tokens=True, truncation=True, max_length=budget)[
                "input_ids"
            ]
        text_ids = self.tokenizer(
            list(texts), add_special_tokens=False, truncation=True, max_length=budget
        )["input_ids"]
        suffix = self._suffix_ids[side]
        return [self._prefix_ids + ids + suffix for ids in text_ids]

    def pad(self, rows: Sequence[Sequence[int]]) -> dict[str, torch.Tensor]:
        """Left-pad token id rows into ``input_ids`` and ``attention_mask`` tensors."""
        width = max(len(row) for row in rows)
        pad_id = self.tokenizer.pad_token_id
        input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
        attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, row in enumerate(rows):
            if row:
                input_ids[i, width - len(row) :] = torch.tensor(row, dtype=torch.long)
                attention_mask[i, width - len(row) :] = 1
        return {"input_ids": input_ids, "attention_mask": attention_mask}

    def preprocess(
        self,
        inputs: Sequence[str],
        prompt: str | None = None,
        task: str | None = None,
        max_length: int | None = None,
        **kwargs: Any,
    ) -> dict[str, Any]:
        """Token ids and attention mask for ``inputs`` under the template that ``task`` selects.

        Args:
            inputs: The texts.
            prompt: An instruction placed before each text, inside the quotes (LLaRA itself uses none).
            task: ``"query"`` for the query template; ``"document"``, ``"passage"`` or None for the passage
                one; ``"raw"`` for the text alone with the tokenizer's special tokens (truncated to the passage
                max length), which :class:`~llara_st.losses.EBAEEBARLoss` reads.
            max_length: Overrides the side's max length (prefix and suffix included).
        """
        if isinstance(inputs, str):
            raise TypeError("preprocess takes a list of strings, not a single string")
        if not inputs:
            return {}
        side = self.side_for_task(task)
        texts = list(inputs)
        if prompt:
            texts = [prompt + text if isinstance(text, str) else text for text in texts]
        features = self.pad(self.tokenize_texts(texts, side, max_length))
        features["modality"] = "text"
        return features

    # ------------------------------------------------------------------ forward

    @staticmethod
    def position_ids_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
        """Positions counted over real tokens only, so that padding (left or right) moves nothing."""
        return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)

    def forward(self, features: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        if self.training and features.get("task") is None:
            logger.warning_once(
                "LLaRA is training on a column that reached it without a task, so it got the passage template. "
                "Queries need the query template: set `router_mapping` in the training arguments, e.g. "
                "{'anchor': 'query', 'positive': 'document', 'negative': 'document'}."
            )
        attention_mask = features["attention_mask"]
        position_ids = features.get("position_ids")
        if position_ids is None:
            position_ids = self.position_ids_from_mask(attention_mask)
        # A 4D additive mask (the adaptation loss's) replaces the causal one; the 2D mask still marks real tokens.
        # It comes through here, not around the module, so that DDP's gradient hooks see the forward.
        decoder_mask = features.get("attention_bias", attention_mask)
        # The decoder alone: the last hidden state after the final norm, no vocabulary projection.
        outputs = self.model.get_decoder()(
            input_ids=features["input_ids"],
            attention_mask=decoder_mask,
            position_ids=position_ids,
            use_cache=False,
            return_dict=True,
        )
        features["token_embeddings"] = outputs.last_hidden_state
        return features
