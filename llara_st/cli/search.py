"""``llara-st index MODEL DOCS --index DIR`` and ``llara-st search DIR --query ...``: from your own documents to
ranked answers, through :class:`llara_st.evaluation.DocumentIndex`."""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path
from typing import Any

from llara_st.cli import DTYPES, UserError

_SNIPPET_CHARACTERS = 100


def _add_model_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--batch-size", type=int, default=32, help="texts encoded at once; lower it if memory runs out (default: 32)"
    )
    parser.add_argument("--device", help="torch device, e.g. cuda or cpu (default: the best available)")
    parser.add_argument("--dtype", choices=DTYPES, help="dtype of the model's weights, e.g. bfloat16 for a 7B model")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    index = subparsers.add_parser(
        "index",
        help="embed documents into a search index folder (new, or grown with new documents)",
        description=(
            "Embed documents with MODEL and store them in the index folder --index, with the documents' texts and a "
            "record of the model. DOCS are folders of .txt files (one document per file, searched recursively), "
            'JSONL files of {"text"} rows (optional "title" and "_id"/"id"), BEIR folders (their corpus.jsonl) or '
            "glob patterns. If --index is an index already, only new documents are embedded and added."
        ),
    )
    index.add_argument("model", help="sentence-transformers model folder or Hub id (e.g. made by llara-st convert)")
    index.add_argument("docs", nargs="+", metavar="DOCS", help="folders of .txt files, .jsonl files, BEIR folders")
    index.add_argument("--index", required=True, metavar="DIR", help="the index folder to create or add to")
    index.add_argument(
        "--faiss",
        metavar="FACTORY",
        help="faiss index of a new index (factory string): Flat (exact, the default), HNSW32, IVF256,Flat, ...",
    )
    _add_model_options(index)
    index.add_argument("--no-progress", action="store_true", help="hide the encoding progress bar")
    index.set_defaults(func=run_index)

    search = subparsers.add_parser(
        "search",
        help="search an index folder made by llara-st index",
        description=(
            "Rank the documents of an index folder for each query, with the model the index was built with "
            "(another model is refused). With --docs and --model, the index is built first (or grown with the new "
            "documents), so one command goes from a folder of .txt files to ranked answers."
        ),
    )
    search.add_argument("index", metavar="INDEX", help="index folder made by llara-st index (or by --docs)")
    queries = search.add_mutually_exclusive_group(required=True)
    queries.add_argument("--query", action="append", metavar="TEXT", help="a query (repeat for several)")
    queries.add_argument(
        "--queries", metavar="FILE", help='queries: a text file (one per line) or a JSONL of {"text"} rows'
    )
    search.add_argument("--top-k", type=int, default=10, help="documents per query (default: 10)")
    search.add_argument("--nprobe", type=int, help="IVF indexes: inverted lists searched (more: slower, more exact)")
    search.add_argument("--ef-search", type=int, help="HNSW indexes: search breadth (more: slower, more exact)")
    search.add_argument(
        "--format",
        choices=("table", "jsonl"),
        default="table",
        help="table (default) or JSON lines, one hit per line",
    )
    search.add_argument(
        "--model",
        help="the model folder or Hub id: to build the index with --docs, or if it moved since the index was built",
    )
    search.add_argument(
        "--docs",
        nargs="+",
        metavar="DOCS",
        help="first index these documents into INDEX (as llara-st index does: created, or only new documents added)",
    )
    search.add_argument("--faiss", metavar="FACTORY", help="with --docs: faiss index of a new INDEX (default: Flat)")
    _add_model_options(search)
    search.add_argument("--no-progress", action="store_true", help="hide the encoding progress bar")
    search.set_defaults(func=run_search)


def _check_positive(args: argparse.Namespace, *names: str) -> None:
    for name in names:
        value = getattr(args, name, None)
        if value is not None and value < 1:
            raise UserError(f"--{name.replace('_', '-')} must be positive, got {value}")


def _require_faiss() -> None:
    """A missing faiss is reported before documents are read and the model loads."""
    from llara_st.evaluation.faiss_index import _import_faiss

    _import_faiss()


def _load_model(name_or_path: str, args: argparse.Namespace) -> Any:
    import llara_st

    model_kwargs = {"dtype": args.dtype} if args.dtype else None
    return llara_st.load(name_or_path, device=args.device, model_kwargs=model_kwargs)


def _index_documents(model_name: str | None, docs: list[str], args: argparse.Namespace, faiss: str | None) -> Any:
    """Create the index folder ``args.index`` or add the new documents of ``docs`` to it; returns the index."""
    from llara_st.data import read_documents
    from llara_st.evaluation.document_index import (
        DocumentIndex,
        check_index_destination,
        is_document_index,
        model_location,
    )

    _require_faiss()
    folder = Path(args.index).expanduser()
    check_index_destination(folder)  # before the model loads
    exists = is_document_index(folder)
    if model_name is None:
        if not exists:
            raise UserError(f"{folder} is not an index yet: give --model to build it with")
        model_name = DocumentIndex.read_config(folder)["model"]["name_or_path"]
    documents = read_documents(docs)
    model = _load_model(model_name, args)
    if exists:
        index = DocumentIndex.load(folder, model)
        if faiss and faiss != index.factory_string:
            raise UserError(f"{folder} is a {index.factory_string!r} index; --faiss {faiss} needs a new index folder")
        index.model_name_or_path = model_location(model_name)  # where the (same) model is now
    else:
        index = DocumentIndex(model, faiss or "Flat", model_name_or_path=model_name)
    added = index.add(documents, batch_size=args.batch_size, show_progress_bar=not args.no_progress)
    if added:
        index.save(folder)
    print(
        f"{added} new documents indexed ({len(documents) - added} already there); {len(index)} in {folder}",
        file=sys.stderr if args.command == "search" else sys.stdout,
    )
    return index


def run_index(args: argparse.Namespace) -> int:
    _check_positive(args, "batch_size")
    _index_documents(args.model, args.docs, args, args.faiss)
    return 0


def _search_parameters(args: argparse.Namespace) -> dict[str, int]:
    parameters = {}
    if args.nprobe is not None:
        parameters["nprobe"] = args.nprobe
    if args.ef_search is not None:
        parameters["efSearch"] = args.ef_search
    return parameters


def _snippet(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _SNIPPET_CHARACTERS else text[: _SNIPPET_CHARACTERS - 1] + "…"


def run_search(args: argparse.Namespace) -> int:
    from llara_st.data import read_queries
    from llara_st.evaluation.document_index import DocumentIndex

    _check_positive(args, "batch_size", "top_k", "nprobe", "ef_search")
    _require_faiss()
    if args.queries:
        query_ids, queries = read_queries(args.queries)
    else:
        query_ids, queries = [str(number) for number in range(1, len(args.query) + 1)], args.query
    if args.docs:
        index = _index_documents(args.model, args.docs, args, args.faiss)
    else:
        config = DocumentIndex.read_config(args.index)  # a missing or foreign folder fails before the model loads
        index = DocumentIndex.load(args.index, _load_model(args.model or config["model"]["name_or_path"], args))
    results = index.search(queries, args.top_k, search_parameters=_search_parameters(args), batch_size=args.batch_size)
    for query_id, query, hits in zip(query_ids, queries, results, strict=True):
        if args.format == "jsonl":
            for hit in hits:
                print(json.dumps({"query_id": query_id, "query": query, **hit.to_dict()}, ensure_ascii=False))
            continue
        print(f"query {query_id}: {query}")
        width = max(len(hit.id) for hit in hits) if hits else 0
        text_width = max(20, shutil.get_terminal_size((120, 24)).columns - width - 20)
        for hit in hits:
            snippet = _snippet(f"{hit.title}: {hit.text}" if hit.title else hit.text)[:text_width]
            print(f"{hit.rank:>4}  {hit.score:7.4f}  {hit.id:<{width}}  {snippet}")
        print()
    sys.stdout.flush()
    return 0
