"""The ``llara-st`` command line: thin wrappers over the library functions the recipes use.

Each sub-command module listed in :data:`SUBCOMMAND_MODULES` defines ``add_parser(subparsers)``, which adds one or
more sub-commands and sets ``func`` (``func(args) -> int``) on each. :func:`main` gives every sub-command the common
options (``-v``, ``--debug``), sets up logging (a sub-command whose defaults hold ``progress_logs=True``, as the long
training workflows' do, also shows llara_st's own INFO logs without ``-v``), and turns user errors (a missing file, a
bad id or value, a missing optional dependency, :class:`UserError`, the library's
:class:`~llara_st.errors.LLaRAUserError`) into one line on stderr and exit code 1; ``--debug`` shows the traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import logging
import sys
import warnings
from collections.abc import Iterator

from llara_st.errors import LLaRAUserError

# Sub-command modules, in the order of ``llara-st --help``. Register a new one with one line here.
SUBCOMMAND_MODULES: list[str] = [
    "llara_st.cli.convert",
    "llara_st.cli.evaluate",
    "llara_st.cli.search",
    "llara_st.cli.train",
]

# Top-level modules of optional dependencies -> the llara-st extra that installs them.
EXTRA_OF_MODULE: dict[str, str] = {
    "mteb": "mteb",
    "faiss": "faiss",
    "langchain_core": "langchain",
    "bm25s": "bm25",
    "Stemmer": "bm25",
    "matplotlib": "reproduce",
    "gguf": "reproduce",
    "deepspeed": "deepspeed",
}

# Libraries whose INFO logs (cache notices, per-step timings) and FutureWarnings are hidden unless -v is given.
#: dtypes a model's weights can be loaded in (``--dtype`` of convert and evaluate).
DTYPES = ("auto", "float32", "float16", "bfloat16")
_CHATTY_LOGGERS = ("mteb", "faiss", "datasets", "huggingface_hub", "sentence_transformers", "transformers")


class UserError(Exception):
    """A mistake in the command line or its inputs: printed as one line, without a traceback."""


# Errors caused by the user's input or environment rather than by a bug in llara_st: the library raises
# LLaRAUserError (or a subclass: a stale run, divergence, a collapsed model, a folder it may not replace, a
# malformed config) for the user's mistakes.
_USER_ERRORS: tuple[type[BaseException], ...] = (UserError, LLaRAUserError, OSError, ValueError)


def _version_text() -> str:
    # Read from the installed distributions' metadata: importing torch only to print its version takes seconds.
    import platform
    from importlib.metadata import PackageNotFoundError, version

    from llara_st import __version__

    def installed(distribution: str) -> str:
        try:
            return version(distribution)
        except PackageNotFoundError:
            return "not installed"

    return (
        f"llara-st {__version__} (sentence-transformers {installed('sentence-transformers')}, "
        f"transformers {installed('transformers')}, torch {installed('torch')}, Python {platform.python_version()})"
    )


class _VersionAction(argparse.Action):
    """``--version``, with the versions of the libraries llara-st runs on (computed only when asked)."""

    def __init__(self, option_strings: list[str], dest: str = argparse.SUPPRESS, **kwargs: object) -> None:
        super().__init__(option_strings, dest=dest, default=argparse.SUPPRESS, nargs=0, help="print versions and exit")

    def __call__(self, parser: argparse.ArgumentParser, *args: object, **kwargs: object) -> None:
        print(_version_text())
        parser.exit()


def _add_common_options(parser: argparse.ArgumentParser, *, top_level: bool) -> None:
    # On sub-commands the defaults are suppressed so that `llara-st -v evaluate ...` is not reset by the sub-parser.
    default_verbose = 0 if top_level else argparse.SUPPRESS
    default_debug = False if top_level else argparse.SUPPRESS
    parser.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=default_verbose,
        help="more log output: -v shows INFO (mteb, faiss, ...), -vv DEBUG",
    )
    parser.add_argument(
        "--debug", action="store_true", default=default_debug, help="show the full traceback of an error"
    )


def build_parser() -> argparse.ArgumentParser:
    """The ``llara-st`` parser with every sub-command of :data:`SUBCOMMAND_MODULES`."""
    parser = argparse.ArgumentParser(prog="llara-st", description="LLaRA embedders for sentence-transformers")
    parser.add_argument("--version", action=_VersionAction)
    _add_common_options(parser, top_level=True)
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module_name in SUBCOMMAND_MODULES:
        importlib.import_module(module_name).add_parser(subparsers)
    for subparser in subparsers.choices.values():
        _add_common_options(subparser, top_level=False)
    return parser


@contextlib.contextmanager
def _logging_for(verbosity: int, progress_logs: bool = False) -> Iterator[None]:
    """WARNING by default, INFO with -v, DEBUG with -vv; restored afterwards (main may run inside Python).

    With ``progress_logs``, llara_st's own INFO logs (a workflow's stages, rows, saved folders) show by default.
    """
    level = logging.WARNING if verbosity == 0 else logging.INFO if verbosity == 1 else logging.DEBUG
    root = logging.getLogger()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    levels = dict.fromkeys(_CHATTY_LOGGERS, level)
    if progress_logs:
        levels["llara_st"] = min(level, logging.INFO)
    saved = (root.level, {name: logging.getLogger(name).level for name in levels})
    root.addHandler(handler)
    root.setLevel(level)
    for name, logger_level in levels.items():
        # Libraries that set their own level (transformers does) follow -v too.
        logging.getLogger(name).setLevel(logger_level)
    try:
        with warnings.catch_warnings():
            if verbosity == 0:
                for name in _CHATTY_LOGGERS:
                    warnings.filterwarnings("ignore", category=FutureWarning, module=name)
                    warnings.filterwarnings("ignore", category=DeprecationWarning, module=name)
            with _progress_bars(verbosity > 0):
                yield
    finally:
        root.removeHandler(handler)
        root.setLevel(saved[0])
        for name, old_level in saved[1].items():
            logging.getLogger(name).setLevel(old_level)


@contextlib.contextmanager
def _progress_bars(show_loading_bars: bool) -> Iterator[None]:
    """Hide the weight-loading and dataset-preparation bars unless -v; encoding bars are the commands' own."""
    from datasets.utils import logging as datasets_logging
    from transformers.utils import logging as transformers_logging

    saved = (transformers_logging.is_progress_bar_enabled(), datasets_logging.is_progress_bar_enabled())
    if not show_loading_bars:
        transformers_logging.disable_progress_bar()
        datasets_logging.disable_progress_bar()
    try:
        yield
    finally:
        (transformers_logging.enable_progress_bar if saved[0] else transformers_logging.disable_progress_bar)()
        (datasets_logging.enable_progress_bar if saved[1] else datasets_logging.disable_progress_bar)()


def error_message(error: BaseException) -> str | None:
    """One line for a user error, or None for an error that is a bug (and keeps its traceback)."""
    if isinstance(error, ModuleNotFoundError):
        missing = (error.name or "").split(".")[0]
        if missing not in EXTRA_OF_MODULE:
            return None
        if "pip install" in str(error):
            return _one_line(str(error))
        return f"this needs {missing}, which is not installed: pip install 'llara-st[{EXTRA_OF_MODULE[missing]}]'"
    if not isinstance(error, _USER_ERRORS):
        return None
    return _one_line(str(error) or type(error).__name__)


def _one_line(text: str) -> str:
    return " ".join(text.split())


def main(argv: list[str] | None = None) -> int:
    """Run ``llara-st`` with ``argv`` (default: the process arguments); returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    with _logging_for(args.verbose, getattr(args, "progress_logs", False)):
        try:
            return args.func(args) or 0
        except KeyboardInterrupt:
            print("llara-st: interrupted", file=sys.stderr)
            return 130
        except Exception as error:
            message = error_message(error)
            if message is None or args.debug:
                raise
            hint = "" if isinstance(error, UserError) else " (--debug shows the traceback)"
            print(f"llara-st {args.command}: error: {message}{hint}", file=sys.stderr)
            return 1


__all__ = ["SUBCOMMAND_MODULES", "UserError", "build_parser", "error_message", "main"]
