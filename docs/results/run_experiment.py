"""One dev experiment of docs/results/experiments.md: fine-tune, then nDCG@10 on a fixed SciFact dev sub-corpus.

Run (from the repository root, after the main job's `prepare` and `mine` stages made the model and the rows):
    python docs/results/run_experiment.py NAME MODEL_DIR ROWS_DIR SUB_CORPUS_DIR '{"_max_rows": 128, "lora": false}'

The JSON holds FinetuneArguments overrides of the defaults below (today's main-job fine-tuning) and ``_max_rows``
(a seeded sample of the rows). SUB_CORPUS_DIR is a BEIR folder whose corpus is every document relevant to a dev
query plus a seeded random sample of the others. One JSON line per run is appended to ``experiments.jsonl``.
"""

from __future__ import annotations

import json
import sys
import time

from datasets import load_from_disk

import llara_st
from llara_st.data import load_beir
from llara_st.training import beir_ir_evaluator, parse_finetune_arguments, run_finetuning

DEFAULTS = {
    "group_size": 2,
    "query_max_length": 64,
    "passage_max_length": 128,
    "lora": True,
    "lora_r": 16,
    "lora_alpha": 32,
    "lora_dropout": 0.0,
    "num_train_epochs": 1,
    "per_device_train_batch_size": 16,
    "learning_rate": 2e-4,
    "warmup_steps": 0.1,
    "temperature": 0.01,
    "logging_steps": 4,
    "save_steps": 100_000,
    "save_total_limit": 1,
    "seed": 42,
    "use_cpu": True,
    "report_to": "none",
}


def main() -> None:
    name, model_dir, rows_dir, sub_corpus = sys.argv[1:5]
    overrides = json.loads(sys.argv[5]) if len(sys.argv) > 5 else {}
    max_rows = overrides.pop("_max_rows", None)
    settings = {**DEFAULTS, "model_name_or_path": model_dir, "output_dir": f"runs/experiments/{name}", **overrides}
    (args,) = parse_finetune_arguments(settings)
    rows = load_from_disk(rows_dir)
    if max_rows:
        rows = rows.shuffle(seed=42).select(range(max_rows))
    start = time.time()
    final = run_finetuning(args, train_dataset=rows)
    trained = time.time()
    evaluator = beir_ir_evaluator(*load_beir(sub_corpus, "dev"), name="devsub", batch_size=32)
    metrics = evaluator(llara_st.load(final))
    record = {
        "name": name,
        "settings": overrides,
        "max_rows": max_rows,
        "ndcg10": metrics["devsub_cosine_ndcg@10"],
        "train_min": round((trained - start) / 60, 1),
        "eval_min": round((time.time() - trained) / 60, 1),
    }
    print(json.dumps(record))
    with open("experiments.jsonl", "a", encoding="utf8") as log:
        log.write(json.dumps(record) + "\n")


if __name__ == "__main__":
    main()
