"""`llara-st evaluate`: a thin CLI over evaluate_beir / evaluate_mteb."""

from __future__ import annotations

import json
import math

import pytest

from llara_st.cli import main
from llara_st.evaluation import model_fingerprint


def test_evaluate_beir_folder_prints_headline_metrics_and_writes_results(
    fixed_model, fixed_beir_folder, tmp_path, capsys
):
    model_dir = tmp_path / "static-model"
    fixed_model.save(str(model_dir))
    out = tmp_path / "out"
    argv = ["evaluate", str(model_dir), "--beir", str(fixed_beir_folder), "--split", "test", "--output", str(out)]
    assert main([*argv, "--no-progress"]) == 0
    printed = capsys.readouterr().out
    # Mean over q1..q3 of the hand-computed values in test_evaluate_beir.py.
    ndcg = ((1 / math.log2(3) + 1 / math.log2(5)) / (1 + 1 / math.log2(3)) + 1 + (0.5 + 2 / math.log2(6)) / (
        2 + 1 / math.log2(3)
    )) / 3
    assert f"fixed [test]  nDCG@10 {ndcg:.4f}  Recall@100 1.0000  MRR@10 {(1 / 2 + 1 + 1 / 3) / 3:.4f}" in printed
    result_file = out / "results" / "local__static-model" / model_fingerprint(fixed_model) / "fixed.json"
    assert json.loads(result_file.read_text())["scores"]["test"][0]["ndcg_at_10"] == pytest.approx(ndcg, abs=1e-5)


def test_evaluate_json_output_and_names(fixed_model, fixed_beir_folder, tmp_path, capsys):
    model_dir = tmp_path / "m"
    fixed_model.save(str(model_dir))
    argv = ["evaluate", str(model_dir), "--beir", str(fixed_beir_folder), "--split", "dev", "--json", "--no-progress"]
    assert main([*argv, "--task-name", "Tiny", "--faiss", "Flat"]) == 0
    scores = json.loads(capsys.readouterr().out)
    assert scores["Tiny"]["dev"]["ndcg_at_10"] == pytest.approx(1.0)


def test_evaluate_needs_a_data_source(tmp_path):
    with pytest.raises(SystemExit):
        main(["evaluate", str(tmp_path)])
    with pytest.raises(KeyError, match="NoSuchTask"):
        main(["evaluate", str(tmp_path), "--tasks", "NoSuchTask"])
