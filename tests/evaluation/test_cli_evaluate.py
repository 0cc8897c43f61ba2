"""`llara-st evaluate`: a thin CLI over evaluate_beir / evaluate_mteb."""

from __future__ import annotations

import json
import math
import warnings

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
    ndcg = (
        (1 / math.log2(3) + 1 / math.log2(5)) / (1 + 1 / math.log2(3))
        + 1
        + (0.5 + 2 / math.log2(6)) / (2 + 1 / math.log2(3))
    ) / 3
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


def test_evaluate_needs_a_data_source(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["evaluate", str(tmp_path)])
    capsys.readouterr()
    assert main(["evaluate", str(tmp_path), "--tasks", "NoSuchTask"]) == 1
    err = capsys.readouterr().err
    assert err.strip() == (
        "llara-st evaluate: error: MTEB does not know the task(s) ['NoSuchTask']: 'NoSuchTask' not found and no "
        "similar keys were found."
    )


@pytest.mark.parametrize(
    ("extra_argv", "message"),
    [
        (["--beir", "{tmp}/absent"], "BEIR folder {tmp}/absent does not exist"),
        (["--beir", "{beir}", "--model-kwargs", "{{bad"], "--model-kwargs is not valid JSON"),
        (["--beir", "{beir}", "--model-kwargs", "[1]"], "--model-kwargs must be a JSON object"),
        (
            ["--beir", "{beir}", "--dtype", "bfloat16", "--model-kwargs", '{{"torch_dtype": "float16"}}'],
            "--dtype and --model-kwargs both set the dtype (torch_dtype)",
        ),
        (["--beir", "{beir}", "--batch-size", "0"], "--batch-size must be positive, got 0"),
    ],
)
def test_evaluate_user_errors_are_one_line(extra_argv, message, fixed_beir_folder, tmp_path, capsys):
    argv = [arg.format(tmp=tmp_path, beir=fixed_beir_folder) for arg in extra_argv]
    assert main(["evaluate", str(fixed_beir_folder), *argv]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert message.format(tmp=tmp_path) in err


def test_evaluate_missing_model_is_one_line(fixed_beir_folder, tmp_path, capsys):
    assert main(["evaluate", str(tmp_path / "no-model"), "--beir", str(fixed_beir_folder)]) == 1
    assert (
        capsys.readouterr().err.strip()
        == f"llara-st evaluate: error: model folder {tmp_path / 'no-model'} does not exist"
    )
    (tmp_path / "model.gguf").write_text("not a folder")
    assert main(["evaluate", str(tmp_path / "model.gguf"), "--beir", str(fixed_beir_folder)]) == 1
    assert "model.gguf is a file; give a model folder or a Hub id" in capsys.readouterr().err


def test_evaluate_dtype_and_model_kwargs_reach_the_loader(tiny_llara_dir, fixed_beir_folder, tmp_path, capsys):
    """--dtype bfloat16 loads the backbone in bf16: the results land under the bf16 weights' fingerprint."""
    import llara_st

    out = tmp_path / "out"
    argv = ["evaluate", str(tiny_llara_dir), "--beir", str(fixed_beir_folder), "--output", str(out)]
    assert (
        main([*argv, "--no-progress", "--dtype", "bfloat16", "--model-kwargs", '{"attn_implementation": "sdpa"}']) == 0
    )
    bf16 = llara_st.load(tiny_llara_dir, model_kwargs={"dtype": "bfloat16"})
    fp32 = llara_st.load(tiny_llara_dir)
    assert model_fingerprint(bf16) != model_fingerprint(fp32)
    assert (out / "results" / "local__llara" / model_fingerprint(bf16) / "fixed.json").is_file()
    # Backbone options reach from_pretrained: transformers names an unknown attention implementation.
    capsys.readouterr()
    assert main([*argv, "--no-progress", "--model-kwargs", '{"attn_implementation": "no-such-attention"}']) == 1
    err = capsys.readouterr().err
    assert "no-such-attention" in err and len(err.strip().splitlines()) == 1


def test_evaluate_logging_is_quiet_by_default(fixed_model, fixed_beir_folder, tmp_path, capsys):
    model_dir = tmp_path / "m"
    fixed_model.save(str(model_dir))
    argv = ["evaluate", str(model_dir), "--beir", str(fixed_beir_folder), "--no-progress", "--output", str(tmp_path)]
    with warnings.catch_warnings(record=True) as quiet_warnings:
        warnings.simplefilter("always")
        assert main(argv) == 0
    assert "INFO" not in capsys.readouterr().err
    assert not [w for w in quiet_warnings if issubclass(w.category, FutureWarning)]
    # A second run finds the results in the output folder; MTEB's cache notice is INFO, shown with -v, and
    # mteb's FutureWarnings (about sentence-transformers renames, nothing a user can act on) come back.
    with warnings.catch_warnings(record=True) as verbose_warnings:
        warnings.simplefilter("always")
        assert main([*argv, "-v"]) == 0
    assert "INFO mteb" in capsys.readouterr().err
    assert [w for w in verbose_warnings if issubclass(w.category, FutureWarning)]


def test_evaluate_passes_faiss_search_parameters(fixed_model, fixed_beir_folder, tmp_path, capsys):
    """Issue 18.1: `--faiss IVF16,Flat` searched one list (faiss's default nprobe) with no way to ask for more."""
    model_dir = tmp_path / "m"
    fixed_model.save(str(model_dir))
    argv = ["evaluate", str(model_dir), "--beir", str(fixed_beir_folder), "--split", "dev", "--json", "--no-progress"]
    assert main([*argv, "--faiss", "HNSW32", "--ef-search", "64"]) == 0
    assert json.loads(capsys.readouterr().out)[fixed_beir_folder.name]["dev"]["ndcg_at_10"] == pytest.approx(1.0)
    assert main([*argv, "--faiss", "Flat", "--nprobe", "4"]) == 1  # reaches faiss, which has no nprobe for Flat
    assert "could not set parameter nprobe" in capsys.readouterr().err
    assert main([*argv, "--nprobe", "4"]) == 1
    assert "--nprobe needs --faiss" in capsys.readouterr().err


# ------------------------------------------------------------------------------ issue 16.8: the data before the model


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("corpus", "is not valid JSON"),
        ("split", "has no qrels for split 'test'"),
        ("qrels", "query 'q9' is not in queries.jsonl"),
    ],
)
def test_evaluate_checks_the_beir_data_before_loading_the_model(
    damage, message, fixed_model, fixed_beir_folder, tmp_path, capsys, monkeypatch
):
    """Issue 16.8: `llara-st evaluate` loaded the model (minutes for a 7B) before reading the BEIR folder."""
    import llara_st

    model_dir = tmp_path / "m"
    fixed_model.save(str(model_dir))
    if damage == "corpus":
        with (fixed_beir_folder / "corpus.jsonl").open("a") as handle:
            handle.write("{not json\n")
    elif damage == "split":
        (fixed_beir_folder / "qrels" / "test.tsv").unlink()
    else:
        with (fixed_beir_folder / "qrels" / "test.tsv").open("a") as handle:
            handle.write("q9\td1\t1\n")

    def load(*args, **kwargs):
        raise AssertionError("the model was loaded before the data was checked")

    monkeypatch.setattr(llara_st, "load", load)
    assert main(["evaluate", str(model_dir), "--beir", str(fixed_beir_folder), "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert message in err


def test_evaluate_a_model_folder_with_a_symlink_loop_is_one_line(tiny_llara_dir, fixed_beir_folder, tmp_path, capsys):
    """Issue 16.7: a symlink loop in the model folder ended in `RuntimeError: Symlink loop from ...`."""
    import shutil

    model_dir = tmp_path / "model"
    shutil.copytree(tiny_llara_dir, model_dir)
    (model_dir / "loop").symlink_to(model_dir / "loop")
    assert main(["evaluate", str(model_dir), "--beir", str(fixed_beir_folder), "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert "symlink loop" in err and "loop" in err


def test_evaluate_devices_reach_the_evaluation(fixed_model, fixed_beir_folder, tmp_path, capsys, monkeypatch):
    """Issue 17.5: `--devices cpu,cpu` asks evaluate_mteb for one encoding process per device (the pool itself is
    tested in test_evaluate_beir.py); the model loads on the CPU, whence the pool sends it to its workers."""
    import llara_st.evaluation

    model_dir = tmp_path / "m"
    fixed_model.save(str(model_dir))
    received: dict = {}
    evaluate_mteb = llara_st.evaluation.evaluate_mteb

    def recording_evaluate_mteb(model, tasks, output_folder=None, **options):
        received.update(options, device=model.device.type)
        return evaluate_mteb(model, tasks, output_folder, **(options | {"devices": None}))

    monkeypatch.setattr(llara_st.evaluation, "evaluate_mteb", recording_evaluate_mteb)
    argv = ["evaluate", str(model_dir), "--beir", str(fixed_beir_folder), "--split", "dev", "--json", "--no-progress"]
    assert main([*argv, "--devices", "cpu, cpu"]) == 0
    assert received["devices"] == ["cpu", "cpu"] and received["device"] == "cpu"
    assert json.loads(capsys.readouterr().out)["fixed"]["dev"]["ndcg_at_10"] == pytest.approx(1.0)

    assert main([*argv, "--devices", "cpu,,cpu"]) == 1
    err = capsys.readouterr().err
    assert "--devices: '' is not a torch device" in err and len(err.strip().splitlines()) == 1
    with pytest.raises(SystemExit):  # one process on --device or several on --devices
        main([*argv, "--device", "cpu", "--devices", "cpu,cpu"])
    assert "not allowed with argument" in capsys.readouterr().err


def test_evaluate_prints_mteb_cache_notices_once(fixed_model, fixed_beir_folder, tmp_path, capsys):
    """Issue 18.8: with a fresh --embedding-cache each of mteb's cache warnings was printed twice per cache folder
    (logged, then warned again)."""
    model_dir = tmp_path / "m"
    fixed_model.save(str(model_dir))
    argv = ["evaluate", str(model_dir), "--beir", str(fixed_beir_folder), "--no-progress"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert main([*argv, "--embedding-cache", str(tmp_path / "cache")]) == 0
    err = capsys.readouterr().err
    assert err.count("No existing files found") == 1
    assert err.count("Dimension file not found") <= 1
    assert not [warning for warning in caught if "VectorCacheMap" in str(warning.message)]
