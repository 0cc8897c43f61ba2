"""recipes/finetune.py end to end on a toy BEIR folder with the tiny converted fixture model."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch
import yaml
from datasets import Dataset
from sentence_transformers import SentenceTransformerTrainer
from sentence_transformers.sentence_transformer.training_args import SentenceTransformerTrainingArguments
from torch import nn

import llara_st
from llara_st.data.beir import load_beir
from llara_st.evaluation import beir_ir_evaluator
from llara_st.losses import contrastive_loss
from llara_st.prompts import PASSAGE_PROMPT_TOKENS, QUERY_PROMPT_TOKENS
from llara_st.training import finetuning
from llara_st.training.finetuning import FinetuneArguments, parse_finetune_arguments, run_finetuning
from llara_st.training.lora import has_lora_adapter, merge_lora_adapter
from tests.conftest import write_beir_folder

REPO_ROOT = Path(__file__).resolve().parents[2]

# Twelve documents, each about one thing; queries name it by a code phrase found in no document, so the
# untrained model ranks at random and only training can link phrase and document. Three phrasings train,
# a fourth is the dev split.
TOPICS = [
    "volcano", "honeybee", "glacier", "saxophone", "telescope", "origami",
    "penguin", "cactus", "lighthouse", "submarine", "tornado", "violin",
]  # fmt: skip
CODE_PHRASES = [
    "amber lantern", "silver kettle", "paper comet", "velvet anchor", "copper meadow", "marble river",
    "cotton thunder", "iron blossom", "glass harbor", "woolen engine", "crystal saddle", "granite feather",
]  # fmt: skip
TRAIN_FRAMES = ["tell me about the {}", "facts on the {}", "the {}, explained"]
DEV_FRAME = "what do people say of the {}?"


@pytest.fixture(scope="module")
def toy_beir(tmp_path_factory) -> Path:
    corpus, queries, qrels = {}, {}, {"train": [], "dev": []}
    for i, (topic, phrase) in enumerate(zip(TOPICS, CODE_PHRASES, strict=True)):
        other = TOPICS[(i + 1) % len(TOPICS)]
        corpus[f"d{i}"] = (
            topic.capitalize(),
            f"The {topic} is the subject of this passage. Every {topic} has its own story, and people who study "
            f"the {topic} write about it often. Unlike the {other}, the {topic} is described here in detail.",
        )
        for j, frame in enumerate(TRAIN_FRAMES):
            queries[f"t{i}_{j}"] = frame.format(phrase)
            qrels["train"].append((f"t{i}_{j}", f"d{i}", 1))
        queries[f"v{i}"] = DEV_FRAME.format(phrase)
        qrels["dev"].append((f"v{i}", f"d{i}", 1))
    return write_beir_folder(tmp_path_factory.mktemp("toy_beir"), corpus, queries, qrels)


@pytest.fixture(scope="module")
def toy_rows(toy_beir: Path) -> Dataset:
    """Fixed rows (no mining): each train query, its document, the next topic's document as negative."""
    corpus, queries, qrels = load_beir(toy_beir, "train")
    rows: dict[str, list[str]] = {"anchor": [], "positive": [], "negative_1": []}
    for query_id, judged in qrels.items():
        (doc_id,) = judged
        rows["anchor"].append(queries[query_id])
        rows["positive"].append(corpus[doc_id])
        rows["negative_1"].append(corpus[f"d{(int(doc_id[1:]) + 1) % len(TOPICS)}"])
    return Dataset.from_dict(rows)


def toy_config(model_dir: Path, output_dir: Path, **overrides) -> FinetuneArguments:
    settings = dict(
        model_name_or_path=str(model_dir),
        output_dir=str(output_dir),
        group_size=2,
        lora_r=8,
        lora_alpha=16,
        lora_dropout=0.0,
        per_device_train_batch_size=4,
        learning_rate=2e-3,
        warmup_ratio=0.0,
        max_steps=2,
        logging_steps=1,
        save_steps=1000,
        per_device_eval_batch_size=16,
        report_to="none",
        disable_tqdm=True,
    )
    return FinetuneArguments(**(settings | overrides))


@pytest.mark.slow
# The 27 steps and the 0.1 margin were set on the authors' tiny model; the stand-in built without ../shared learns
# the toy task more slowly (+0.04 in 27 steps), so this test needs the fixture model.
@pytest.mark.usefixtures("fixture_dir")
def test_finetuning_improves_dev_ndcg_and_the_saved_model_keeps_it(
    reference_llara_dir: Path, toy_beir: Path, tmp_path: Path
) -> None:
    config = toy_config(
        reference_llara_dir,
        tmp_path / "run",
        train_data=str(toy_beir),
        dev_data=str(toy_beir),
        mining_retriever="self",  # BM25 finds nothing: the code phrases occur in no document
        mining_range_min=0,
        mining_range_max=10,
        mining_relative_margin=None,
        mined_negatives=3,
        max_steps=27,
    )
    final = run_finetuning(config)
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())["metrics"]
    before, after = metrics["before"]["dev_cosine_ndcg@10"], metrics["after"]["dev_cosine_ndcg@10"]
    print(f"toy dev nDCG@10: before {before:.4f}, after {after:.4f}")
    assert after >= before + 0.1, (before, after)

    # The saved folder is the merged model: plain LLaRA weights that reproduce the after-training figure.
    assert final == str(tmp_path / "run" / "final")
    assert (Path(final) / "model.safetensors").is_file() and not (Path(final) / "adapter_config.json").exists()
    loaded = llara_st.load(final, device="cpu")
    evaluator = beir_ir_evaluator(*load_beir(toy_beir, "dev"), name="dev")
    assert evaluator(loaded)["dev_cosine_ndcg@10"] == pytest.approx(after, abs=1e-6)


class RecordingLoss(nn.Module):
    """The recipe's loss, recording the token ids and task of every column it receives."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.model = inner.model
        self.seen: list[list[tuple[str | None, torch.Tensor]]] = []
        self.checkpointing: list[bool] = []

    def forward(self, sentence_features, labels):
        self.checkpointing.append(self.model[0].model.is_activation_checkpointing)
        # The last 8 real tokens of each row, wherever the padding is.
        self.seen.append(
            [
                (
                    features.get("task"),
                    torch.stack(
                        [
                            ids[mask.bool()][-8:]
                            for ids, mask in zip(features["input_ids"], features["attention_mask"], strict=True)
                        ]
                    ),
                )
                for features in sentence_features
            ]
        )
        return self.inner(sentence_features, labels)


def test_queries_get_the_query_template_and_passages_the_passage_template_in_training(
    reference_llara_dir: Path, toy_rows: Dataset, tmp_path: Path, monkeypatch, caplog
) -> None:
    recorders: list[RecordingLoss] = []

    def recording_loss(model, **kwargs):
        recorders.append(RecordingLoss(contrastive_loss(model, **kwargs)))
        return recorders[-1]

    monkeypatch.setattr(finetuning, "contrastive_loss", recording_loss)
    with caplog.at_level(logging.WARNING):
        config = toy_config(
            reference_llara_dir, tmp_path / "run", fp16=True, lora_save="adapter", gradient_checkpointing=True
        )
        run_finetuning(config, train_dataset=toy_rows)
    assert "fp16 needs a CUDA device" in caplog.text  # the CPU run falls back to float32 instead of failing

    ids = llara_st.load(reference_llara_dir, device="cpu")[0].prompt_token_ids
    query_ids = torch.tensor([ids[token] for token in QUERY_PROMPT_TOKENS])
    passage_ids = torch.tensor([ids[token] for token in PASSAGE_PROMPT_TOKENS])
    (recorder,) = recorders
    assert len(recorder.seen) == 2  # two training steps
    assert recorder.checkpointing == [True, True]
    for step in recorder.seen:
        (anchor_task, anchor_ids), *passage_columns = step
        assert anchor_task == "query" and (anchor_ids[:, -8:] == query_ids).all()
        assert len(passage_columns) == 2  # positive, negative_1
        for task, input_ids in passage_columns:
            assert task == "document" and (input_ids[:, -8:] == passage_ids).all()


def test_training_without_router_mapping_warns(reference_llara, toy_rows: Dataset, tmp_path: Path, caplog) -> None:
    # The warning is logged once per process; forget earlier ones so this test sees its own.
    logging.Logger.warning_once.cache_clear()
    args = SentenceTransformerTrainingArguments(
        output_dir=str(tmp_path), max_steps=1, per_device_train_batch_size=2, report_to="none", use_cpu=True
    )
    trainer = SentenceTransformerTrainer(
        model=reference_llara,
        args=args,
        train_dataset=toy_rows.select(range(2)),
        loss=contrastive_loss(reference_llara),
    )
    with caplog.at_level(logging.WARNING):
        trainer.train()
    assert "without a task" in caplog.text and "router_mapping" in caplog.text


def test_merged_and_unmerged_adapter_give_the_same_embeddings(
    reference_llara_dir: Path, toy_rows: Dataset, tmp_path: Path
) -> None:
    texts = toy_rows["anchor"][:4] + toy_rows["positive"][:4]
    config = toy_config(reference_llara_dir, tmp_path / "run", lora_save="adapter", learning_rate=5e-3)
    adapter_dir = Path(run_finetuning(config, train_dataset=toy_rows))
    assert (adapter_dir / "adapter_config.json").is_file() and not (adapter_dir / "model.safetensors").exists()

    adapted = llara_st.load(adapter_dir, device="cpu")
    assert has_lora_adapter(adapted)
    base = llara_st.load(reference_llara_dir, device="cpu")
    unmerged_queries = adapted.encode_query(texts, convert_to_tensor=True)
    unmerged_documents = adapted.encode_document(texts, convert_to_tensor=True)
    # Training moved the embeddings (else the comparison below would prove nothing).
    assert (unmerged_queries - base.encode_query(texts, convert_to_tensor=True)).abs().max() > 1e-3

    merge_lora_adapter(adapted)
    assert not has_lora_adapter(adapted)
    adapted.save(str(tmp_path / "merged"))
    merged = llara_st.load(tmp_path / "merged", device="cpu")
    torch.testing.assert_close(merged.encode_query(texts, convert_to_tensor=True), unmerged_queries, atol=1e-5, rtol=0)
    torch.testing.assert_close(
        merged.encode_document(texts, convert_to_tensor=True), unmerged_documents, atol=1e-5, rtol=0
    )


def test_resumed_run_ends_where_the_uninterrupted_one_does(
    reference_llara_dir: Path, toy_rows: Dataset, tmp_path: Path
) -> None:
    texts = toy_rows["anchor"][:4]
    straight = toy_config(
        reference_llara_dir, tmp_path / "straight", max_steps=4, save_steps=2, batch_sampler="batch_sampler"
    )
    straight_model = llara_st.load(run_finetuning(straight, train_dataset=toy_rows), device="cpu")
    checkpoint = tmp_path / "straight" / "checkpoint-2"
    assert checkpoint.is_dir()

    resumed_config = toy_config(
        reference_llara_dir,
        tmp_path / "resumed",
        max_steps=4,
        save_steps=2,
        batch_sampler="batch_sampler",
        resume_from_checkpoint=str(checkpoint),
    )
    resumed_model = llara_st.load(run_finetuning(resumed_config, train_dataset=toy_rows), device="cpu")
    state = json.loads((tmp_path / "resumed" / "checkpoint-4" / "trainer_state.json").read_text())
    assert state["global_step"] == 4 and [entry["step"] for entry in state["log_history"] if "loss" in entry] == [
        1,
        2,
        3,
        4,
    ]
    torch.testing.assert_close(
        resumed_model.encode_query(texts, convert_to_tensor=True),
        straight_model.encode_query(texts, convert_to_tensor=True),
        atol=1e-5,
        rtol=0,
    )


@pytest.mark.parametrize("name", ["finetune_llama2_7b_msmarco_8gpu.yaml", "finetune_smollm2_scifact_cpu.yaml"])
def test_shipped_configs_parse(name: str) -> None:
    path = REPO_ROOT / "recipes" / "configs" / name
    (config,) = parse_finetune_arguments(path)
    projections = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]  # all-linear's, by name
    assert config.temperature == 0.01 and config.lora_target_modules == projections
    if "7b" in name:  # the reference's hyper-parameters
        assert (config.learning_rate, config.lora_r, config.lora_alpha, config.lora_dropout) == (3e-4, 64, 16, 0.1)
        assert (config.group_size, config.query_max_length, config.passage_max_length) == (16, 64, 160)
        # fp16 falls back to float32 on this CPU-only machine: the file itself asks for it.
        assert yaml.safe_load(path.read_text())["fp16"]
        assert config.gather_across_devices and config.num_train_epochs == 1
