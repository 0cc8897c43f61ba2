"""Issue 18.4: fine-tuning's default hard-negative mining (BM25) failed with a traceback on the base install,
which lacked bm25s. bm25s and PyStemmer are base dependencies now."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def _names(requirements: list[str]) -> set[str]:
    return {re.split(r"[<>=!~\[; ]", requirement, maxsplit=1)[0].lower() for requirement in requirements}


def test_bm25_mining_needs_no_extra():
    from llara_st.training import FinetuneArguments

    base = _names(tomllib.loads(PYPROJECT.read_text())["project"]["dependencies"])
    assert {"bm25s", "pystemmer"} <= base
    default = next(f.default for f in FinetuneArguments.__dataclass_fields__.values() if f.name == "mining_retriever")
    assert default == "bm25"
