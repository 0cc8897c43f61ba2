"""The LLaRA input module: a causal LM that reads ``BOS " text <suffix>`` and returns its hidden states."""

from __future__ import annotations

import copy
import itertools
import logging
from collections.abc import Sequence
from typing import Any, Literal

import torch
from sentence_transformers.base.modules import Transformer
from tokenizers import AddedToken, Tokenizer
from torch import nn

from llara_st.modules.last_k_pooling import LastKPooling
from llara_st.prompts import (
    DEFAULT_PASSAGE_MAX_LENGTH,
    DEFAULT_QUERY_MAX_LENGTH,
    NUM_PROMPT_TOKENS,
    PASSAGE_PROMPT_TOKENS,
    PASSAGE_SUFFIX,
    PREFIX,
    PROMPT_TOKENS,
    QUERY_PROMPT_TOKENS,
    QUERY_SUFFIX,
)

logger = logging.getLogger(__name__)

Side = Literal["query", "passage", "raw"]  # "raw": the text alone, no template (what the adaptation loss reads)
_TASK_TO_SIDE: dict[str | None, Side] = {
    None: "passage",
    "document": "passage",
    "passage": "passage",
    "query": "query",
    "raw": "raw",
}


def _max_length_property(side: Side) -> property:
    """Max tokens of a ``side`` input, prefix and suffix included, checked when set."""

    def setter(self: LLaRATransformer, value: int) -> None:
        setattr(self, f"_{side}_max_length", self._checked_max_length(side, value))

    return property(lambda self: getattr(self, f"_{side}_max_length"), setter, doc=f"Max tokens of a {side} input.")


class LLaRATransformer(Transformer):
    """Input module of a LLaRA embedder (Li et al., 2023, arXiv:2312.15503).

    Each text becomes ``prefix + text + suffix`` token by token: the prefix ``"`` with the tokenizer's own special
    tokens (BOS for Llama-2), the text, and the passage suffix ``", summarize the above passage within eight words:
    <s1>…<s8>`` or the query suffix ``", predict the following passage within eight words: <s9>…<s16>``. Only the
    text is truncated; rows are right-padded. It returns the last hidden states (after the final norm) as
    ``token_embeddings``, of which :class:`~llara_st.modules.LastKPooling` averages the last 8.

    ``encode_query`` gives the query template, ``encode_document`` and ``encode`` the passage one; a prompt without
    a task is refused. ``task="raw"`` (the text alone) gives no embedding: its forward needs the 4D
    ``attention_bias`` of :class:`~llara_st.losses.EBAEEBARDataCollator`. Thread-safe: the task and max length
    travel with each call and tokenisation uses private copies of the tokenizer's backend.

    Args:
        model_name_or_path: A causal LM (folder or Hub id), loaded with its LM head; its tokenizer must hold
            ``<s1>``…``<s16>``.
        query_max_length: Max tokens of a query input, prefix and suffix included (reference 64).
        passage_max_length: Same for passages (reference 160).
        prefix, passage_suffix, query_suffix: The templates; each suffix must end with its 8 prompt tokens.
        add_prompt_tokens: Add the missing ``<s1>``…``<s16>`` as special tokens and resize the embeddings.

    Example::

        >>> from sentence_transformers import SentenceTransformer
        >>> from sentence_transformers.base.modules import Normalize
        >>> from llara_st.modules import LastKPooling, LLaRATransformer
        >>> transformer = LLaRATransformer(causal_lm_path, add_prompt_tokens=True)  # e.g. "meta-llama/Llama-2-7b-hf"
        >>> model = SentenceTransformer(modules=[transformer, LastKPooling(), Normalize()])
        >>> model.encode_query(["what causes tides?"]).shape == (1, transformer.get_embedding_dimension())
        True
    """

    config_keys: list[str] = Transformer.config_keys + [
        "query_max_length",
        "passage_max_length",
        "prefix",
        "passage_suffix",
        "query_suffix",
    ]
    # The model's forward hands each call's task to this module (encode(task=...), encode_query, ...).
    forward_kwargs: set[str] = set(Transformer.forward_kwargs) | {"task"}

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
                f"LLaRATransformer needs transformer_task='text-generation', got {kwargs['transformer_task']!r}"
            )
        kwargs.setdefault("modality_config", {"text": {"method": "forward", "method_output_name": None}})
        kwargs.setdefault("module_output_name", "token_embeddings")
        super().__init__(model_name_or_path, **kwargs)
        self.prefix = prefix
        self.passage_suffix = passage_suffix
        self.query_suffix = query_suffix
        tokenizer = self.tokenizer
        vocab = tokenizer.get_vocab()
        missing = [token for token in PROMPT_TOKENS if token not in vocab]
        if missing and not add_prompt_tokens:
            raise ValueError(
                f"The tokenizer lacks the LLaRA prompt tokens {missing}: convert the causal LM first "
                "(`llara-st convert SRC DST`), or pass add_prompt_tokens=True"
            )
        if missing:
            tokenizer.add_special_tokens(
                {"extra_special_tokens": [AddedToken(token, special=True) for token in missing]},
                replace_extra_special_tokens=False,
            )
            # Mean-initialised new rows; training must make them trainable (see docs/adaptation.md). Their tiny
            # noise is drawn with a fixed seed, so two conversions agree, in forked RNGs that the caller keeps.
            devices = sorted({param.device.index for param in self.model.parameters() if param.device.type == "cuda"})
            with torch.random.fork_rng(devices=devices):
                torch.random.default_generator.manual_seed(0)
                for index in devices:
                    torch.cuda.default_generators[index].manual_seed(0)
                self.model.resize_token_embeddings(len(tokenizer))
            logger.info("Added %d LLaRA prompt tokens and resized the embeddings", len(missing))
        if tokenizer.pad_token_id is None:
            # The reference pads Llama-2 with <unk>, else EOS; pads are masked out, never reaching an embedding.
            fallback = tokenizer.unk_token or tokenizer.eos_token
            if fallback is None:
                raise ValueError("The tokenizer has no pad, unk or eos token to pad with")
            tokenizer.pad_token = fallback
        # Positions and pooling follow the attention mask, so the padding side never changes an embedding.
        tokenizer.padding_side = "right"
        self._prefix_ids = tokenizer(prefix, add_special_tokens=True)["input_ids"]
        self._suffix_ids: dict[Side, list[int]] = {
            "passage": tokenizer(passage_suffix, add_special_tokens=False)["input_ids"],
            "query": tokenizer(query_suffix, add_special_tokens=False)["input_ids"],
        }
        # The pooling averages the last 8 positions: they must be these 8 prompt tokens, in this order.
        for side, suffix, prompt_tokens in (
            ("passage", passage_suffix, PASSAGE_PROMPT_TOKENS),
            ("query", query_suffix, QUERY_PROMPT_TOKENS),
        ):
            ending = self._suffix_ids[side][-len(prompt_tokens) :]
            if ending != tokenizer.convert_tokens_to_ids(prompt_tokens):
                raise ValueError(
                    f"The {side} suffix must end with the prompt tokens {''.join(prompt_tokens)}, which LastKPooling "
                    f"averages; {side}_suffix={suffix!r} ends with {tokenizer.convert_ids_to_tokens(ending)}"
                )
        # Private truncating copies of the backend tokenizer, one per max length, never reconfigured once made.
        self._encoders: dict[int, Tokenizer] = {}
        self._query_max_length = self._checked_max_length("query", query_max_length)
        self._passage_max_length = self._checked_max_length("passage", passage_max_length)

    @property
    def prompt_token_ids(self) -> dict[str, int]:
        """Ids of ``<s1>``…``<s16>`` as the tokenizer assigned them (not necessarily in order)."""
        return {token: self.tokenizer.convert_tokens_to_ids(token) for token in PROMPT_TOKENS}

    @property
    def prefix_ids(self) -> list[int]:
        return list(self._prefix_ids)

    def suffix_ids(self, side: Side) -> list[int]:
        return list(self._suffix_ids[side])

    @property
    def causal_lm(self) -> torch.nn.Module:
        """The wrapped ``*ForCausalLM`` model, output head included."""
        return self.model

    @property
    def max_position_embeddings(self) -> int | None:
        """The longest input the backbone's position embeddings cover, if its config says."""
        return getattr(self.model.config.get_text_config(), "max_position_embeddings", None)

    def check_positions(self, setting: str, length: int) -> None:
        """Refuse an input length (``setting`` names it) beyond the backbone's ``max_position_embeddings``."""
        limit = self.max_position_embeddings
        if limit is not None and length > limit:
            raise ValueError(
                f"{setting}={length} exceeds the backbone's max_position_embeddings={limit}: use at most {limit}"
            )

    def _checked_max_length(self, side: Side, value: int) -> int:
        if not isinstance(value, int) or isinstance(value, bool):
            raise TypeError(f"{side}_max_length must be an integer, got {value!r}")
        self._text_budget(side, value)
        self.check_positions(f"{side}_max_length", value)
        return value

    def _text_budget(self, side: Side, max_length: int | None = None) -> int:
        if max_length is None:
            max_length = self.query_max_length if side == "query" else self.passage_max_length
        if side == "raw":
            return max_length
        template_length = len(self._prefix_ids) + len(self._suffix_ids[side])
        if max_length - template_length < 1:
            raise ValueError(
                f"{side}_max_length={max_length} leaves no room for text: the prefix and {side} suffix "
                f"already take {template_length} tokens"
            )
        return max_length - template_length

    query_max_length = _max_length_property("query")
    passage_max_length = _max_length_property("passage")

    @property
    def max_seq_length(self) -> int:
        """The larger max length; setting it sets ``passage_max_length`` and caps ``query_max_length`` at it."""
        return max(self.query_max_length, self.passage_max_length)

    @max_seq_length.setter
    def max_seq_length(self, value: int | None) -> None:
        if value is None:  # sentence-transformers' "no limit": keep the template lengths
            return
        passage_max_length = self._checked_max_length("passage", value)
        query_max_length = self._checked_max_length("query", min(self.query_max_length, value))
        self._passage_max_length, self._query_max_length = passage_max_length, query_max_length

    def _encode_ids(self, texts: list[str], max_length: int, add_special_tokens: bool) -> list[list[int]]:
        if not self.tokenizer.is_fast:  # Python tokenizers truncate per call and keep no state between calls
            encoded = self.tokenizer(
                texts, add_special_tokens=add_special_tokens, truncation=True, max_length=max_length
            )
            return encoded["input_ids"]
        # A fast tokenizer's truncation is state of its shared backend, so two threads would cut each other's
        # texts: each max length gets its own copy of the backend, configured once as the tokenizer would.
        encoder = self._encoders.get(max_length)
        if encoder is None:
            encoder = copy.deepcopy(self.tokenizer.backend_tokenizer)
            encoder.no_padding()
            encoder.enable_truncation(
                max_length=max_length, stride=0, strategy="longest_first", direction=self.tokenizer.truncation_side
            )
            encoder.encode_special_tokens = bool(getattr(self.tokenizer, "split_special_tokens", False))
            self._encoders[max_length] = encoder
        # encode_batch_fast skips the character offsets, which nothing here reads.
        return [encoding.ids for encoding in encoder.encode_batch_fast(texts, add_special_tokens=add_special_tokens)]

    def tokenize_plain(self, texts: Sequence[str], max_length: int) -> list[list[int]]:
        """Token ids of each text alone, without special tokens or template, truncated to ``max_length``."""
        if max_length < 1:
            raise ValueError(f"max_length must be at least 1, got {max_length}")
        return self._encode_ids(list(texts), max_length, add_special_tokens=False) if texts else []

    def tokenize_texts(self, texts: Sequence[str], side: Side, max_length: int | None = None) -> list[list[int]]:
        """Token ids of ``prefix + text + suffix`` for each text, unpadded, the text truncated to fit."""
        for position, text in enumerate(texts):
            if not isinstance(text, str):
                raise TypeError(f"LLaRA embeds strings; position {position} is {type(text).__name__}: {text!r:.80}")
        budget = self._text_budget(side, max_length)
        if not texts:
            return []
        if side == "raw":
            return self._encode_ids(list(texts), budget, add_special_tokens=True)
        text_ids = self._encode_ids(list(texts), budget, add_special_tokens=False)
        prefix, suffix = self._prefix_ids, self._suffix_ids[side]
        return [prefix + ids + suffix for ids in text_ids]

    def pad(self, rows: Sequence[Sequence[int]]) -> dict[str, torch.Tensor]:
        """Right-pad token id rows into ``input_ids`` and ``attention_mask`` tensors."""
        lengths = torch.tensor([len(row) for row in rows], dtype=torch.long)
        width = int(lengths.max()) if len(rows) else 0
        attention_mask = (torch.arange(width) < lengths.unsqueeze(1)).long()
        input_ids = torch.full((len(rows), width), self.tokenizer.pad_token_id, dtype=torch.long)
        # The real positions, read row by row, are the rows laid end to end.
        input_ids[attention_mask.bool()] = torch.tensor(list(itertools.chain.from_iterable(rows)), dtype=torch.long)
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
            prompt: An instruction placed before each text, inside the quotes; needs a ``task``.
            task: ``"query"``; ``"document"``, ``"passage"`` or None for the passage template; ``"raw"`` for the
                text alone with the tokenizer's special tokens.
            max_length: Overrides the side's max length (prefix and suffix included).
        """
        if isinstance(inputs, str):
            raise TypeError("preprocess takes a list of strings, not a single string")
        if prompt is not None and task is None:
            raise ValueError(
                "LLaRA picks its query or passage template by task, not by prompt: use model.encode_query(texts) "
                "or model.encode_document(texts), or pass task='query' / task='document' to encode()."
            )
        if not inputs:
            return {}
        if task not in _TASK_TO_SIDE:
            raise ValueError(f"Unknown task {task!r}: LLaRA takes 'query', 'document'/'passage' (or no task)")
        side = _TASK_TO_SIDE[task]
        texts = list(inputs)
        if prompt:
            texts = [prompt + text if isinstance(text, str) else text for text in texts]
        features = self.pad(self.tokenize_texts(texts, side, max_length))
        features["modality"] = "text"
        if side == "raw":
            features["task"] = "raw"
        return features

    @staticmethod
    def position_ids_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
        """Positions counted over real tokens only, so that padding (left or right) moves nothing."""
        return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)

    def forward(self, features: dict[str, Any], task: str | None = None, **kwargs: Any) -> dict[str, Any]:
        task = task if task is not None else features.get("task")
        if task == "raw" and "attention_bias" not in features:
            raise ValueError(
                "task='raw' tokenises the text alone, without the LLaRA template; it gives no LLaRA embedding. "
                "Use encode_query / encode_document."
            )
        if self.training and task is None:
            logger.warning_once(
                "LLaRA got a training column without a task, so the passage template: set the training arguments' "
                "`router_mapping`, e.g. {'anchor': 'query', 'positive': 'document', 'negative': 'document'}."
            )
        attention_mask = features["attention_mask"]
        position_ids = features.get("position_ids")
        if position_ids is None:
            position_ids = self.position_ids_from_mask(attention_mask)
        # A 4D mask (the adaptation input's) replaces the causal one; it comes through here so DDP's hooks see it.
        decoder_mask = features.get("attention_bias", attention_mask)
        if decoder_mask.ndim == 4 and decoder_mask.dtype == torch.bool:
            # Eager attention adds a float mask in the model's dtype; its minimum, not -inf, keeps masked rows NaN-free.
            dtype = self.model.get_input_embeddings().weight.dtype
            if not dtype.is_floating_point:  # quantised embeddings: the attention runs in the default float dtype
                dtype = torch.get_default_dtype()
            bias = torch.zeros(decoder_mask.shape, dtype=dtype, device=decoder_mask.device)
            decoder_mask = bias.masked_fill(~decoder_mask, torch.finfo(dtype).min)
        # The decoder alone: the last hidden state after the final norm, no vocabulary projection.
        outputs = self.model.get_decoder()(
            input_ids=features["input_ids"],
            attention_mask=decoder_mask,
            position_ids=position_ids,
            use_cache=False,
            return_dict=True,
        )
        features["token_embeddings"] = outputs.last_hidden_state
        # How many trailing prompt tokens every template ends with: LastKPooling checks its width against it.
        features["prompt_token_count"] = NUM_PROMPT_TOKENS
        return features


def check_pooling_width(modules: Sequence[nn.Module]) -> None:
    """Refuse a LLaRA model (its modules) whose :class:`~llara_st.modules.LastKPooling` averages other than 8 tokens.

    Example::

        >>> from llara_st.modules import LastKPooling, check_pooling_width
        >>> check_pooling_width([model[0], LastKPooling(4)])
        Traceback (most recent call last):
            ...
        ValueError: LastKPooling averages the last 4 tokens, but every LLaRA template ends with 8 prompt tokens: use ...
    """
    modules = list(modules)
    if any(isinstance(module, LLaRATransformer) for module in modules):
        for module in modules:
            if isinstance(module, LastKPooling):
                module.check_width(NUM_PROMPT_TOKENS)
