"""Which template a call gets, which templates and lengths a model may have, and sentence-transformers details
(issue 11.2 routing, 11.3 template checks, 13.7 ``token_embeddings`` and ``max_seq_length``)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from sentence_transformers import SentenceTransformer

import llara_st
from llara_st.modules import LLaRATransformer
from llara_st.prompts import PASSAGE_PROMPT_TOKENS, PASSAGE_SUFFIX, QUERY_PROMPT_TOKENS, QUERY_SUFFIX

TEXTS = ["what causes the tides?", "Honeybees dance on the comb to show where the flowers are. " * 4, "tides"]


def edit_json(path: Path, **changes) -> None:
    config = json.loads(path.read_text())
    config.update(changes)
    path.write_text(json.dumps(config))


def loaders(folder: Path):
    yield lambda: llara_st.load(folder, device="cpu")
    yield lambda: SentenceTransformer(str(folder), trust_remote_code=True, device="cpu")


# ---------------------------------------------------------------------------------------------- routing (11.2)


@pytest.mark.parametrize("prompt_name", ["query", "document"])
def test_encode_with_a_prompt_name_is_refused_naming_encode_query(tiny_llara, prompt_name):
    # Before: the saved prompts are "" and the name never reaches the module, so both gave the passage template.
    with pytest.raises(ValueError, match=r"encode_query\(texts\) or model.encode_document\(texts\)"):
        tiny_llara.encode(TEXTS, prompt_name=prompt_name)


def test_a_prompt_without_a_task_is_refused(tiny_llara):
    with pytest.raises(ValueError, match="by task, not by prompt"):
        tiny_llara.encode(TEXTS, prompt="Represent this sentence: ")


def test_task_selects_the_template_in_plain_encode(tiny_llara):
    queries = tiny_llara.encode_query(TEXTS)
    documents = tiny_llara.encode_document(TEXTS)
    assert not np.allclose(queries, documents, atol=1e-3)
    np.testing.assert_array_equal(tiny_llara.encode(TEXTS, task="query"), queries)
    np.testing.assert_array_equal(tiny_llara.encode(TEXTS, task="document"), documents)
    np.testing.assert_array_equal(tiny_llara.encode(TEXTS), documents)  # no task, no prompt: the passage one
    # An instruction with a task is placed inside the quotes under that task's template.
    instructed = tiny_llara.preprocess(["tides"], prompt="Find: ", task="query")["input_ids"][0].tolist()
    assert instructed == tiny_llara[0].tokenize_texts(["Find: tides"], "query")[0]


def test_langchain_huggingface_embeddings_with_task_kwargs_use_both_templates(tiny_llara_dir):
    """What docs/quickstart.md tells langchain-huggingface users to write."""
    langchain_huggingface = pytest.importorskip("langchain_huggingface")
    embeddings = langchain_huggingface.HuggingFaceEmbeddings(
        model_name=str(tiny_llara_dir),
        model_kwargs={"trust_remote_code": True, "device": "cpu"},
        encode_kwargs={"task": "document"},
        query_encode_kwargs={"task": "query"},
    )
    model = llara_st.load(tiny_llara_dir, device="cpu")
    np.testing.assert_allclose(embeddings.embed_query(TEXTS[0]), model.encode_query([TEXTS[0]])[0], atol=1e-6)
    np.testing.assert_allclose(embeddings.embed_documents(TEXTS), model.encode_document(TEXTS), atol=1e-6)


def test_raw_task_gives_no_embedding(tiny_llara):
    # Before: encode(task="raw") returned an embedding of the text without any template.
    with pytest.raises(ValueError, match="task='raw' .* Use encode_query / encode_document"):
        tiny_llara.encode(TEXTS, task="raw")
    # The adaptation loss still gets its raw features (tested with the loss in tests/losses).
    features = tiny_llara.preprocess(TEXTS, task="raw")
    assert features["task"] == "raw"
    assert features["input_ids"][0, 0].item() == tiny_llara[0].tokenizer.bos_token_id


# ---------------------------------------------------------------------------------------------- template checks (11.3)

BAD_SUFFIXES = {
    "passage tokens out of order": {
        "passage_suffix": PASSAGE_SUFFIX.replace("<s1><s2>", "<s2><s1>"),
    },
    "words after the passage tokens": {"passage_suffix": PASSAGE_SUFFIX + " now"},
    "query tokens in the passage suffix": {
        "passage_suffix": PASSAGE_SUFFIX.replace("".join(PASSAGE_PROMPT_TOKENS), "".join(QUERY_PROMPT_TOKENS)),
        "query_suffix": QUERY_SUFFIX.replace("".join(QUERY_PROMPT_TOKENS), "".join(PASSAGE_PROMPT_TOKENS)),
    },
    "query suffix short of <s16>": {"query_suffix": QUERY_SUFFIX.removesuffix("<s16>")},
}


@pytest.mark.parametrize("suffixes", BAD_SUFFIXES.values(), ids=BAD_SUFFIXES.keys())
def test_suffix_not_ending_with_its_prompt_tokens_is_refused_when_built(tiny_llara_dir, suffixes):
    side = "passage" if "passage_suffix" in suffixes else "query"
    with pytest.raises(ValueError, match=rf"The {side} suffix must end with the prompt tokens"):
        LLaRATransformer(str(tiny_llara_dir), **suffixes)


def test_suffix_not_ending_with_its_prompt_tokens_is_refused_when_loaded(tiny_llara, tmp_path):
    tiny_llara.save(str(tmp_path / "m"))
    edit_json(tmp_path / "m" / "sentence_bert_config.json", passage_suffix=PASSAGE_SUFFIX + " now")
    for load in loaders(tmp_path / "m"):
        with pytest.raises(ValueError, match="The passage suffix must end with the prompt tokens <s1><s2>"):
            load()


def test_pooling_width_other_than_the_prompt_width_is_refused(tiny_llara_dir, tiny_llara, tmp_path):
    with pytest.raises(ValueError, match="LastKPooling averages the last 4 tokens, but every LLaRA template"):
        llara_st.build_llara_model(str(tiny_llara_dir), num_pooled_tokens=4)
    tiny_llara.save(str(tmp_path / "m"))
    edit_json(tmp_path / "m" / "1_LastKPooling" / "config.json", num_tokens=4)
    with pytest.raises(ValueError, match="LastKPooling averages the last 4 tokens"):
        llara_st.load(tmp_path / "m", device="cpu")
    # sentence-transformers' own loader has no hook across modules: the first forward refuses.
    model = SentenceTransformer(str(tmp_path / "m"), trust_remote_code=True, device="cpu")
    with pytest.raises(ValueError, match=r"LastKPooling averages the last 4 tokens.*LastKPooling\(num_tokens=8\)"):
        model.encode_query(TEXTS)


def test_max_length_beyond_the_position_embeddings_is_refused(tiny_llara_dir, tiny_llara, tmp_path):
    limit = tiny_llara[0].max_position_embeddings
    assert limit == 512  # the tiny model's config (build_tiny_llama)
    too_long = limit + 1
    message = f"passage_max_length={too_long} exceeds the backbone's max_position_embeddings={limit}"
    with pytest.raises(ValueError, match=message):
        LLaRATransformer(str(tiny_llara_dir), passage_max_length=too_long)
    with pytest.raises(ValueError, match=message):
        tiny_llara[0].passage_max_length = too_long
    with pytest.raises(ValueError, match="query_max_length=.* exceeds"):
        tiny_llara[0].query_max_length = too_long
    with pytest.raises(ValueError, match=message):
        tiny_llara.max_seq_length = too_long
    assert (tiny_llara[0].query_max_length, tiny_llara[0].passage_max_length) == (64, 160)  # unchanged
    tiny_llara[0].passage_max_length = limit  # the limit itself is fine
    tiny_llara.save(str(tmp_path / "m"))
    edit_json(tmp_path / "m" / "sentence_bert_config.json", passage_max_length=too_long)
    for load in loaders(tmp_path / "m"):
        with pytest.raises(ValueError, match=message):
            load()


# ---------------------------------------------------------------------------------------------- ST details (13.7)


def test_token_embeddings_have_one_row_per_real_token(tiny_llara):
    # Before: rows were left-padded and sentence-transformers strips trailing padding only (42 rows for 29 tokens).
    outputs = tiny_llara.encode_document(TEXTS, output_value="token_embeddings")
    lengths = [len(row) for row in tiny_llara[0].tokenize_texts(TEXTS, "passage")]
    assert [len(output) for output in outputs] == lengths
    assert len(set(lengths)) == len(lengths)  # the batch needed padding
    for text, output in zip(TEXTS, outputs, strict=True):
        (alone,) = tiny_llara.encode_document([text], output_value="token_embeddings")
        torch.testing.assert_close(output, alone, atol=1e-5, rtol=1e-5)
    # The last 8 rows are the prompt tokens the sentence embedding averages.
    pooled = torch.stack([output[-8:].mean(dim=0) for output in outputs])
    expected = torch.nn.functional.normalize(pooled, dim=-1)
    torch.testing.assert_close(expected, tiny_llara.encode_document(TEXTS, convert_to_tensor=True), atol=1e-5, rtol=0)


def test_max_seq_length_reads_back_what_was_set_and_bounds_every_input(tiny_llara, tmp_path):
    transformer = tiny_llara[0]
    long_text = ["word " * 500]
    assert tiny_llara.max_seq_length == 160
    # Before: setting it set passage_max_length alone, so reading gave max(64, 60) = 64 (the 48 -> 64).
    tiny_llara.max_seq_length = 60
    assert tiny_llara.max_seq_length == 60
    assert (transformer.query_max_length, transformer.passage_max_length) == (60, 60)
    assert tiny_llara.preprocess(long_text, task="query")["input_ids"].shape[1] == 60
    assert tiny_llara.preprocess(long_text, task="document")["input_ids"].shape[1] == 60
    tiny_llara.max_seq_length = 200  # raises the passage length; the query length stays capped
    assert tiny_llara.max_seq_length == 200
    assert (transformer.query_max_length, transformer.passage_max_length) == (60, 200)
    with pytest.raises(ValueError, match="leaves no room for text"):
        tiny_llara.max_seq_length = 10
    assert (transformer.query_max_length, transformer.passage_max_length) == (60, 200)  # nothing half-applied
    tiny_llara.save(str(tmp_path / "m"))
    assert llara_st.load(tmp_path / "m").max_seq_length == 200


def test_rows_are_right_padded(tiny_llara):
    pad = tiny_llara[0].tokenizer.pad_token_id
    features = tiny_llara[0].pad([[5, 6, 7], [8], [9, 10]])
    assert features["input_ids"].tolist() == [[5, 6, 7], [8, pad, pad], [9, 10, pad]]
    assert features["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0], [1, 1, 0]]
