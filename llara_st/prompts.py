"""The LLaRA input templates (the EBAE/EBAR prompts of Li et al., 2023, arXiv:2312.15503), shared by the input
module, the losses and the converter.

Example::

    >>> from llara_st.prompts import PASSAGE_SUFFIX, PREFIX
    >>> PREFIX + "The Moon pulls the oceans." + PASSAGE_SUFFIX
    '"The Moon pulls the oceans.", summarize the above passage within eight words: <s1><s2><s3><s4><s5><s6><s7><s8>'
"""

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
