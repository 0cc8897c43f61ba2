"""The ``llara-st`` command line: thin wrappers over the library functions the recipes use. Each module of
:data:`SUBCOMMAND_MODULES` defines ``add_parser(subparsers)``, adding sub-commands (:func:`add_command`) that
:func:`main` runs; a user error (:func:`error_message`) is one line on stderr and exit code 1."""

from __future__ import annotations

import argparse
import contextlib
import importlib
import logging
import sys
import warnings
from collections.abc import Callable, Iterator
from typing import Any

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

#: dtypes a model's weights can be loaded in (``--dtype``).
DTYPES = ("auto", "float32", "float16", "bfloat16")
# Libraries whose INFO logs (cache notices, per-step timings) and FutureWarnings are hidden unless -v is given.
_CHATTY_LOGGERS = ("mteb", "faiss", "datasets", "huggingface_hub", "sentence_transformers", "transformers")


class UserError(Exception):
    """A mistake in the command line or its inputs: printed as one line, without a traceback."""


# Errors caused by the user's input or environment rather than by a bug (the library raises LLaRAUserError or a
# subclass for the user's mistakes: a stale run, divergence, a folder it may not replace, a malformed config).
_USER_ERRORS: tuple[type[BaseException], ...] = (UserError, LLaRAUserError, OSError, ValueError)


def add_command(
    subparsers: argparse._SubParsersAction, name: str, func: Callable[..., int], help_text: str, **defaults: Any
) -> argparse.ArgumentParser:
    """Sub-command ``name`` running ``func(args) -> int``; ``progress_logs=True`` in ``defaults`` also shows
    llara_st's INFO logs without ``-v``."""
    parser = subparsers.add_parser(name, help=help_text, description=help_text)
    parser.set_defaults(func=func, **defaults)
    return parser


def add_encoding_options(
    parser: argparse.ArgumentParser, device_group: argparse._ActionsContainer | None = None
) -> None:
    """``--batch-size``, ``--device`` (in ``device_group`` if given), ``--dtype`` and ``--no-progress``."""
    parser.add_argument("--batch-size", type=int, default=32, help="texts encoded at once (default: 32)")
    (device_group or parser).add_argument("--device", help="torch device, e.g. cuda or cpu (default: the best one)")
    parser.add_argument("--dtype", choices=DTYPES, help="dtype of the model's weights, e.g. bfloat16 for a 7B model")
    parser.add_argument("--no-progress", action="store_true", help="hide the encoding progress bars")


def check_positive(args: argparse.Namespace, *names: str) -> None:
    """Refuse an option of ``names`` given below 1, e.g. ``--batch-size must be positive, got 0``."""
    for name in names:
        value = getattr(args, name, None)
        if value is not None and value < 1:
            raise UserError(f"--{name.replace('_', '-')} must be positive, got {value}")


def faiss_search_parameters(args: argparse.Namespace) -> dict[str, int]:
    """faiss's names for the ``--nprobe`` and ``--ef-search`` that were given."""
    parameters = {"nprobe": args.nprobe, "efSearch": args.ef_search}
    return {name: value for name, value in parameters.items() if value is not None}


class _VersionAction(argparse.Action):
    """``--version`` with the versions of the libraries llara-st runs on (computed only when asked)."""

    def __call__(self, parser: argparse.ArgumentParser, *args: object, **kwargs: object) -> None:
        # From the installed distributions' metadata: importing torch only to print its version takes seconds.
        import platform
        from importlib.metadata import PackageNotFoundError, version

        from llara_st import __version__

        def installed(distribution: str) -> str:
            try:
                return version(distribution)
            except PackageNotFoundError:
                return "not installed"

        print(
            f"llara-st {__version__} (sentence-transformers {installed('sentence-transformers')}, "
            f"transformers {installed('transformers')}, torch {installed('torch')}, Python {platform.python_version()})"
        )
        parser.exit()


def _add_common_options(parser: argparse.ArgumentParser, *, top_level: bool) -> None:
    # On sub-commands the defaults are suppressed so that `llara-st -v evaluate ...` is not reset by the sub-parser.
    verbose, debug = (0, False) if top_level else (argparse.SUPPRESS, argparse.SUPPRESS)
    parser.add_argument("-v", "--verbose", action="count", default=verbose, help="-v: INFO logs, -vv: DEBUG logs")
    parser.add_argument("--debug", action="store_true", default=debug, help="show the full traceback of an error")


def build_parser() -> argparse.ArgumentParser:
    """The ``llara-st`` parser with every sub-command of :data:`SUBCOMMAND_MODULES`."""
    parser = argparse.ArgumentParser(prog="llara-st", description="LLaRA embedders for sentence-transformers")
    parser.add_argument("--version", action=_VersionAction, nargs=0, default=argparse.SUPPRESS, help="print versions")
    _add_common_options(parser, top_level=True)
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module_name in SUBCOMMAND_MODULES:
        importlib.import_module(module_name).add_parser(subparsers)
    for subparser in subparsers.choices.values():
        _add_common_options(subparser, top_level=False)
    return parser


@contextlib.contextmanager
def _logging_for(verbosity: int, progress_logs: bool = False) -> Iterator[None]:
    """WARNING by default, INFO with -v, DEBUG with -vv, llara_st's INFO with ``progress_logs``; restored after."""
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
    """One line for a user error (a missing file, a bad value, a missing extra, :class:`UserError`,
    :class:`~llara_st.errors.LLaRAUserError`), or None for an error that is a bug (and keeps its traceback)."""
    if isinstance(error, ModuleNotFoundError):
        missing = (error.name or "").split(".")[0]
        if missing not in EXTRA_OF_MODULE:
            return None
        if "pip install" not in str(error):
            return f"this needs {missing}, which is not installed: pip install 'llara-st[{EXTRA_OF_MODULE[missing]}]'"
    elif not isinstance(error, _USER_ERRORS):
        return None
    return " ".join((str(error) or type(error).__name__).split())


def main(argv: list[str] | None = None) -> int:
    """Run ``llara-st`` with ``argv`` (default: the process arguments); returns the exit code."""
    args = build_parser().parse_args(argv)
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
