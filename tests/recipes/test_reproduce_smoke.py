"""The README's main job end to end on a tiny model and a few SciFact documents (issue: main job smoke test)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from sentence_transformers import SentenceTransformer

import llara_st


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))


@pytest.fixture(scope="module")
def mini_scifact(data_dir: Path, tmp_path_factory) -> Path:
    """SciFact cut down: 12 train and 8 dev queries with their relevant documents plus 40 distractors."""
    source = data_dir / "scifact"
    out = tmp_path_factory.mktemp("mini_scifact")
    (out / "qrels").mkdir()
    keep_docs: set[str] = set()
    keep_queries: set[str] = set()
    for split, count in (("train", 12), ("dev", 8)):
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
def mini_wikitext(data_dir: Path, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("wikitext") / "wiki.raw"
    lines = (data_dir / "wikitext2" / "wiki.test.raw").read_text().splitlines(keepends=True)[:60]
    path.write_text("".join(lines))
    return path


@pytest.mark.slow
def test_pipeline_runs_end_to_end_and_skips_finished_stages(
    tiny_llama_dir, mini_scifact, mini_wikitext, tmp_path, monkeypatch
):
    from reproduce_scifact import Pipeline, ReproductionConfig, main

    monkeypatch.chdir(tmp_path)
    config = ReproductionConfig(
        output_dir=str(tmp_path / "run"),
        final_model_dir=str(tmp_path / "llara"),
        base_model=str(tiny_llama_dir),
        beir_dir=str(mini_scifact),
        wikitext_paths=[str(mini_wikitext)],
        query_max_length=48,
        passage_max_length=64,
        encode_batch_size=16,
        adapt_max_rows=24,
        adapt_cutoff_length=64,
        adapt_batch_size=4,
        adapt_lora_r=4,
        adapt_lora_alpha=8,
        mining_range_min=1,
        mining_range_max=20,
        finetune_batch_size=4,
        finetune_lora_r=4,
        finetune_lora_alpha=8,
        logging_steps=1,
    )
    Pipeline(config).run()

    report = (tmp_path / "run" / "report" / "README.md").read_text()
    for label in ("BM25", "all-MiniLM-L6-v2", "zero-shot", "unadapted + fine-tuned", "adapted + fine-tuned"):
        assert label in report
    assert (tmp_path / "run" / "report" / "scores.png").stat().st_size > 0
    assert (tmp_path / "run" / "report" / "losses.png").stat().st_size > 0
    stages = {p.stem: json.loads(p.read_text()) for p in (tmp_path / "run" / "stages").glob("*.json")}
    assert set(stages) == set(Pipeline(config).stages)
    assert stages["adapt"]["result"]["log_history"], "the adaptation loss curve must be recorded"
    assert stages["finetune_adapted"]["result"]["log_history"]
    for stage in ("zeroshot", "eval_unadapted", "eval_adapted"):
        assert 0.0 <= stages[stage]["result"]["scores"]["ndcg_at_10"] <= 1.0
    # The MTEB result files follow the leaderboard layout.
    assert list((tmp_path / "run" / "mteb").glob("results/*/*/*.json"))

    # The final model loads through both loaders and embeds like the fine-tuned adapted model.
    final = tmp_path / "llara"
    trusted = SentenceTransformer(str(final), trust_remote_code=True)
    safe = llara_st.load(final)
    assert (trusted.encode_query(["a claim"]) == safe.encode_query(["a claim"])).all()

    # A finished stage is not recomputed: its stage file stays as it was.
    before = (tmp_path / "run" / "stages" / "adapt.json").read_text()
    main([f"--output_dir={tmp_path / 'run'}", f"--base_model={tiny_llama_dir}", "--stage", "adapt"])
    assert (tmp_path / "run" / "stages" / "adapt.json").read_text() == before
