"""Every saved LLaRA model carries a LLaRA model card, written by sentence-transformers' own card machinery
(issue 13, point 1)."""

from __future__ import annotations

import shutil

import pytest
from datasets import Dataset
from sentence_transformers import (
    SentenceTransformer,
    SentenceTransformerModelCardData,
    SentenceTransformerTrainer,
    SentenceTransformerTrainingArguments,
)
from sentence_transformers.base.model_card import generate_model_card
from sentence_transformers.sentence_transformer.evaluation import InformationRetrievalEvaluator
from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

import llara_st
from llara_st.citation import LLARA_CITATION
from llara_st.model_card import LLaRAModelCardData, use_llara_model_card


def assert_llara_card(card: str) -> None:
    """What a LLaRA card must tell a user who has never heard of llara-st."""
    assert "# LLaRA embedder" in card
    assert "It is a [LLaRA](https://arxiv.org/abs/2312.15503) embedder" in card
    assert "pip install llara-st" in card
    assert 'SentenceTransformer("sentence_transformers_model_id", trust_remote_code=True)' in card
    assert 'llara_st.load("sentence_transformers_model_id")' in card
    assert "model.encode_query(queries)" in card and "model.encode_document(documents)" in card
    assert LLARA_CITATION in card
    assert "- llara" in card  # a tag in the front matter, for the Hub's filters


def test_convert_writes_a_llara_card(tiny_llama_dir, tmp_path):
    llara_st.convert(str(tiny_llama_dir), tmp_path / "llara")
    assert_llara_card((tmp_path / "llara" / "README.md").read_text(encoding="utf8"))


def test_build_and_load_give_llara_card_data(reference_llara_dir, tmp_path):
    built = llara_st.build_llara_model(str(reference_llara_dir), model_card_data=LLaRAModelCardData(license="mit"))
    assert isinstance(built.model_card_data, LLaRAModelCardData) and built.model_card_data.license == "mit"
    built.save(str(tmp_path / "built"))
    card = (tmp_path / "built" / "README.md").read_text(encoding="utf8")
    assert_llara_card(card)
    assert "**License:** mit" in card
    loaded = llara_st.load(tmp_path / "built", device="cpu")
    assert isinstance(loaded.model_card_data, LLaRAModelCardData)
    trusted = llara_st.load(tmp_path / "built", device="cpu", trust_remote_code=True)
    assert isinstance(trusted.model_card_data, LLaRAModelCardData)


def test_a_trained_model_gets_the_llara_card_with_its_evaluation(reference_llara_dir, tmp_path):
    model = llara_st.load(reference_llara_dir, device="cpu")
    rows = Dataset.from_dict(
        {
            "anchor": ["what causes tides?", "how do bees talk?", "where is Paris?", "what lowers glucose?"],
            "positive": [
                "The Moon's gravity causes tides.",
                "Honeybees communicate with a waggle dance.",
                "Paris is the capital of France.",
                "Insulin lowers blood glucose.",
            ],
        }
    )
    evaluator = InformationRetrievalEvaluator(
        queries={"q1": "what causes tides?", "q2": "where is Paris?"},
        corpus={"d1": "The Moon's gravity causes tides.", "d2": "Paris is the capital of France."},
        relevant_docs={"q1": {"d1"}, "q2": {"d2"}},
        name="toy-ir",
        show_progress_bar=False,
    )
    args = SentenceTransformerTrainingArguments(
        output_dir=str(tmp_path / "run"),
        max_steps=1,
        per_device_train_batch_size=4,
        router_mapping={"anchor": "query", "positive": "document"},
        report_to=[],
        save_strategy="no",
        use_cpu=True,
    )
    trainer = SentenceTransformerTrainer(
        model=model, args=args, train_dataset=rows, loss=MultipleNegativesRankingLoss(model), evaluator=evaluator
    )
    trainer.train()
    evaluator(model)
    model.model_card_data.add_evaluation_results("SciFact", {"ndcg_at_10": 0.61234, "recall_at_100": 0.9}, split="dev")
    model.save(str(tmp_path / "trained"))
    card = (tmp_path / "trained" / "README.md").read_text(encoding="utf8")
    assert_llara_card(card)
    assert "generated_from_trainer" in card and "MultipleNegativesRankingLoss" in card
    assert "toy-ir" in card and "cosine_ndcg@10" in card  # the evaluator's results, through sentence-transformers
    assert "SciFact (dev)" in card and "| ndcg_at_10 | 0.6123 |" in card  # results measured elsewhere (MTEB)
    assert card.count("2312.15503") >= 2  # the LLaRA citation sits beside the loss's own


def test_evaluation_results_need_metrics():
    with pytest.raises(ValueError, match="no metrics"):
        LLaRAModelCardData().add_evaluation_results("SciFact", {})


def test_a_model_loaded_by_sentence_transformers_can_take_the_llara_card(reference_llara_dir):
    given = SentenceTransformerModelCardData(license="apache-2.0", language="en", local_files_only=True)
    model = SentenceTransformer(str(reference_llara_dir), trust_remote_code=True, model_card_data=given, device="cpu")
    card_data = use_llara_model_card(model)
    assert model.model_card_data is card_data and card_data.model is model
    assert (card_data.license, card_data.language, card_data.local_files_only) == ("apache-2.0", ["en"], True)
    assert use_llara_model_card(model) is card_data  # idempotent
    card = generate_model_card(model)
    assert_llara_card(card)
    assert "**License:** apache-2.0" in card


def test_resaving_a_model_loaded_by_sentence_transformers_keeps_the_llara_card(reference_llara_dir, tmp_path):
    model = SentenceTransformer(str(reference_llara_dir), trust_remote_code=True, device="cpu")
    model.save(str(tmp_path / "again"))
    assert_llara_card((tmp_path / "again" / "README.md").read_text(encoding="utf8"))


def test_convert_names_the_base_model_from_the_source(tiny_llama_dir, tmp_path, monkeypatch):
    """Issue 18.7: offline, a converted model's card said "Base model: Unknown"."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    snapshot = tmp_path / "hub" / "models--HuggingFaceTB--SmolLM2-135M" / "snapshots" / "0123abcd"
    shutil.copytree(tiny_llama_dir, snapshot)  # a causal LM read from the Hugging Face cache
    llara_st.convert(str(snapshot), tmp_path / "from-cache")
    card = (tmp_path / "from-cache" / "README.md").read_text(encoding="utf8")
    assert "base_model: HuggingFaceTB/SmolLM2-135M" in card
    assert "[HuggingFaceTB/SmolLM2-135M](https://huggingface.co/HuggingFaceTB/SmolLM2-135M)" in card
    assert "at revision 0123abcd" in card and "# LLaRA embedder based on HuggingFaceTB/SmolLM2-135M" in card
    model = llara_st.build_llara_model(str(tiny_llama_dir))
    model.transformers_model.config._name_or_path = "HuggingFaceTB/SmolLM2-135M"  # as from_pretrained(hub id) sets
    model.save(str(tmp_path / "from-hub-id"))
    assert "base_model: HuggingFaceTB/SmolLM2-135M" in (tmp_path / "from-hub-id" / "README.md").read_text()
    llara_st.convert(str(tiny_llama_dir), tmp_path / "from-folder")  # a local folder names no Hub model
    assert "base_model:" not in (tmp_path / "from-folder" / "README.md").read_text()
