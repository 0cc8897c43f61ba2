"""The LLaRA input module and pooling against the authors' reference outputs (METHOD.md §1)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from llara_st.modules import LastKPooling, LLaRATransformer
from llara_st.prompts import PROMPT_TOKENS


@pytest.fixture(scope="module")
def reference_inputs(fixture_dir):
    return json.loads((fixture_dir / "embed" / "embed_inputs.json").read_text())


@pytest.mark.parametrize("side, task", [("query", "query"), ("passage", "document")])
def test_input_ids_and_masks_equal_reference(reference_llara, reference_texts, reference_inputs, side, task):
    texts = reference_texts["queries" if side == "query" else "passages"]
    features = reference_llara.preprocess(texts, task=task)
    expected_ids = torch.tensor(reference_inputs[f"{side}_input_ids"])
    expected_mask = torch.tensor(reference_inputs[f"{side}_attention_mask"]).bool()
    mask = features["attention_mask"].bool()
    # The reference pads on the left to a multiple of 8, llara_st on the right to the longest row: the real
    # tokens of each row must agree, and ours must come first.
    for row in range(len(texts)):
        assert features["input_ids"][row][mask[row]].tolist() == expected_ids[row][expected_mask[row]].tolist()
    lengths = reference_inputs[f"{side}_unpadded_lengths"]
    assert features["attention_mask"].sum(1).tolist() == lengths
    assert features["input_ids"].shape[1] == max(lengths)
    assert all(mask[row, :length].all() for row, length in enumerate(lengths))


def test_embeddings_match_reference(reference_llara, reference_texts, fixture_dir):
    queries = reference_llara.encode_query(reference_texts["queries"], convert_to_numpy=True)
    passages = reference_llara.encode_document(reference_texts["passages"], convert_to_numpy=True)
    expected_queries = np.load(fixture_dir / "embed" / "query_embeddings.npy")
    expected_passages = np.load(fixture_dir / "embed" / "passage_embeddings.npy")
    assert np.abs(queries - expected_queries).max() < 1e-5
    assert np.abs(passages - expected_passages).max() < 1e-5
    # The long passages (160 tokens, truncated) are part of the comparison.
    assert max(reference_llara[0].tokenize_texts(reference_texts["passages"], "passage"), key=len).__len__() == 160


def test_plain_encode_uses_the_passage_template(reference_llara, reference_texts):
    texts = reference_texts["passages"][:3]
    plain = reference_llara.encode(texts, convert_to_tensor=True)
    documents = reference_llara.encode_document(texts, convert_to_tensor=True)
    queries = reference_llara.encode_query(texts, convert_to_tensor=True)
    assert torch.allclose(plain, documents)
    assert not torch.allclose(plain, queries, atol=1e-3)


@pytest.mark.usefixtures("llama2_vocabulary")
def test_templates_end_with_their_prompt_tokens(reference_llara):
    transformer: LLaRATransformer = reference_llara[0]
    ids = transformer.prompt_token_ids
    assert transformer.suffix_ids("passage")[-8:] == [ids[f"<s{i}>"] for i in range(1, 9)]
    assert transformer.suffix_ids("query")[-8:] == [ids[f"<s{i}>"] for i in range(9, 17)]
    assert transformer.prefix_ids == [transformer.tokenizer.bos_token_id, 376]


def test_embedding_does_not_depend_on_batch(reference_llara, reference_texts):
    texts = reference_texts["passages"]
    short = "Tides."
    alone = reference_llara.encode_document([short], convert_to_tensor=True)
    batched = reference_llara.encode_document([texts[2], short, texts[1]], convert_to_tensor=True, batch_size=3)
    assert (alone[0] - batched[1]).abs().max() < 1e-5
    query_alone = reference_llara.encode_query([reference_texts["queries"][1]], convert_to_tensor=True)
    query_batched = reference_llara.encode_query(reference_texts["queries"], convert_to_tensor=True)
    assert (query_alone[0] - query_batched[1]).abs().max() < 1e-5


def test_right_padded_rows_pool_the_same_tokens(reference_llara, reference_texts):
    """The trainer merges columns by right-padding left-padded rows: pooling must follow the mask."""
    features = reference_llara.preprocess(reference_texts["queries"], task="query")
    left = reference_llara(dict(features))["sentence_embedding"]
    extra = 5
    shifted = {
        "input_ids": torch.nn.functional.pad(features["input_ids"], (0, extra), value=0),
        "attention_mask": torch.nn.functional.pad(features["attention_mask"], (0, extra), value=0),
    }
    right = reference_llara(shifted)["sentence_embedding"]
    assert (left - right).abs().max() < 1e-5


@pytest.mark.parametrize("text", ["", "   ", "\n\t"])
def test_empty_and_whitespace_texts_embed_the_prompt_only(reference_llara, text):
    transformer = reference_llara[0]
    (row,) = transformer.tokenize_texts([text], "passage")
    assert row[: len(transformer.prefix_ids)] == transformer.prefix_ids
    assert row[-len(transformer.suffix_ids("passage")) :] == transformer.suffix_ids("passage")
    embedding = reference_llara.encode_document([text], convert_to_tensor=True)
    assert torch.isfinite(embedding).all()
    assert abs(embedding.norm().item() - 1.0) < 1e-5


@pytest.mark.parametrize("bad, name", [(None, "NoneType"), (3, "int"), (["a"], "list")])
def test_non_strings_are_refused_naming_the_position(reference_llara, bad, name):
    with pytest.raises(TypeError, match=rf"position 1 is {name}"):
        reference_llara.preprocess(["fine", bad, "fine too"], task="query")
    # encode() sorts a batch by length before tokenising, so there the position is the sorted one.
    with pytest.raises(TypeError, match=rf"position \d+ (of the length-sorted batch )?is {name}"):
        reference_llara.encode_document(["fine", bad, "fine too"])


def test_very_long_text_keeps_its_prompt_tokens(reference_llara):
    transformer = reference_llara[0]
    text = "word " * 20_000  # 100,000 characters
    assert len(text) == 100_000
    features = reference_llara.preprocess([text], task="document")
    assert features["input_ids"].shape[1] == transformer.passage_max_length
    passage_prompt_ids = [transformer.prompt_token_ids[token] for token in PROMPT_TOKENS[:8]]
    assert features["input_ids"][0, -8:].tolist() == passage_prompt_ids
    query_features = reference_llara.preprocess([text], task="query")
    assert query_features["input_ids"].shape[1] == transformer.query_max_length


def test_unknown_task_is_refused(reference_llara):
    with pytest.raises(ValueError, match="Unknown task 'classification'"):
        reference_llara.preprocess(["x"], task="classification")


def test_max_length_without_room_for_text_is_refused(reference_llara_dir):
    with pytest.raises(ValueError, match="leaves no room for text"):
        LLaRATransformer(str(reference_llara_dir), query_max_length=20)


def test_last_k_pooling_validates_k():
    with pytest.raises(ValueError, match="num_tokens"):
        LastKPooling(0)


def test_last_k_pooling_averages_last_real_positions():
    token_embeddings = torch.arange(2 * 6, dtype=torch.float32).reshape(2, 6, 1)
    mask = torch.tensor([[0, 0, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0]])
    pooled = LastKPooling(num_tokens=2)({"token_embeddings": token_embeddings, "attention_mask": mask})
    assert pooled["sentence_embedding"].squeeze(-1).tolist() == [4.5, 8.5]
