"""Training settings: the arguments both workflows extend (:class:`LLaRATrainingArguments`), parsed by
``HfArgumentParser`` from a file, a dict or a command line, each value converted to its field's type first."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml
from sentence_transformers import SentenceTransformerTrainingArguments
from transformers import HfArgumentParser
from transformers.hf_argparser import string_to_bool

from llara_st.errors import LLaRAUserError
from llara_st.training.precision import autocast_available

logger = logging.getLogger(__name__)

#: Settings renamed when both workflows took one set of names (old: new): an old name is refused naming the new one.
RENAMED_SETTINGS = {
    "use_lora": "lora",
    "lora_train_prompt_tokens": "train_prompt_tokens",
    "merge_lora": "lora_save (merge_lora: true is lora_save: merged, false is lora_save: adapter)",
    "max_train_rows": "max_rows",
}

#: Weight dtypes a training run may load its backbone in (``model_dtype``).
MODEL_DTYPES = ("float32", "bfloat16", "float16")

#: peft's every linear layer but the output head: the seven projections of a Llama block (the reference's targets).
ALL_LINEAR = "all-linear"
LORA_SAVE_CHOICES = ("merged", "adapter", "both")

#: The field types whose values are converted; other fields get their value as given, for their dataclass to check.
_SCALARS = (bool, int, float, str)


@dataclass
class LLaRATrainingArguments(SentenceTransformerTrainingArguments):
    """The trainer's arguments with what both LLaRA workflows (:class:`~llara_st.training.AdaptationArguments`,
    :class:`~llara_st.training.FinetuneArguments`) share under one set of names: the model, its weight dtype and
    attention kernel, the LoRA block (``lora_*``, ``train_prompt_tokens``), and the device and precision settled once
    for this machine. Mixed precision the machine cannot run falls back to float32 with a warning; with no
    accelerator (CUDA, MPS, XPU, ...) the CPU is made the device, so that bf16 autocast runs there.

    Example::

        >>> from llara_st.training.arguments import LLaRATrainingArguments
        >>> args = LLaRATrainingArguments(output_dir="out", model_name_or_path="HuggingFaceTB/SmolLM2-135M", lora=True)
        >>> args.lora_target_modules, args.ddp_find_unused_parameters
        (['all-linear'], False)
        >>> LLaRATrainingArguments(output_dir="out", model_name_or_path="m", lora_save="adapters")
        Traceback (most recent call last):
            ...
        ValueError: lora_save must be one of ('merged', 'adapter', 'both'), got 'adapters'
    """

    model_name_or_path: str | None = field(default=None, metadata={"help": "A LLaRA folder or a causal LM to convert"})
    model_dtype: str | None = field(default=None, metadata={"help": "float32, float16 or bfloat16 weights"})
    attn_implementation: str | None = field(default=None, metadata={"help": "sdpa, eager, flash_attention_2, ..."})
    overwrite_output_dir: bool = field(default=False, metadata={"help": "Replace another run's work in output_dir"})
    lora: bool = field(default=False, metadata={"help": "Train a LoRA adapter instead of all weights"})
    lora_r: int = field(default=64, metadata={"help": "LoRA rank"})
    lora_alpha: int = field(default=16, metadata={"help": "LoRA alpha"})
    lora_dropout: float = field(default=0.1, metadata={"help": "LoRA dropout"})
    lora_target_modules: list[str] = field(
        default_factory=lambda: [ALL_LINEAR], metadata={"help": "[all-linear] (linear layers but the head) or names"}
    )
    train_prompt_tokens: bool = field(default=True, metadata={"help": "Train the 16 <sK> embedding rows too"})
    lora_save: str = field(default="merged", metadata={"help": "merged, adapter (alone) or both (+ *-adapter)"})

    def __post_init__(self) -> None:
        if self.model_name_or_path is None:
            raise ValueError("model_name_or_path is required: a LLaRA folder or a causal LM to convert")
        check_choices(self, {"model_dtype": (None, *MODEL_DTYPES), "lora_save": LORA_SAVE_CHOICES})
        if self.lora_r < 1:
            raise ValueError(f"LoRA rank lora_r must be at least 1, got {self.lora_r}")
        for precision in ("fp16", "bf16"):
            if getattr(self, precision) and not autocast_available(precision):
                logger.warning("%s needs a CUDA device that supports it; training in float32", precision)
                setattr(self, precision, False)
        if self.fp16 and self.model_dtype == "float16" and not self.lora:
            raise ValueError(
                "fp16 mixed precision keeps float32 master weights: full fine-tuning cannot train float16 weights "
                "(use model_dtype float32, or lora: true, whose adapter weights stay float32)"
            )
        if not torch.accelerator.is_available():  # what accelerate picks the device by (CUDA, MPS, XPU, ...)
            self.use_cpu = True  # transformers runs bf16 autocast on the CPU only when told the CPU is the device
        # Every trainable parameter gets a gradient at every step of both workflows; DDP's search for unused ones
        # would cost a graph walk per step and flag the LM head, which the EBAE/EBAR loss applies outside the forward.
        if self.ddp_find_unused_parameters is None:
            self.ddp_find_unused_parameters = False
        super().__post_init__()


def read_config_file(path: str | os.PathLike) -> dict[str, Any]:
    """The mapping in a YAML or JSON config file; an error names the file if it is missing or not a mapping."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Config file {path} does not exist")
    text = path.read_text(encoding="utf8")
    try:
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except json.JSONDecodeError as error:
        raise LLaRAUserError(
            f"Config file {path} is not valid JSON (line {error.lineno}, column {error.colno}): {error.msg}"
        ) from None
    except yaml.YAMLError as error:
        # PyYAML counts lines from 0 in its marks: named here from 1, as editors and the JSON error count them.
        mark = getattr(error, "problem_mark", None) or getattr(error, "context_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        problem = getattr(error, "problem", None) or str(error)
        hint = "; indent with spaces (YAML forbids tabs)" if "'\\t'" in problem else ""
        raise LLaRAUserError(f"Config file {path} is not valid YAML{where}: {problem}{hint}") from None
    if not isinstance(data, dict):
        raise LLaRAUserError(f"Config file {path} must hold a mapping of settings, got {type(data).__name__}")
    return data


def check_choices(settings: Any, choices: Mapping[str, Sequence[Any]]) -> None:
    """Refuse a setting whose value is not one of its ``choices``: the error names the setting, value and choices."""
    for name, allowed in choices.items():
        if getattr(settings, name) not in allowed:
            raise ValueError(f"{name} must be one of {tuple(allowed)}, got {getattr(settings, name)!r}")


def check_local_model_path(name_or_path: str, setting: str = "model_name_or_path") -> None:
    """Refuse a model setting that names a missing local folder before anything loads (``from_pretrained`` would take
    it for a Hub id). A name is local if it starts with ``./``, ``../``, ``/`` or ``~`` or its parent folder exists;
    a plain ``owner/name`` whose ``owner`` is no folder here stays a Hub id.

    Example::

        >>> from llara_st.training.arguments import check_local_model_path
        >>> check_local_model_path("meta-llama/Llama-2-7b-hf")  # a Hub id: not checked
        >>> check_local_model_path("./outputs/never-written/final")
        Traceback (most recent call last):
            ...
        FileNotFoundError: model_name_or_path ./outputs/never-written/final is a local path that does not exist ...
    """
    text = str(name_or_path)
    path = Path(text).expanduser()
    looks_local = text.startswith(("./", "../", "/", "~", ".\\", "..\\")) or (
        path.parent != Path(".") and path.parent.is_dir()
    )
    if looks_local and not path.exists():
        raise FileNotFoundError(
            f"{setting} {text} is a local path that does not exist (resolved: {path.resolve()}); it is not looked "
            "up on the Hub. Run the stage that writes it first (e.g. the adaptation recipe), or fix the path."
        )


def _simple_type(hint: Any) -> tuple[type, bool, bool] | None:
    """``(scalar, is_list, allows_none)`` for ``T``, ``T | None``, ``list[T]`` or ``list[T] | None`` with ``T`` one of
    :data:`_SCALARS`; None for any other type."""
    allows_none = False
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        members = [member for member in typing.get_args(hint) if member is not type(None)]
        if len(members) != 1:
            return None
        hint, allows_none = members[0], True
    if typing.get_origin(hint) is list:
        (item,) = typing.get_args(hint) or (None,)
        return (item, True, allows_none) if item in _SCALARS else None
    return (hint, False, allows_none) if hint in _SCALARS else None


def _convert(key: str, value: Any, scalar: type) -> Any:
    """``value`` as ``scalar``: strings through the argument parser's own conversions (``"1e-4"`` → 1e-4,
    ``"false"`` → False), numbers where the type allows them; anything else is a ``ValueError`` naming ``key``."""
    if scalar is str:
        if isinstance(value, str | int | float):  # a bool too: YAML reads `bf16: true` for a "true/false/auto" field
            return str(value) if not isinstance(value, str) else value
    elif scalar is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str):
            with contextlib.suppress(Exception):
                return string_to_bool(value)
    elif not isinstance(value, bool):  # int or float; True is an int to Python, never to a config
        if isinstance(value, str):
            with contextlib.suppress(ValueError):
                return scalar(value)
        elif scalar is float and isinstance(value, int | float):
            return value  # an int stands for a float as it is (warmup_steps: 100 stays a step count)
        elif scalar is int and isinstance(value, int | float) and float(value).is_integer():
            return int(value)
    raise ValueError(f"{key} must be {scalar.__name__}, got {value!r}")


def _refuse_unknown(dataclass_types: Sequence[type], unknown: list[str]) -> None:
    """An error naming the settings that are no fields of ``dataclass_types``, and the new name of a renamed one."""
    if unknown:
        names = ", ".join(dtype.__name__ for dtype in dataclass_types)
        renamed = "; ".join(f"{old} is now {RENAMED_SETTINGS[old]}" for old in unknown if old in RENAMED_SETTINGS)
        raise ValueError(
            f"Unknown settings {unknown}: they are no fields of {names} (a typo, or another stage's key?)"
            + (f"; renamed: {renamed}" if renamed else "")
        )


def typed_settings(dataclass_types: Sequence[type], settings: Mapping[str, Any]) -> dict[str, Any]:
    """``settings`` with every key checked (a key of no dataclass is an error naming it) and every value of a bool,
    int, float, str or list field converted as the command line would (YAML 1.1 reads ``1e-4`` as a string;
    ``"false"`` is False), or refused naming the key."""
    fields = {}
    for dtype in dataclass_types:
        hints = typing.get_type_hints(dtype)
        fields |= {field.name: hints[field.name] for field in dataclasses.fields(dtype) if field.init}
    _refuse_unknown(dataclass_types, sorted(set(settings) - set(fields)))
    typed = {}
    for key, value in settings.items():
        simple = _simple_type(fields[key])
        if simple is None:
            typed[key] = value
            continue
        scalar, is_list, allows_none = simple
        if value is None:
            if not allows_none:
                raise ValueError(f"{key} must be {'a list' if is_list else scalar.__name__}, got null")
            typed[key] = None
        elif is_list:
            if not isinstance(value, list | tuple):
                raise ValueError(f"{key} must be a list of {scalar.__name__}, got {value!r}")
            typed[key] = [_convert(f"{key}[{index}]", item, scalar) for index, item in enumerate(value)]
        else:
            typed[key] = _convert(key, value, scalar)
    return typed


def parse_arguments(
    dataclass_types: Sequence[type], source: str | os.PathLike | Mapping[str, Any] | Sequence[str]
) -> tuple[Any, ...]:
    """One instance of each dataclass from a YAML/JSON file, a dict, or command-line arguments; an unknown key or a
    value of the wrong type (:func:`typed_settings`) is an error naming the key, before any dataclass checks values.

    Args:
        source: A ``.yaml``/``.yml``/``.json`` path, a mapping of settings, or a list of ``--key value`` arguments.

    Example::

        >>> from sentence_transformers import SentenceTransformerTrainingArguments
        >>> from llara_st.training.arguments import parse_arguments
        >>> (args,) = parse_arguments([SentenceTransformerTrainingArguments], {"output_dir": "out", "seed": "3"})
        >>> args.seed
        3
        >>> parse_arguments([SentenceTransformerTrainingArguments], {"output_dir": "out", "sede": 3})
        Traceback (most recent call last):
            ...
        ValueError: Unknown settings ['sede']: they are no fields of SentenceTransformerTrainingArguments (...)
    """
    parser = HfArgumentParser(list(dataclass_types))
    if isinstance(source, str | os.PathLike) and str(source).endswith((".yaml", ".yml", ".json")):
        source = read_config_file(source)
    elif isinstance(source, str | os.PathLike):
        source = [str(source)]
    if isinstance(source, Mapping):
        return parser.parse_dict(typed_settings(dataclass_types, source), allow_extra_keys=False)
    argv = [str(argument) for argument in source]
    # argparse would name an old --use_lora only as an unused argument: named with its new name, as in a file.
    options = {argument[2:].split("=", 1)[0] for argument in argv if argument.startswith("--")}
    fields = {field.name for dtype in dataclass_types for field in dataclasses.fields(dtype)}
    _refuse_unknown(dataclass_types, sorted(options & set(RENAMED_SETTINGS) - fields))
    return parser.parse_args_into_dataclasses(argv)
