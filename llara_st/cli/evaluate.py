"""``llara-st evaluate MODEL``: MTEB retrieval scores of a model on a local BEIR folder or MTEB tasks."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from llara_st.cli import DTYPES, UserError


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
    parser.add_argument(
        "--batch-size", type=int, default=32, help="texts encoded at once; lower it if memory runs out (default: 32)"
    )
    parser.add_argument("--embedding-cache", metavar="DIR", help="cache corpus embeddings here (once per model)")
    parser.add_argument(
        "--faiss",
        metavar="FACTORY",
        help="retrieve with a faiss index, e.g. Flat, HNSW32, IVF1024,SQ8 (factory string)",
    )
    parser.add_argument("--nprobe", type=int, help="with an IVF --faiss index: inverted lists searched (faiss: 1)")
    parser.add_argument("--ef-search", type=int, help="with an HNSW --faiss index: search breadth (faiss: 16)")
    device = parser.add_mutually_exclusive_group()
    device.add_argument("--device", help="torch device, e.g. cuda or cpu")
    device.add_argument(
        "--devices",
        metavar="LIST",
        help="encode in one process per device, comma-separated: cuda:0,cuda:1 or cpu,cpu (multi-process pool)",
    )
    parser.add_argument("--dtype", choices=DTYPES, help="dtype of the backbone's weights, e.g. bfloat16 for a 7B model")
    parser.add_argument(
        "--model-kwargs",
        metavar="JSON",
        help='backbone from_pretrained arguments as a JSON object, e.g. \'{"attn_implementation": "sdpa"}\'',
    )
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


def parse_model_kwargs(text: str | None, dtype: str | None) -> dict[str, Any]:
    """``--model-kwargs`` (a JSON object) with ``--dtype`` added; a clear error for bad JSON or a conflict."""
    model_kwargs: dict[str, Any] = {}
    if text is not None:
        try:
            model_kwargs = json.loads(text)
        except json.JSONDecodeError as error:
            raise UserError(f"--model-kwargs is not valid JSON ({error}): {text!r}") from None
        if not isinstance(model_kwargs, dict):
            raise UserError(
                f'--model-kwargs must be a JSON object such as \'{{"attn_implementation": "sdpa"}}\', got {text!r}'
            )
    if dtype is not None:
        conflict = {"dtype", "torch_dtype"} & set(model_kwargs)
        if conflict:
            raise UserError(f"--dtype and --model-kwargs both set the dtype ({sorted(conflict)[0]}); give it once")
        model_kwargs["dtype"] = dtype
    return model_kwargs


def parse_devices(text: str | None) -> list[str] | None:
    """``--devices cuda:0,cuda:1`` as a list; a clear error for an empty entry or a name torch does not know."""
    if text is None:
        return None
    import torch

    devices = [name.strip() for name in text.split(",")]
    for name in devices:
        try:
            torch.device(name)
        except (RuntimeError, TypeError):
            raise UserError(f"--devices: {name!r} is not a torch device (e.g. cpu, cuda:1), in {text!r}") from None
    return devices


def _check_arguments(args: argparse.Namespace) -> None:
    """Mistakes found before the model loads (which can take minutes for a 7B model)."""
    if args.batch_size < 1:
        raise UserError(f"--batch-size must be positive, got {args.batch_size}")
    model = Path(args.model).expanduser()
    if model.exists() and not model.is_dir():
        raise UserError(f"model {model} is a file; give a model folder or a Hub id (organization/model)")
    if not model.is_dir() and (model.is_absolute() or args.model.startswith((".", "~")) or args.model.count("/") > 1):
        raise UserError(f"model folder {model} does not exist")
    if args.beir is not None:
        beir = Path(args.beir).expanduser()
        if not beir.is_dir():
            raise UserError(f"BEIR folder {beir} does not exist")
    for name in ("nprobe", "ef_search"):
        value = getattr(args, name)
        if value is not None and (args.faiss is None or value < 1):
            flag = f"--{name.replace('_', '-')}"
            raise UserError(f"{flag} must be positive, got {value}" if args.faiss else f"{flag} needs --faiss")
    if args.output is not None and Path(args.output).expanduser().is_file():
        raise UserError(f"--output {args.output} is a file, not a folder")


def _mteb_tasks(args: argparse.Namespace) -> list[Any]:
    import mteb

    try:
        if args.tasks:
            return list(mteb.get_tasks(tasks=args.tasks))
        return list(mteb.get_benchmark(args.benchmark).tasks)
    except KeyError as error:
        what = f"task(s) {args.tasks}" if args.tasks else f"benchmark {args.benchmark!r}"
        detail = str(error.args[0] if error.args else error).removeprefix("KeyError: ")
        raise UserError(f"MTEB does not know the {what}: {detail}") from None


def _faiss_backend(args: argparse.Namespace, model: Any) -> Any:
    """``--faiss`` with its search parameters (without them IVF searches one list: issue 18.1)."""
    parameters = {"nprobe": args.nprobe, "efSearch": args.ef_search}
    parameters = {name: value for name, value in parameters.items() if value is not None}
    if args.faiss is None or not parameters:
        return args.faiss
    from llara_st.evaluation import FaissSearchBackend

    return FaissSearchBackend(args.faiss, search_parameters=parameters, normalize=model.similarity_fn_name == "cosine")


def run(args: argparse.Namespace) -> int:
    import mteb  # noqa: F401  (the evaluation needs it: a missing install is reported before the model loads)

    import llara_st
    from llara_st.evaluation import BEIRFolderRetrieval, evaluate_mteb, format_scores, model_meta_for

    _check_arguments(args)
    devices = parse_devices(args.devices)
    model_kwargs = parse_model_kwargs(args.model_kwargs, args.dtype)
    if args.beir:
        # The BEIR folder is read (bad data refused, naming file and line) before the model loads, as evaluate_beir
        # does: loading a 7B model takes minutes.
        tasks = [BEIRFolderRetrieval(args.beir, [args.split], name=args.task_name)]
        tasks[0].load_data()
    else:
        tasks = _mteb_tasks(args)
    # With --devices the pool's workers place the model; it loads on the CPU, whence it is sent to them.
    device = "cpu" if devices else args.device
    model = llara_st.load(
        args.model, device=device, model_kwargs=model_kwargs or None, trust_remote_code=args.trust_remote_code
    )
    # Results are named as if the path had been given (card name, Hub id or local/{folder}); the revision label is
    # a placeholder here, so the weights are not hashed twice.
    model_name = args.model_name or model_meta_for(model, revision="-", source=args.model).name
    options = dict(
        model_name=model_name,
        revision=args.revision,
        batch_size=args.batch_size,
        show_progress_bar=not args.no_progress,
        embedding_cache=args.embedding_cache,
        faiss_index=_faiss_backend(args, model),
        devices=devices,
        save_predictions=args.save_predictions,
        overwrite=args.overwrite,
    )
    if args.beir:
        scores = evaluate_mteb(model, tasks, args.output, **options)[tasks[0].metadata.name][args.split]
        results = {args.task_name or Path(args.beir).expanduser().resolve().name: {args.split: scores}}
    else:
        results = evaluate_mteb(model, tasks, args.output, **options)
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        for task, splits in results.items():
            for split, scores in splits.items():
                print(f"{task} [{split}]  {format_scores(scores)}")
    if args.output:
        print(f"MTEB result files under {args.output}/results")
    return 0
