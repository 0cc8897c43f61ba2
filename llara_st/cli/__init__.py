"""The ``llara-st`` command line: thin wrappers over the library functions the recipes use."""

from __future__ import annotations

import argparse
import importlib
import logging
import pkgutil

import llara_st.cli as _cli_package


def build_parser() -> argparse.ArgumentParser:
    """Every module of ``llara_st.cli`` is a sub-command: it defines ``add_parser(subparsers)``."""
    parser = argparse.ArgumentParser(prog="llara-st", description="LLaRA embedders for sentence-transformers")
    subparsers = parser.add_subparsers(dest="command", required=True)
    for info in sorted(pkgutil.iter_modules(_cli_package.__path__), key=lambda info: info.name):
        importlib.import_module(f"llara_st.cli.{info.name}").add_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    return args.func(args) or 0
