"""LLaRA's MTEB ModelMeta, its loader, the weights fingerprint, and evaluation through mteb.evaluate(meta, task)."""

from __future__ import annotations

import copy
import json

import mteb
import numpy as np
import pytest
import torch
from mteb.models import SentenceTransformerEncoderWrapper

from llara_st.evaluation import (
    BEIRFolderRetrieval,
    evaluate_beir,
    llara_model_meta,
    load_llara_for_mteb,
    model_fingerprint,
    model_meta_for,
)
from tests.evaluation.retrieval_helpers import static_embedding_model

TEXTS = ["what causes tides?", "Insulin lowers blood glucose."]


def test_llara_meta_describes_the_model(reference_llara):
    meta = llara_model_meta("me/llara-tiny", model=reference_llara, training_datasets={"SciFact"}, license="apache-2.0")
    assert meta.name == "me/llara-tiny"
    assert meta.revision == model_fingerprint(reference_llara)
    assert meta.embed_dim == 64
    assert meta.max_tokens == 160  # the passage max length
    assert meta.n_parameters == sum(p.numel() for p in reference_llara.parameters())
    assert meta.similarity_fn_name == "cosine"
    assert meta.framework == ["Sentence Transformers", "PyTorch"]
    assert meta.use_instructions is False and meta.model_type == ["dense"]
    assert meta.training_datasets == {"SciFact"}
    assert meta.loader is load_llara_for_mteb
    assert "2312.15503" in meta.citation
    as_json = json.loads(json.dumps(meta.to_dict(), default=str))
    assert as_json["loader"] == "load_llara_for_mteb" and as_json["name"] == "me/llara-tiny"


def test_model_meta_for_picks_llara_or_generic_metadata(reference_llara):
    assert model_meta_for(reference_llara, "me/x").loader is load_llara_for_mteb
    static = static_embedding_model({"a": [1.0, 0.0], "b": [0.0, 1.0]})
    generic = model_meta_for(static, source="/models/static-thing")
    assert generic.name == "local/static-thing"
    assert generic.loader is SentenceTransformerEncoderWrapper
    assert generic.n_parameters == 8 and generic.embed_dim == 2
    assert model_meta_for(static, source="some-org/some-model").name == "some-org/some-model"  # a Hub id
    with pytest.raises(ValueError, match="organization/model"):
        model_meta_for(static, "plain-name")


def test_fingerprint_follows_weights_and_settings(reference_llara):
    same = copy.deepcopy(reference_llara)
    assert model_fingerprint(same) == model_fingerprint(reference_llara)
    with torch.no_grad():
        next(same.parameters()).view(-1)[0] += 1e-3
    assert model_fingerprint(same) != model_fingerprint(reference_llara)
    shorter = copy.deepcopy(reference_llara)
    shorter[0].query_max_length = reference_llara[0].query_max_length - 8
    assert model_fingerprint(shorter) != model_fingerprint(reference_llara)


def test_loader_reads_llara_folders_and_authors_checkpoints(reference_llara_dir, reference_llara, fixture_dir):
    expected = reference_llara.encode_query(TEXTS)
    from_folder = load_llara_for_mteb(str(reference_llara_dir), device="cpu")
    assert isinstance(from_folder, SentenceTransformerEncoderWrapper)
    np.testing.assert_allclose(from_folder.model.encode_query(TEXTS), expected, atol=1e-5)
    # The fixture's model folder is a plain causal LM with <s1>..<s16>, as the authors' checkpoints are.
    from_checkpoint = load_llara_for_mteb(str(fixture_dir / "model"), device="cpu")
    np.testing.assert_allclose(from_checkpoint.model.encode_query(TEXTS), expected, atol=1e-5)


def test_mteb_evaluate_loads_a_llara_meta(reference_llara_dir, reference_llara, make_beir_folder):
    folder = make_beir_folder(
        "meta",
        corpus={"a": "The Moon causes tides.", "b": "Paris is in France.", "c": "Insulin lowers glucose."},
        queries={"x": "tides", "y": "France"},
        qrels={"test": [("x", "a", 1), ("y", "b", 1)]},
    )
    meta = llara_model_meta(str(reference_llara_dir), revision="r1", model=reference_llara)
    result = mteb.evaluate(meta, BEIRFolderRetrieval(folder, "test"), cache=None, show_progress_bar=False)
    (scores,) = result.task_results[0].scores["test"]
    direct = evaluate_beir(reference_llara, folder, "test", show_progress_bar=False)
    assert scores["ndcg_at_10"] == pytest.approx(direct["ndcg_at_10"])
    assert scores["mrr_at_10"] == pytest.approx(direct["mrr_at_10"])


def test_one_loader_and_one_accessor_remain():
    """Issue 12.2: models load with llara_st.load and the input module is reached with llara_st.model.llara_module;
    the former aliases are gone (load_llara_for_mteb stays: it is the MTEB encoder a ModelMeta's loader returns)."""
    import llara_st.evaluation
    import llara_st.training

    for alias in ("load_sentence_transformer", "resolve_model_folder", "is_llara_model"):
        assert alias not in llara_st.evaluation.__all__
        with pytest.raises(AttributeError):
            getattr(llara_st.evaluation, alias)
    assert not hasattr(llara_st.training, "llara_transformer")
