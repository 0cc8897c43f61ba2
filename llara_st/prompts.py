"""The LLaRA input templates (METHOD.md §1), shared by the input module, the losses and the converter."""

from __future__ import annotations

NUM_PROMPT_TOKENS = 8
PASSAGE_PROMPT_TOKENS: list[str] = [f"<s{i}>" for i in range(1, NUM_PROMPT_TOKENS + 1)]
QUERY_PROMPT_TOKENS: list[str] = [f"<s{i}>" for i in range(NUM_PROMPT_TOKENS + 1, 2 * NUM_PROMPT_TOKENS + 1)]
PROMPT_TOKENS: list[str] = PASSAGE_PROMPT_TOKENS + QUERY_PROMPT_TOKENS

PREFIX = '"'
PASSAGE_SUFFIX = '", summarize the above passage within eight words: ' + "".join(PASSAGE_PROMPT_TOKENS)
QUERY_SUFFIX = '", predict the following passage within eight words: ' + "".join(QUERY_PROMPT_TOKENS)

DEFAULT_QUERY_MAX_LENGTH = 64
DEFAULT_PASSAGE_MAX_LENGTH = 160
