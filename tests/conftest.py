"""Shared fixtures: the authors' reference outputs read from ../shared/fixtures, and the one set of tiny models and
BEIR folders built here (no download): :func:`build_tokenizer`, :func:`build_tiny_llama`, the session's converted
LLaRA models (:func:`convert_once`) and :func:`write_beir_folder`. The repository-root conftest.py builds the
docstring examples' model and BEIR folder with the same functions."""

from __future__ import annotations

import copy
import json
import logging
import shutil
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import pytest
import torch
from sentence_transformers import SentenceTransformer
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

import llara_st
from llara_st.prompts import PASSAGE_SUFFIX, PREFIX, QUERY_SUFFIX

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

    Without ../shared: the Llama-2-style tokenizer built here (:func:`build_tokenizer`), so that the tests that
    only need a tokenizer of that kind still run; the ones that compare with the authors' outputs skip.
    """
    if not FIXTURE_DIR.is_dir():
        return request.getfixturevalue("tokenizer_dir")
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


# ------------------------------------------------------------------ built from scratch: no ../shared needed

SENTENCES = [
    "The tides rise and fall with the pull of the Moon and the Sun on the oceans.",
    "Honeybees dance on the comb to show the others where the flowers are.",
    "what causes the tides? how do bees find food? which volcano erupted last?",
    "A retriever embeds queries and documents; relevant documents score high, the others low.",
]
# The sentences alone and inside the LLaRA templates: whole words become single tokens and the templates take about
# as many tokens as with Llama-2's tokenizer.
TOKENIZER_TEXTS = [
    *SENTENCES,
    *(PREFIX + text + suffix for text in SENTENCES for suffix in (PASSAGE_SUFFIX, QUERY_SUFFIX)),
]


def build_tokenizer(
    out: Path, *, texts: Sequence[str] | None = None, vocab_size: int = 1000, byte_level: bool = False
) -> Path:
    """A BPE tokenizer trained on ``texts`` (by default :data:`TOKENIZER_TEXTS`), saved as a
    Hugging Face folder.

    By default Llama-2-style: BPE over "▁"-marked words with a "▁" in front of the text, byte fallback (any text
    encodes), ``<unk>``, ``<s>``, ``</s>``, and BOS added in front, so token counts behave as the authors'
    tokenizer's do. ``byte_level=True``: GPT-2-style instead (byte-level BPE, one ``<|endoftext|>`` token as EOS,
    no BOS), as SmolLM2's.
    """
    texts = list(texts) if texts is not None else TOKENIZER_TEXTS
    if byte_level:
        tokenizer = Tokenizer(models.BPE())
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        specials, alphabet = ["<|endoftext|>"], pre_tokenizers.ByteLevel.alphabet()
    else:
        tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
        tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=True)
        specials, alphabet = ["<unk>", "<s>", "</s>"], [chr(code) for code in range(33, 127)]
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=specials, initial_alphabet=alphabet, show_progress=False
    )
    tokenizer.train_from_iterator(texts, trainer)
    if byte_level:
        tokenizer.decoder = decoders.ByteLevel()
        PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token="<|endoftext|>").save_pretrained(out)
        return out
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
def tokenizer_dir(tmp_path_factory) -> Path:
    """The Llama-2-style tokenizer built here (:func:`build_tokenizer`); without ../shared it also stands in for
    the fixture's Llama-2 tokenizer."""
    return build_tokenizer(tmp_path_factory.mktemp("tokenizer"))


def build_tiny_llama(
    out: Path,
    tokenizer_dir: Path,
    *,
    seed: int = 0,
    hidden_size: int = 64,
    num_hidden_layers: int = 2,
    initializer_range: float = 0.02,
    rope_theta: float = 10000.0,
    max_position_embeddings: int = 512,
    tie_word_embeddings: bool = False,
) -> Path:
    """A random tiny Llama (by default 2 layers, 64 wide, 4 heads, untied head) over the tokenizer of
    ``tokenizer_dir`` (its vocabulary sets the embedding size), saved with it as a Hugging Face folder."""
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=num_hidden_layers,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=max_position_embeddings,
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
    """The tests' tiny causal LM (:func:`build_tiny_llama`), its tokenizer without the prompt tokens: what users
    convert. With ../shared its tokenizer is Llama-2's; without, the one built here."""
    return build_tiny_llama(tmp_path_factory.mktemp("tiny_llama"), plain_tokenizer_dir)


@pytest.fixture(scope="session")
def sharp_llama_dir(request: pytest.FixtureRequest, tmp_path_factory) -> Path:
    """A tiny Llama with peaked attention (large weights, small rope theta): mask and position bugs show.

    Its tokenizer is the fixture model's, or without ../shared the one built here."""
    tokenizer_dir = FIXTURE_DIR / "model" if FIXTURE_DIR.is_dir() else request.getfixturevalue("tokenizer_dir")
    return build_tiny_llama(
        tmp_path_factory.mktemp("sharp_llama"), tokenizer_dir, seed=3, initializer_range=0.7, rope_theta=100.0
    )


@pytest.fixture(scope="session")
def convert_once(tmp_path_factory) -> Callable[..., tuple[Path, SentenceTransformer]]:
    """``llara_st.convert`` of a causal-LM folder, done once per session for each folder and settings.

    Returns ``convert(source, **settings) -> (llara_folder, model)``; the model is that folder loaded (float32,
    CPU) and shared by every test: a test that changes it takes a ``copy.deepcopy``.
    """
    converted: dict[tuple, tuple[Path, SentenceTransformer]] = {}

    def convert(source: Path, **settings) -> tuple[Path, SentenceTransformer]:
        key = (str(source), tuple(sorted(settings.items())))
        if key not in converted:
            out = tmp_path_factory.mktemp(f"{Path(source).name}_llara") / "llara"
            llara_st.convert(str(source), out, **settings)
            converted[key] = (out, llara_st.load(out, device="cpu"))
        return converted[key]

    return convert


@pytest.fixture(scope="session")
def tiny_llara_dir(tiny_llama_dir: Path, convert_once) -> Path:
    """The tiny causal LM converted to a LLaRA sentence-transformers folder (prompt tokens added)."""
    return convert_once(tiny_llama_dir)[0]


@pytest.fixture
def tiny_llara(tiny_llama_dir: Path, convert_once) -> SentenceTransformer:
    """The converted tiny model, a fresh copy per test (float32, CPU)."""
    return copy.deepcopy(convert_once(tiny_llama_dir)[1])


def _reference_source(request: pytest.FixtureRequest) -> Path:
    # Without ../shared, tiny_llama_dir stands in: the tests that use this model as a tiny LLaRA model still run;
    # those comparing with the authors' outputs skip through `reference`.
    return FIXTURE_DIR / "model" if FIXTURE_DIR.is_dir() else request.getfixturevalue("tiny_llama_dir")


@pytest.fixture(scope="session")
def reference_llara_dir(request: pytest.FixtureRequest, convert_once) -> Path:
    """The fixture model (without ../shared: the tiny model) converted with ``llara_st.convert``."""
    return convert_once(_reference_source(request))[0]


@pytest.fixture
def reference_llara(request: pytest.FixtureRequest, convert_once) -> SentenceTransformer:
    """The converted fixture model (without ../shared: the tiny model), a fresh copy per test (float32, CPU)."""
    return copy.deepcopy(convert_once(_reference_source(request))[1])


# ---------------------------------------------------------------------------------------------- BEIR folders


def write_beir_folder(
    folder: Path,
    corpus: Mapping[str, str | tuple[str, str]],
    queries: Mapping[str, str],
    qrels: Mapping[str, Sequence[tuple[str, str, int]]],
) -> Path:
    """Write a BEIR folder: corpus.jsonl (``{id: text}`` or ``{id: (title, text)}``), queries.jsonl and
    qrels/{split}.tsv (``{split: [(query_id, doc_id, score), ...]}``)."""
    (folder / "qrels").mkdir(parents=True, exist_ok=True)
    with (folder / "corpus.jsonl").open("w", encoding="utf8") as handle:
        for doc_id, value in corpus.items():
            title, text = value if isinstance(value, tuple) else ("", value)
            handle.write(json.dumps({"_id": doc_id, "title": title, "text": text}) + "\n")
    with (folder / "queries.jsonl").open("w", encoding="utf8") as handle:
        for query_id, text in queries.items():
            handle.write(json.dumps({"_id": query_id, "text": text, "metadata": {}}) + "\n")
    for split, rows in qrels.items():
        lines = ["query-id\tcorpus-id\tscore"] + [f"{q}\t{d}\t{s}" for q, d, s in rows]
        (folder / "qrels" / f"{split}.tsv").write_text("\n".join(lines) + "\n", encoding="utf8")
    return folder


def records_through_root(run, level: int = logging.WARNING) -> list[logging.LogRecord]:
    """The records a level-less handler on the root receives with the root at ``level``, as under ``llara-st``
    (WARNING without -v, DEBUG with -vv)."""
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append
    root = logging.getLogger()
    saved_level = root.level
    root.addHandler(handler)
    root.setLevel(level)
    try:
        run()
    finally:
        root.removeHandler(handler)
        root.setLevel(saved_level)
    return records
