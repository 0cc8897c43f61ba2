"""``llara-st evaluate MODEL``: MTEB retrieval scores of a model on a local BEIR folder or MTEB tasks."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from llara_st.cli import UserError, add_command, add_encoding_options, check_positive, faiss_search_parameters


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = add_command(subparsers, "evaluate", run, "MTEB scores of a retriever on a BEIR folder or MTEB tasks")
    parser.add_argument("model", help="sentence-transformers model folder (or Hub id)")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--beir", metavar="DIR", help="local BEIR folder (corpus.jsonl, queries.jsonl, qrels/)")
    source.add_argument("--tasks", nargs="+", metavar="TASK", help="MTEB task names, e.g. SciFact (data from the Hub)")
    source.add_argument("--benchmark", metavar="NAME", help="an MTEB benchmark's tasks, e.g. 'MTEB(eng, v2)' (Hub)")
    parser.add_argument("--split", default="test", help="qrels split of the BEIR folder (default: test)")
    parser.add_argument("--output", metavar="OUT", help="folder for MTEB's results/{org__model}/{revision}/{task}.json")
    parser.add_argument("--model-name", help="'organization/model' in the result files (default: local/{folder})")
    parser.add_argument("--revision", help="revision label, e.g. the Hub commit sha (default: weights fingerprint)")
    parser.add_argument("--task-name", help="task name of the BEIR folder in result files (default: folder name)")
    device = parser.add_mutually_exclusive_group()
    add_encoding_options(parser, device_group=device)
    device.add_argument("--devices", metavar="LIST", help="one encoding process per device, e.g. cuda:0,cuda:1")
    parser.add_argument("--embedding-cache", metavar="DIR", help="cache corpus embeddings here (once per model)")
    parser.add_argument("--faiss", metavar="FACTORY", help="faiss index to retrieve with: Flat, HNSW32, IVF1024,SQ8...")
    parser.add_argument("--nprobe", type=int, help="with an IVF --faiss index: inverted lists searched (faiss: 1)")
    parser.add_argument("--ef-search", type=int, help="with an HNSW --faiss index: search breadth (faiss: 16)")
    parser.add_argument("--model-kwargs", metavar="JSON", help="the backbone's from_pretrained kwargs (JSON object)")
    parser.add_argument("--trust-remote-code", action="store_true", help="run models' custom module code")
    parser.add_argument("--save-predictions", action="store_true", help="also write the rankings under OUT")
    parser.add_argument("--overwrite", action="store_true", help="recompute results already present in OUT")
    parser.add_argument("--json", action="store_true", help="print all scores as JSON")


def parse_model_kwargs(text: str | None, dtype: str | None) -> dict[str, Any]:
    """``--model-kwargs`` (a JSON object) with ``--dtype`` added; a clear error for bad JSON or a conflict."""
    model_kwargs: dict[str, Any] = {}
    if text is not None:
        try:
            model_kwargs = json.loads(text)
        except json.JSONDecodeError as error:
            raise UserError(f"--model-kwargs is not valid JSON ({error}): {text!r}") from None
        if not isinstance(model_kwargs, dict):
            raise UserError(f'--model-kwargs must be a JSON object such as {{"dtype": "float16"}}, got {text!r}')
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
    check_positive(args, "batch_size")
    model = Path(args.model).expanduser()
    if model.exists() and not model.is_dir():
        raise UserError(f"model {model} is a file; give a model folder or a Hub id (organization/model)")
    if not model.is_dir() and (model.is_absolute() or args.model.startswith((".", "~")) or args.model.count("/") > 1):
        raise UserError(f"model folder {model} does not exist")
    if args.beir is not None and not Path(args.beir).expanduser().is_dir():
        raise UserError(f"BEIR folder {Path(args.beir).expanduser()} does not exist")
    if args.faiss is None and faiss_search_parameters(args):
        raise UserError(f"--{'nprobe' if args.nprobe is not None else 'ef-search'} needs --faiss")
    check_positive(args, "nprobe", "ef_search")
    if args.output is not None and Path(args.output).expanduser().is_file():
        raise UserError(f"--output {args.output} is a file, not a folder")


def run(args: argparse.Namespace) -> int:
    import mteb  # a missing install is reported before the model loads

    import llara_st
    from llara_st.evaluation import BEIRFolderRetrieval, evaluate_mteb, format_scores, model_meta_for

    _check_arguments(args)
    devices = parse_devices(args.devices)
    model_kwargs = parse_model_kwargs(args.model_kwargs, args.dtype)
    if args.beir:
        # Read (bad data refused) before the model loads, which takes minutes for a 7B model.
        tasks = [BEIRFolderRetrieval(args.beir, [args.split], name=args.task_name)]
        tasks[0].load_data()
    else:
        try:
            tasks = list(mteb.get_tasks(tasks=args.tasks) if args.tasks else mteb.get_benchmark(args.benchmark).tasks)
        except KeyError as error:
            what = f"task(s) {args.tasks}" if args.tasks else f"benchmark {args.benchmark!r}"
            detail = str(error.args[0] if error.args else error).removeprefix("KeyError: ")
            raise UserError(f"MTEB does not know the {what}: {detail}") from None
    # With --devices the pool's workers place the model; it loads on the CPU, whence it is sent to them.
    device = "cpu" if devices else args.device
    model = llara_st.load(
        args.model, device=device, model_kwargs=model_kwargs or None, trust_remote_code=args.trust_remote_code
    )
    faiss_index, parameters = args.faiss, faiss_search_parameters(args)
    if args.faiss is not None and parameters:  # without them an IVF index searches one list (issue 18.1)
        from llara_st.evaluation import FaissSearchBackend

        normalize = model.similarity_fn_name == "cosine"
        faiss_index = FaissSearchBackend(args.faiss, search_parameters=parameters, normalize=normalize)
    results = evaluate_mteb(
        model,
        tasks,
        args.output,
        # Named as if the path had been given; revision "-" so that the weights are not hashed twice.
        model_name=args.model_name or model_meta_for(model, revision="-", source=args.model).name,
        revision=args.revision,
        batch_size=args.batch_size,
        show_progress_bar=not args.no_progress,
        embedding_cache=args.embedding_cache,
        faiss_index=faiss_index,
        devices=devices,
        save_predictions=args.save_predictions,
        overwrite=args.overwrite,
    )
    if args.beir:
        scores = results[tasks[0].metadata.name][args.split]
        results = {args.task_name or Path(args.beir).expanduser().resolve().name: {args.split: scores}}
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        for task, splits in results.items():
            for split, scores in splits.items():
                print(f"{task} [{split}]  {format_scores(scores)}")
    if args.output:
        print(f"MTEB result files under {args.output}/results")
    return 0
