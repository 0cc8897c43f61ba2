"""``llara-st index MODEL DOCS --index DIR`` and ``llara-st search DIR --query ...``: from your own documents to
ranked answers, through :class:`llara_st.evaluation.DocumentIndex`."""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path
from typing import Any

from llara_st.cli import UserError, add_command, add_encoding_options, check_positive, faiss_search_parameters


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    index = add_command(subparsers, "index", run_index, "embed documents into a new index folder, or add the new ones")
    index.add_argument("model", help="sentence-transformers model folder or Hub id (e.g. made by llara-st convert)")
    index.add_argument("docs", nargs="+", metavar="DOCS", help='.txt folders, {"text"} .jsonl, BEIR folders, globs')
    index.add_argument("--index", required=True, metavar="DIR", help="the index folder to create or add to")
    index.add_argument("--faiss", metavar="FACTORY", help="faiss index of a new index: Flat (default), HNSW32, ...")
    add_encoding_options(index)

    search = add_command(subparsers, "search", run_search, "rank an index's documents for queries, with its model")
    search.add_argument("index", metavar="INDEX", help="index folder made by llara-st index (or by --docs)")
    queries = search.add_mutually_exclusive_group(required=True)
    queries.add_argument("--query", action="append", metavar="TEXT", help="a query (repeat for several)")
    queries.add_argument("--queries", metavar="FILE", help='a text file (a query a line) or {"text"} JSONL rows')
    search.add_argument("--top-k", type=int, default=10, help="documents per query (default: 10)")
    search.add_argument("--nprobe", type=int, help="IVF indexes: inverted lists searched (more: slower, more exact)")
    search.add_argument("--ef-search", type=int, help="HNSW indexes: search breadth (more: slower, more exact)")
    search.add_argument("--format", choices=("table", "jsonl"), default="table", help="table, or JSON lines of hits")
    search.add_argument("--model", help="the model, to build the index with --docs or if it moved since")
    search.add_argument("--docs", nargs="+", metavar="DOCS", help="first add these documents to INDEX (llara-st index)")
    search.add_argument("--faiss", metavar="FACTORY", help="with --docs: faiss index of a new INDEX (default: Flat)")
    add_encoding_options(search)


def _load_model(name_or_path: str, args: argparse.Namespace) -> Any:
    import llara_st

    model_kwargs = {"dtype": args.dtype} if args.dtype else None
    return llara_st.load(name_or_path, device=args.device, model_kwargs=model_kwargs)


def _index_documents(args: argparse.Namespace) -> Any:
    """Create the index folder ``args.index`` with the documents ``args.docs``, or add the new ones; returns it."""
    from llara_st.data import read_documents
    from llara_st.evaluation.document_index import (
        DocumentIndex,
        check_index_destination,
        is_document_index,
        model_location,
    )

    folder = Path(args.index).expanduser()
    check_index_destination(folder)  # before the model loads
    exists, model_name = is_document_index(folder), args.model
    if model_name is None:
        if not exists:
            raise UserError(f"{folder} is not an index yet: give --model to build it with")
        model_name = DocumentIndex.read_config(folder)["model"]["name_or_path"]
    documents = read_documents(args.docs)
    model = _load_model(model_name, args)
    if exists:
        index = DocumentIndex.load(folder, model)
        if args.faiss and args.faiss != index.factory_string:
            raise UserError(f"{folder} is a {index.factory_string!r} index; --faiss {args.faiss} needs a new folder")
        index.model_name_or_path = model_location(model_name)  # where the (same) model is now
    else:
        index = DocumentIndex(model, args.faiss or "Flat", model_name_or_path=model_name)
    added = index.add(documents, batch_size=args.batch_size, show_progress_bar=not args.no_progress)
    if added:
        index.save(folder)
    print(
        f"{added} new documents indexed ({len(documents) - added} already there); {len(index)} in {folder}",
        file=sys.stderr if args.command == "search" else sys.stdout,
    )
    return index


def run_index(args: argparse.Namespace) -> int:
    from llara_st.evaluation.faiss_index import _import_faiss

    check_positive(args, "batch_size")
    _import_faiss()  # a missing faiss is reported before documents are read and the model loads
    _index_documents(args)
    return 0


def run_search(args: argparse.Namespace) -> int:
    from llara_st.data import read_queries
    from llara_st.evaluation.document_index import DocumentIndex
    from llara_st.evaluation.faiss_index import _import_faiss

    check_positive(args, "batch_size", "top_k", "nprobe", "ef_search")
    _import_faiss()  # before documents are read and the model loads
    if args.queries:
        query_ids, queries = read_queries(args.queries)
    else:
        query_ids, queries = [str(number) for number in range(1, len(args.query) + 1)], args.query
    if args.docs:
        index = _index_documents(args)
    else:
        config = DocumentIndex.read_config(args.index)  # a missing or foreign folder fails before the model loads
        index = DocumentIndex.load(args.index, _load_model(args.model or config["model"]["name_or_path"], args))
    parameters = faiss_search_parameters(args)
    results = index.search(queries, args.top_k, search_parameters=parameters, batch_size=args.batch_size)
    for query_id, query, hits in zip(query_ids, queries, results, strict=True):
        if args.format == "jsonl":
            for hit in hits:
                print(json.dumps({"query_id": query_id, "query": query, **hit.to_dict()}, ensure_ascii=False))
            continue
        print(f"query {query_id}: {query}")
        width = max(len(hit.id) for hit in hits) if hits else 0
        text_width = max(20, shutil.get_terminal_size((120, 24)).columns - width - 20)
        for hit in hits:
            snippet = " ".join((f"{hit.title}: {hit.text}" if hit.title else hit.text).split())
            snippet = (snippet if len(snippet) <= 100 else snippet[:99] + "…")[:text_width]
            print(f"{hit.rank:>4}  {hit.score:7.4f}  {hit.id:<{width}}  {snippet}")
        print()
    sys.stdout.flush()
    return 0
