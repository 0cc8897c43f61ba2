"""Reading training settings: dataclasses parsed by ``HfArgumentParser`` from a file, a dict or a command line."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from transformers import HfArgumentParser


def read_config_file(path: str | os.PathLike) -> dict[str, Any]:
    """The mapping in a YAML or JSON config file; an error names the file if it is missing or not a mapping."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Config file {path} does not exist")
    text = path.read_text(encoding="utf8")
    data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    if not isinstance(data, dict):
        raise ValueError(f"Config file {path} must hold a mapping of settings, got {type(data).__name__}")
    return data


def parse_arguments(
    dataclass_types: Sequence[type], source: str | os.PathLike | Mapping[str, Any] | Sequence[str]
) -> tuple[Any, ...]:
    """One instance of each dataclass from a YAML/JSON file, a dict, or command-line arguments.

    Every key must belong to one of the dataclasses: an unknown key (a typo, a setting of another stage) is an
    error that names it, never silently ignored.

    Args:
        dataclass_types: The argument dataclasses, e.g. ``(AdaptationArguments, SentenceTransformerTrainingArguments)``.
        source: A ``.yaml``/``.yml``/``.json`` path, a mapping of settings, or a list of ``--key value`` arguments.

    Example::

        >>> from sentence_transformers import SentenceTransformerTrainingArguments
        >>> from llara_st.training.arguments import parse_arguments
        >>> (args,) = parse_arguments([SentenceTransformerTrainingArguments], {"output_dir": "out", "seed": 3})
        >>> args.seed
        3
        >>> parse_arguments([SentenceTransformerTrainingArguments], {"output_dir": "out", "sede": 3})
        Traceback (most recent call last):
            ...
        ValueError: Some keys are not used by the HfArgumentParser: ['sede'] (settings of ...)
    """
    parser = HfArgumentParser(list(dataclass_types))
    if isinstance(source, str | os.PathLike) and str(source).endswith((".yaml", ".yml", ".json")):
        source = read_config_file(source)
    elif isinstance(source, str | os.PathLike):
        source = [str(source)]
    if isinstance(source, Mapping):
        try:
            return parser.parse_dict(dict(source), allow_extra_keys=False)
        except ValueError as error:
            names = ", ".join(t.__name__ for t in dataclass_types)
            raise ValueError(f"{error} (settings of {names})") from None
    return parser.parse_args_into_dataclasses(list(source))
