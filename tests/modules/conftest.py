"""A tiny LLaRA model built from scratch (its own byte-level BPE tokenizer), so these tests need no ../shared."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from sentence_transformers import SentenceTransformer
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

import llara_st

CORPUS = [
    "The tides rise and fall with the pull of the Moon and the Sun on the oceans.",
    "Honeybees dance on the comb to show the others where the flowers are.",
    "what causes the tides? how do bees find food? which volcano erupted last?",
]
MAX_POSITION_EMBEDDINGS = 256


def build_tiny_causal_lm(out: Path) -> Path:
    """A random 2-layer, 32-wide Llama with a 300-token byte-level BPE tokenizer that adds BOS, as Llama-2's does."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=["<unk>", "<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(CORPUS, trainer)
    bos_id = tokenizer.token_to_id("<s>")
    tokenizer.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", bos_id)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>", unk_token="<unk>")
    fast.save_pretrained(out)
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(fast),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=MAX_POSITION_EMBEDDINGS,
        initializer_range=0.5,  # peaked attention, so that a wrong token or position shows in the embedding
        bos_token_id=bos_id,
        eos_token_id=fast.eos_token_id,
    )
    LlamaForCausalLM(config).save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def scratch_causal_lm_dir(tmp_path_factory) -> Path:
    return build_tiny_causal_lm(tmp_path_factory.mktemp("scratch_causal_lm"))


@pytest.fixture(scope="session")
def _scratch_llara(scratch_causal_lm_dir: Path, tmp_path_factory) -> tuple[Path, SentenceTransformer]:
    out = tmp_path_factory.mktemp("scratch_llara") / "llara"
    model = llara_st.convert(str(scratch_causal_lm_dir), out)
    return out, model


@pytest.fixture(scope="session")
def scratch_llara_dir(_scratch_llara) -> Path:
    """The tiny model converted to a LLaRA sentence-transformers folder (prompt tokens added)."""
    return _scratch_llara[0]


@pytest.fixture
def scratch_llara(_scratch_llara) -> SentenceTransformer:
    """The converted tiny model, a fresh copy per test (float32, CPU)."""
    return copy.deepcopy(_scratch_llara[1])
