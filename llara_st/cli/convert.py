"""``llara-st convert SRC DST``: turn a causal LM into a LLaRA sentence-transformers folder."""

from __future__ import annotations

import argparse
from pathlib import Path

from llara_st.cli import DTYPES, UserError, add_command, check_positive
from llara_st.prompts import DEFAULT_PASSAGE_MAX_LENGTH, DEFAULT_QUERY_MAX_LENGTH


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = add_command(subparsers, "convert", run, "turn a causal LM into a LLaRA sentence-transformers folder")
    parser.add_argument("src", help="Hugging Face causal-LM folder or Hub id (organization/model)")
    parser.add_argument("dst", help="output sentence-transformers folder (absent or empty)")
    for kind, default in (("query", DEFAULT_QUERY_MAX_LENGTH), ("passage", DEFAULT_PASSAGE_MAX_LENGTH)):
        help_text = f"max tokens of a {kind} input, template included; longer ones are cut (default: {default})"
        parser.add_argument(f"--{kind}-max-length", type=int, default=default, help=help_text)
    parser.add_argument("--dtype", choices=DTYPES, help="dtype to load and save the weights in, e.g. bfloat16")
    parser.add_argument("--overwrite", action="store_true", help="replace DST if it is a LLaRA model folder already")


def check_source(src: str) -> None:
    """A folder with ``config.json``, or something shaped like a Hub id; anything else is a user error."""
    path = Path(src).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise UserError(f"source folder {path} has no config.json: it is not a Hugging Face model folder")
        return
    if path.exists():
        raise UserError(f"source {path} is a file; give a model folder or a Hub id (organization/model)")
    if path.is_absolute() or src.startswith((".", "~")) or src.count("/") != 1:
        raise UserError(f"source {src!r} is neither an existing folder nor a Hub id (organization/model)")


def check_output(dst: Path, overwrite: bool) -> None:
    """Refuse a non-empty folder unless ``--overwrite``, and even then a folder that is not a LLaRA model (a file, a
    broken link and the working directory are refused by staged_folder)."""
    from llara_st.folders import is_llara_model_folder

    if not dst.is_dir() or not any(dst.iterdir()):
        return
    if not overwrite:
        raise UserError(f"output folder {dst} is not empty; choose another folder or pass --overwrite to replace it")
    if not (dst / "modules.json").is_file():
        raise UserError(
            f"output folder {dst} is not a sentence-transformers folder (no modules.json): choose another folder"
        )
    if not is_llara_model_folder(dst):
        raise UserError(
            f"output folder {dst} holds a model llara_st did not write, which --overwrite keeps: choose another folder"
        )


def run(args: argparse.Namespace) -> int:
    from llara_st.folders import staged_folder
    from llara_st.model import convert

    check_positive(args, "query_max_length", "passage_max_length")
    check_source(args.src)
    dst = Path(args.dst).expanduser()
    check_output(dst, args.overwrite)
    # Built next to DST and moved into place at the end, so a failed conversion leaves DST as it was.
    with staged_folder(dst, "output folder") as staging:
        convert(
            args.src,
            staging,
            query_max_length=args.query_max_length,
            passage_max_length=args.passage_max_length,
            model_kwargs={"dtype": args.dtype} if args.dtype else {},
        )
    print(f"Saved LLaRA model to {dst}")
    return 0
