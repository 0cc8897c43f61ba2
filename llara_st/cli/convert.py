from __future__ import annotations

import argparse

from llara_st.prompts import DEFAULT_PASSAGE_MAX_LENGTH, DEFAULT_QUERY_MAX_LENGTH


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "convert", help="turn a causal LM into a LLaRA sentence-transformers folder"
    )
    parser.add_argument("src", help="Hugging Face causal-LM folder or Hub id")
    parser.add_argument("dst", help="output sentence-transformers folder")
    parser.add_argument("--query-max-length", type=int, default=DEFAULT_QUERY_MAX_LENGTH)
    parser.add_argument("--passage-max-length", type=int, default=DEFAULT_PASSAGE_MAX_LENGTH)
    parser.add_argument("--dtype", default=None, help="torch dtype to load and save in, e.g. bfloat16")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from llara_st.model import convert

    model_kwargs = {"dtype": args.dtype} if args.dtype else {}
    convert(
        args.src,
        args.dst,
        query_max_length=args.query_max_length,
        passage_max_length=args.passage_max_length,
        model_kwargs=model_kwargs,
    )
    print(f"Saved LLaRA model to {args.dst}")
    return 0
