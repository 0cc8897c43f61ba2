"""Fixtures of the loss tests: tiny LLaRA models converted from the session's tiny causal LMs."""

from __future__ import annotations

import copy
import shutil
from pathlib import Path

import pytest
from transformers import AutoTokenizer

import llara_st


@pytest.fixture(scope="session")
def _sharp_llara(sharp_llama_dir: Path, tmp_path_factory):
    out = tmp_path_factory.mktemp("sharp_llara") / "llara"
    llara_st.convert(str(sharp_llama_dir), out)
    return llara_st.load(out, device="cpu")


@pytest.fixture
def sharp_llara(_sharp_llara):
    """The sharp tiny Llama (peaked attention, rope theta 100) as a LLaRA model, a fresh copy per test."""
    return copy.deepcopy(_sharp_llara)


@pytest.fixture(scope="session")
def _no_bos_llara(sharp_llama_dir: Path, tmp_path_factory):
    """The sharp model with a tokenizer that adds no BOS, as SmolLM2's adds none."""
    source = tmp_path_factory.mktemp("no_bos_llama")
    for item in sharp_llama_dir.iterdir():
        if item.is_file():
            shutil.copy(item, source / item.name)
    AutoTokenizer.from_pretrained(sharp_llama_dir, add_bos_token=False).save_pretrained(source)
    out = tmp_path_factory.mktemp("no_bos_llara") / "llara"
    llara_st.convert(str(source), out)
    return llara_st.load(out, device="cpu")


@pytest.fixture
def no_bos_llara(_no_bos_llara):
    return copy.deepcopy(_no_bos_llara)
