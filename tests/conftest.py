"""Shared fixtures: tiny models built here, the authors' reference outputs read from ../shared/fixtures."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

import llara_st

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED = REPO_ROOT.parent / "shared"
FIXTURE_DIR = SHARED / "fixtures" / "llara_reference_visible"
DATA_DIR = SHARED / "data"


@pytest.fixture(scope="session")
def fixture_dir() -> Path:
    if not FIXTURE_DIR.is_dir():
        pytest.skip(f"reference fixtures not found at {FIXTURE_DIR}")
    return FIXTURE_DIR


@pytest.fixture(scope="session")
def data_dir() -> Path:
    if not DATA_DIR.is_dir():
        pytest.skip(f"shared data not found at {DATA_DIR}")
    return DATA_DIR


@pytest.fixture(scope="session")
def llama2_vocabulary(fixture_dir: Path) -> Path:
    """For tests written against the Llama-2 vocabulary (its token ids, sizes and word pieces): they skip without
    ../shared, where the fixture model's tokenizer is replaced by one built here."""
    return fixture_dir / "model"


@pytest.fixture(scope="session")
def reference_texts(fixture_dir: Path) -> dict:
    return json.loads((fixture_dir / "texts.json").read_text())


@pytest.fixture(scope="session")
def reference(fixture_dir: Path) -> dict:
    return json.loads((fixture_dir / "reference.json").read_text())


@pytest.fixture(scope="session")
def plain_tokenizer_dir(request: pytest.FixtureRequest, tmp_path_factory) -> Path:
    """The fixture's Llama-2 tokenizer without ``<s1>``…``<s16>``, as a stock Llama-2 tokenizer is.

    Without ../shared: the Llama-2-style tokenizer built here (:func:`build_scratch_tokenizer`), so that the tests
    that only need a tokenizer of that kind still run; the ones that compare with the authors' outputs skip.
    """
    if not FIXTURE_DIR.is_dir():
        return request.getfixturevalue("llama2_like_tokenizer_dir")
    fixture_dir = FIXTURE_DIR
    out = tmp_path_factory.mktemp("plain_tokenizer")
    for name in ("tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(fixture_dir / "model" / name, out / name)
    tokenizer_json = json.loads((fixture_dir / "model" / "tokenizer.json").read_text())
    tokenizer_json["added_tokens"] = [t for t in tokenizer_json["added_tokens"] if t["id"] < 32000]
    (out / "tokenizer.json").write_text(json.dumps(tokenizer_json))
    config = json.loads((out / "tokenizer_config.json").read_text())
    config["added_tokens_decoder"] = {k: v for k, v in config["added_tokens_decoder"].items() if int(k) < 32000}
    config.pop("additional_special_tokens", None)
    config.pop("extra_special_tokens", None)
    (out / "tokenizer_config.json").write_text(json.dumps(config))
    special = json.loads((out / "special_tokens_map.json").read_text())
    special.pop("additional_special_tokens", None)
    (out / "special_tokens_map.json").write_text(json.dumps(special))
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert "<s1>" not in tokenizer.get_vocab()
    return out


def build_tiny_llama(
    out: Path,
    tokenizer_dir: Path,
    *,
    seed: int = 0,
    initializer_range: float = 0.02,
    rope_theta: float = 10000.0,
    tie_word_embeddings: bool = False,
) -> Path:
    """A random 2-layer, 64-wide Llama with the given tokenizer, saved as a Hugging Face folder."""
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=512,
        initializer_range=initializer_range,
        rope_theta=rope_theta,
        tie_word_embeddings=tie_word_embeddings,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    LlamaForCausalLM(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def tiny_llama_dir(plain_tokenizer_dir: Path, tmp_path_factory) -> Path:
    """A random tiny causal LM whose tokenizer lacks the prompt tokens (what users convert)."""
    return build_tiny_llama(tmp_path_factory.mktemp("tiny_llama"), plain_tokenizer_dir)


@pytest.fixture(scope="session")
def sharp_llama_dir(request: pytest.FixtureRequest, tmp_path_factory) -> Path:
    """A tiny Llama with peaked attention (large weights, small rope theta): mask and position bugs show.

    Its tokenizer is the fixture model's, or without ../shared the scratch one built here."""
    tokenizer_dir = (
        FIXTURE_DIR / "model" if FIXTURE_DIR.is_dir() else request.getfixturevalue("llama2_like_tokenizer_dir")
    )
    return build_tiny_llama(
        tmp_path_factory.mktemp("sharp_llama"), tokenizer_dir, seed=3, initializer_range=0.7, rope_theta=100.0
    )


@pytest.fixture(scope="session")
def _reference_llara(request: pytest.FixtureRequest, tmp_path_factory):
    # Without ../shared, tiny_llama_dir (then a Llama-2-style model built here) stands in: the tests that use this
    # model as a tiny LLaRA model still run; those comparing with the authors' outputs skip through `reference`.
    source = FIXTURE_DIR / "model" if FIXTURE_DIR.is_dir() else request.getfixturevalue("tiny_llama_dir")
    out = tmp_path_factory.mktemp("reference_llara") / "llara"
    llara_st.convert(str(source), out)
    return out, llara_st.load(out, device="cpu")


@pytest.fixture(scope="session")
def reference_llara_dir(_reference_llara) -> Path:
    """The fixture model (without ../shared: the stand-in) converted with ``llara_st.convert``."""
    return _reference_llara[0]


@pytest.fixture
def reference_llara(_reference_llara):
    """The converted fixture model (without ../shared: the stand-in), a fresh copy per test (float32, CPU)."""
    return copy.deepcopy(_reference_llara[1])


# ------------------------------------------------------------------ built from scratch: no ../shared needed

SCRATCH_TOKENIZER_TEXTS = [
    "The tides rise and fall with the pull of the Moon and the Sun on the oceans.",
    "Honeybees dance on the comb to show the others where the flowers are.",
    "what causes the tides? how do bees find food? which volcano erupted last?",
    "A retriever embeds queries and documents; relevant documents score high, the others low.",
]


def build_scratch_tokenizer(out: Path, vocab_size: int = 400, texts: list[str] | None = None) -> Path:
    """A Llama-2-style tokenizer trained on a few sentences, saved as a Hugging Face folder.

    Like Llama-2's: BPE over "▁"-marked words with a "▁" in front of the text, byte fallback (any text encodes),
    ``<unk>``, ``<s>``, ``</s>``, and BOS added in front. So token counts behave as the authors' tokenizer's do.
    """
    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=True)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<unk>", "<s>", "</s>"],
        initial_alphabet=[chr(code) for code in range(33, 127)],
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts or SCRATCH_TOKENIZER_TEXTS, trainer)
    # Byte tokens <0x00>…<0xFF> as ordinary vocabulary (as in Llama-2) for characters outside the alphabet.
    spec = json.loads(tokenizer.to_str())
    for byte in range(256):
        spec["model"]["vocab"].setdefault(f"<0x{byte:02X}>", len(spec["model"]["vocab"]))
    spec["model"]["byte_fallback"] = True
    tokenizer = Tokenizer.from_str(json.dumps(spec))
    # Merges were learned within words; encoding then reads the text as one "▁"-marked string, as Llama-2 does.
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=False)
    tokenizer.decoder = decoders.Sequence(
        [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)]
    )
    bos_id = tokenizer.token_to_id("<s>")
    tokenizer.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", bos_id)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>", unk_token="<unk>")
    fast.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def scratch_tokenizer_dir(tmp_path_factory) -> Path:
    """A tiny Llama-2-style tokenizer built here (see :func:`build_scratch_tokenizer`)."""
    return build_scratch_tokenizer(tmp_path_factory.mktemp("scratch_tokenizer"))


@pytest.fixture(scope="session")
def llama2_like_tokenizer_dir(tmp_path_factory) -> Path:
    """Without ../shared, the stand-in for the fixture's Llama-2 tokenizer: trained also on the LLaRA templates and
    everyday English, so that whole words are single tokens and the templates take about as many tokens as there."""
    from llara_st.prompts import PASSAGE_SUFFIX, PREFIX, QUERY_SUFFIX

    texts = [
        *SCRATCH_TOKENIZER_TEXTS,
        *(PREFIX + text + suffix for text in SCRATCH_TOKENIZER_TEXTS for suffix in (PASSAGE_SUFFIX, QUERY_SUFFIX)),
    ]
    return build_scratch_tokenizer(tmp_path_factory.mktemp("llama2_like_tokenizer"), vocab_size=1000, texts=texts)


@pytest.fixture(scope="session")
def scratch_causal_lm_dir(scratch_tokenizer_dir: Path, tmp_path_factory) -> Path:
    """A random 2-layer, 64-wide Llama over the scratch tokenizer: what a user converts, without ../shared."""
    return build_tiny_llama(tmp_path_factory.mktemp("scratch_causal_lm"), scratch_tokenizer_dir)


@pytest.fixture(scope="session")
def _scratch_llara(scratch_causal_lm_dir: Path, tmp_path_factory):
    out = tmp_path_factory.mktemp("scratch_llara") / "llara"
    return out, llara_st.convert(str(scratch_causal_lm_dir), out)


@pytest.fixture(scope="session")
def scratch_llara_dir(_scratch_llara) -> Path:
    """The scratch causal LM converted to a LLaRA sentence-transformers folder (prompt tokens added)."""
    return _scratch_llara[0]


@pytest.fixture
def scratch_llara(_scratch_llara):
    """The converted scratch model, a fresh copy per test (float32, CPU)."""
    return copy.deepcopy(_scratch_llara[1])
