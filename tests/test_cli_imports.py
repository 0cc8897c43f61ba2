"""Issue 18.6: ``llara-st --help`` took 8-17 s because it imported torch, transformers and sentence-transformers.

Help and version import none of the heavy libraries; the sub-commands import them when they run.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ["torch", "transformers", "sentence_transformers", "datasets", "mteb", "faiss", "numpy"]

_SCRIPT = """
import json, sys
from llara_st.cli import main
try:
    main(sys.argv[1:])
except SystemExit:
    pass
print(json.dumps(sorted(name for name in {heavy!r} if name in sys.modules)), file=sys.stderr)
"""


def _heavy_modules_after(*argv: str) -> list[str]:
    result = subprocess.run(
        [sys.executable, "-c", _SCRIPT.format(heavy=HEAVY), *argv],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stderr.strip().splitlines()[-1])


@pytest.mark.parametrize(
    "argv",
    [
        ["--help"],
        ["--version"],
        ["convert", "--help"],
        ["evaluate", "--help"],
        ["index", "--help"],
        ["search", "--help"],
    ],
)
def test_help_and_version_import_no_heavy_library(argv):
    assert _heavy_modules_after(*argv) == []


def test_every_option_has_help_text():
    """`--query-max-length` and `--batch-size` had none."""
    from llara_st.cli import build_parser

    parser = build_parser()
    subparsers = next(action for action in parser._actions if action.choices and "convert" in action.choices)
    for name, subparser in subparsers.choices.items():
        for action in subparser._actions:
            if action.option_strings:
                assert action.help, f"llara-st {name} {action.option_strings[0]} has no help text"
