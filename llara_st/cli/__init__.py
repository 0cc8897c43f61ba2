"""The ``llara-st`` command line: thin wrappers over the library functions the recipes use."""

from __future__ import annotations

import argparse
import importlib
import logging

# Each sub-command module defines ``add_parser(subparsers)`` and sets ``func`` on its parser.
_SUBCOMMANDS = ["convert"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="llara-st", description="LLaRA embedders for sentence-transformers")
    subparsers = parser.add_subparsers(dest="command", required=True)
    for name in _SUBCOMMANDS:
        importlib.import_module(f"llara_st.cli.{name}").add_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    return args.func(args) or 0
