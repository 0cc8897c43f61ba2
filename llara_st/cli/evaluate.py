from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "evaluate",
        help="evaluate a retriever with MTEB on a local BEIR folder or MTEB tasks",
        description=(
            "Evaluate a sentence-transformers model (LLaRA or any other) with MTEB. Prints nDCG@10, Recall@100 and "
            "MRR@10 and writes MTEB's result files (results/{org__model}/{revision}/{task}.json) under --output."
        ),
    )
    parser.add_argument("model", help="sentence-transformers model folder (or Hub id)")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--beir", metavar="DIR", help="local BEIR folder (corpus.jsonl, queries.jsonl, qrels/)")
    source.add_argument("--tasks", nargs="+", metavar="TASK", help="MTEB task names, e.g. SciFact (data from the Hub)")
    source.add_argument("--benchmark", metavar="NAME", help="an MTEB benchmark's tasks, e.g. 'MTEB(eng, v2)' (Hub)")
    parser.add_argument("--split", default="test", help="qrels split of the BEIR folder (default: test)")
    parser.add_argument("--output", metavar="OUT", help="folder for MTEB's result files")
    parser.add_argument("--model-name", help="'organization/model' in the result files (default: local/{folder})")
    parser.add_argument("--revision", help="revision label, e.g. the Hub commit sha (default: weights fingerprint)")
    parser.add_argument("--task-name", help="task name of the BEIR folder in result files (default: folder name)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--embedding-cache", metavar="DIR", help="cache corpus embeddings here (once per model)")
    parser.add_argument(
        "--faiss", choices=["flat", "ivf", "ivfpq", "hnsw"], help="retrieve with a faiss index of this kind"
    )
    parser.add_argument("--device", help="torch device, e.g. cuda or cpu")
    parser.add_argument(
        "--trust-remote-code",
        action="store_true",
        help="load models with custom module code via SentenceTransformer(trust_remote_code=True)",
    )
    parser.add_argument("--save-predictions", action="store_true", help="also write the rankings under OUT")
    parser.add_argument("--overwrite", action="store_true", help="recompute results already present in OUT")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    parser.add_argument("--json", action="store_true", help="print all scores as JSON")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import mteb

    from llara_st.evaluation import evaluate_beir, evaluate_mteb, format_scores

    options = dict(
        model_name=args.model_name,
        revision=args.revision,
        batch_size=args.batch_size,
        show_progress_bar=not args.no_progress,
        embedding_cache=args.embedding_cache,
        faiss_index=args.faiss,
        trust_remote_code=args.trust_remote_code,
        device=args.device,
        save_predictions=args.save_predictions,
        overwrite=args.overwrite,
    )
    if args.beir:
        scores = evaluate_beir(args.model, args.beir, args.split, args.output, task_name=args.task_name, **options)
        results = {args.task_name or Path(args.beir).expanduser().resolve().name: {args.split: scores}}
    else:
        tasks = args.tasks if args.tasks else list(mteb.get_benchmark(args.benchmark).tasks)
        results = evaluate_mteb(args.model, tasks, args.output, **options)
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        for task, splits in results.items():
            for split, scores in splits.items():
                print(f"{task} [{split}]  {format_scores(scores)}")
    if args.output:
        print(f"MTEB result files under {args.output}/results")
    return 0
