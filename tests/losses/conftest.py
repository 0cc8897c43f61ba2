"""Fixtures of the loss tests: the sharp tiny Llama (tests/conftest.py) as LLaRA models, with three tokenizers."""

from __future__ import annotations

import copy
import shutil
from pathlib import Path

import pytest
from transformers import AutoTokenizer


@pytest.fixture
def sharp_llara(sharp_llama_dir: Path, convert_once):
    """The sharp tiny Llama (peaked attention, rope theta 100) as a LLaRA model, a fresh copy per test."""
    return copy.deepcopy(convert_once(sharp_llama_dir)[1])


@pytest.fixture(scope="session")
def _retokenized_sharp_llama(sharp_llama_dir: Path, tmp_path_factory):
    """``(name, **tokenizer_kwargs) -> folder``: the sharp model with its tokenizer re-saved under those settings."""

    def build(name: str, **tokenizer_kwargs) -> Path:
        source = tmp_path_factory.mktemp(f"{name}_llama")
        for item in sharp_llama_dir.iterdir():
            if item.is_file():
                shutil.copy(item, source / item.name)
        AutoTokenizer.from_pretrained(sharp_llama_dir, **tokenizer_kwargs).save_pretrained(source)
        return source

    return build


@pytest.fixture(scope="session")
def _no_bos_llama(_retokenized_sharp_llama) -> Path:
    return _retokenized_sharp_llama("no_bos", add_bos_token=False)


@pytest.fixture(scope="session")
def _eos_llama(_retokenized_sharp_llama) -> Path:
    return _retokenized_sharp_llama("eos", add_bos_token=False, add_eos_token=True)


@pytest.fixture
def no_bos_llara(_no_bos_llama: Path, convert_once):
    """A tokenizer that adds no BOS, as SmolLM2's adds none."""
    return copy.deepcopy(convert_once(_no_bos_llama)[1])


@pytest.fixture
def eos_llara(_eos_llama: Path, convert_once):
    """A tokenizer that appends EOS to every text (and adds no BOS)."""
    return copy.deepcopy(convert_once(_eos_llama)[1])
