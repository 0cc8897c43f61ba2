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


def _llara_with_tokenizer(sharp_llama_dir: Path, tmp_path_factory, name: str, **tokenizer_kwargs):
    """The sharp model converted with its tokenizer re-saved under ``tokenizer_kwargs``."""
    source = tmp_path_factory.mktemp(f"{name}_llama")
    for item in sharp_llama_dir.iterdir():
        if item.is_file():
            shutil.copy(item, source / item.name)
    AutoTokenizer.from_pretrained(sharp_llama_dir, **tokenizer_kwargs).save_pretrained(source)
    out = tmp_path_factory.mktemp(f"{name}_llara") / "llara"
    llara_st.convert(str(source), out)
    return llara_st.load(out, device="cpu")


@pytest.fixture(scope="session")
def _no_bos_llara(sharp_llama_dir: Path, tmp_path_factory):
    return _llara_with_tokenizer(sharp_llama_dir, tmp_path_factory, "no_bos", add_bos_token=False)


@pytest.fixture
def no_bos_llara(_no_bos_llara):
    """A tokenizer that adds no BOS, as SmolLM2's adds none."""
    return copy.deepcopy(_no_bos_llara)


@pytest.fixture(scope="session")
def _eos_llara(sharp_llama_dir: Path, tmp_path_factory):
    return _llara_with_tokenizer(sharp_llama_dir, tmp_path_factory, "eos", add_bos_token=False, add_eos_token=True)


@pytest.fixture
def eos_llara(_eos_llara):
    """A tokenizer that appends EOS to every text (and adds no BOS)."""
    return copy.deepcopy(_eos_llara)
