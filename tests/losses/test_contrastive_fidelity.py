"""The fine-tuning loss against the authors' reference (README section c), and its cached and cross-device forms."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from datasets import Dataset
from sentence_transformers import SentenceTransformerTrainer
from sentence_transformers.sentence_transformer.losses import (
    CachedMultipleNegativesRankingLoss,
    MultipleNegativesRankingLoss,
)
from sentence_transformers.sentence_transformer.training_args import SentenceTransformerTrainingArguments

from llara_st.data.contrastive import contrastive_router_mapping
from llara_st.losses import contrastive_loss

REFERENCE_LOSS = 10.286253929138184


def reference_rows(reference_texts: dict, reference: dict) -> Dataset:
    """The reference batch: query 0 with passages [0, 1, 2], query 3 with passages [3, 4, 5]."""
    passages, queries = reference_texts["passages"], reference_texts["queries"]
    groups = reference["contrastive"]["passage_indices_per_query"]
    rows = {"anchor": [queries[i] for i in reference["contrastive"]["query_indices"]]}
    rows["positive"] = [passages[group[0]] for group in groups]
    for k in range(1, len(groups[0])):
        rows[f"negative_{k}"] = [passages[group[k]] for group in groups]
    return Dataset.from_dict(rows)


def test_loss_is_mnrl_with_scale_100_or_its_cached_variant(reference_llara) -> None:
    plain = contrastive_loss(reference_llara)
    assert type(plain) is MultipleNegativesRankingLoss and plain.scale == pytest.approx(100.0)
    cached = contrastive_loss(reference_llara, temperature=0.05, cached=True, mini_batch_size=4)
    assert isinstance(cached, CachedMultipleNegativesRankingLoss)
    assert cached.scale == pytest.approx(20.0) and cached.mini_batch_size == 4
    with pytest.raises(ValueError, match="temperature"):
        contrastive_loss(reference_llara, temperature=0)


def test_trainer_evaluate_matches_the_reference_loss_and_scores(
    reference_llara, reference_texts: dict, reference: dict, tmp_path: Path
) -> None:
    rows = reference_rows(reference_texts, reference)
    args = SentenceTransformerTrainingArguments(
        output_dir=str(tmp_path),
        per_device_eval_batch_size=len(rows),
        router_mapping=contrastive_router_mapping(rows.column_names),
        report_to="none",
        use_cpu=True,
    )
    embeddings: list[torch.Tensor] = []
    hook = reference_llara.register_forward_hook(
        lambda module, inputs, output: embeddings.append(output["sentence_embedding"].detach())
    )
    trainer = SentenceTransformerTrainer(
        model=reference_llara, args=args, eval_dataset=rows, loss=contrastive_loss(reference_llara, temperature=0.01)
    )
    loss = trainer.evaluate()["eval_loss"]
    hook.remove()
    assert abs(loss - REFERENCE_LOSS) < 1e-5, loss

    # The loss sees candidates column by column ([P0, P3] positives, then [P1, P4], then [P2, P5]); the
    # reference lays them out query by query. Same scores, permuted columns.
    anchors, *columns = embeddings
    scores = 100 * anchors @ torch.cat(columns).T
    groups = reference["contrastive"]["passage_indices_per_query"]
    passage_order = [group[k] for k in range(len(groups[0])) for group in groups]
    reference_scores = np.asarray(reference["contrastive"]["scores"])
    np.testing.assert_allclose(scores.numpy(), reference_scores[:, passage_order], atol=1e-4)
    # The targets agree: column i of the loss holds query i's positive, the reference's target passage.
    assert passage_order[: len(groups)] == reference["contrastive"]["target"]


def features(model, texts: list[str], task: str) -> dict:
    batch = model.preprocess(texts, task=task)
    batch["task"] = task
    return batch


def test_cached_and_plain_loss_give_the_same_loss_and_gradients(sharp_llara, reference_texts: dict) -> None:
    passages, queries = reference_texts["passages"], reference_texts["queries"]
    batch = {
        "query": queries[:3],
        "positive": passages[:3],
        "negative_1": passages[3:6],
        "negative_2": [passages[5], passages[0], passages[1]],
    }
    sharp_llara.train()
    results = []
    for loss_fn in (
        contrastive_loss(sharp_llara),
        # mini-batches of 2 over columns of 3: uneven chunks exercise the cache bookkeeping
        contrastive_loss(sharp_llara, cached=True, mini_batch_size=2),
    ):
        sharp_llara.zero_grad()
        sentence_features = [
            features(sharp_llara, texts, "query" if column == "query" else "document")
            for column, texts in batch.items()
        ]
        loss = loss_fn(sentence_features, None)
        loss.backward()
        grads = {name: p.grad.clone() for name, p in sharp_llara.named_parameters() if p.grad is not None}
        results.append((loss.item(), grads))
    (plain_loss, plain_grads), (cached_loss, cached_grads) = results
    assert plain_loss > 0.1  # a real loss, not a collapsed one
    assert cached_loss == pytest.approx(plain_loss, abs=1e-5)
    assert plain_grads.keys() == cached_grads.keys() and len(plain_grads) > 10
    for name, grad in plain_grads.items():
        # float32 rounding only: the sharp model's gradients reach ~80, so compare relative to each tensor's scale
        difference = (cached_grads[name] - grad).abs().max().item()
        assert difference <= 1e-5 * grad.abs().max().item() + 1e-7, (name, difference)


DISTRIBUTED_SCRIPT = """
import json, sys
import torch
import torch.distributed as dist
import llara_st
from llara_st.losses import contrastive_loss

dist.init_process_group("gloo")
rank, world = dist.get_rank(), dist.get_world_size()
model_dir, texts_path, out_path = sys.argv[1:4]
texts = json.load(open(texts_path))
model = llara_st.load(model_dir, device="cpu")
model.train()

def features(texts, task):
    batch = model.preprocess(texts, task=task)
    batch["task"] = task
    return batch

queries, positives, negatives = texts["queries"][:4], texts["passages"][:4], texts["passages"][2:6]
local = slice(rank * 2, rank * 2 + 2)
columns = [features(queries[local], "query"), features(positives[local], "document"),
           features(negatives[local], "document")]
gathered = contrastive_loss(model, gather_across_devices=True)(columns, None).item()
alone = contrastive_loss(model)(columns, None).item()
losses = [None] * world
dist.all_gather_object(losses, {"gathered": gathered, "alone": alone})
if rank == 0:
    json.dump(losses, open(out_path, "w"))
dist.destroy_process_group()
"""


@pytest.mark.slow
def test_cross_device_negatives_equal_one_process_on_the_whole_batch(
    reference_llara, reference_llara_dir: Path, fixture_dir: Path, tmp_path: Path
) -> None:
    script = tmp_path / "gather.py"
    script.write_text(DISTRIBUTED_SCRIPT)
    out = tmp_path / "losses.json"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    with socket.socket() as probe:  # a free port, so parallel runs do not collide
        probe.bind(("127.0.0.1", 0))
        port = str(probe.getsockname()[1])
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", port]
    command += [str(script), str(reference_llara_dir), str(fixture_dir / "texts.json"), str(out)]
    subprocess.run(command, check=True, env=env, timeout=300, capture_output=True)
    per_rank = json.loads(out.read_text())

    texts = json.loads((fixture_dir / "texts.json").read_text())
    reference_llara.train()
    whole = contrastive_loss(reference_llara)(
        [
            features(reference_llara, texts["queries"][:4], "query"),
            features(reference_llara, texts["passages"][:4], "document"),
            features(reference_llara, texts["passages"][2:6], "document"),
        ],
        None,
    ).item()
    # Each process scores its 2 queries against the 8 passages of both: the mean is the whole-batch loss ...
    assert np.mean([rank["gathered"] for rank in per_rank]) == pytest.approx(whole, abs=1e-4)
    # ... which differs from each process seeing only its own 4 passages.
    assert abs(np.mean([rank["alone"] for rank in per_rank]) - whole) > 1e-3
