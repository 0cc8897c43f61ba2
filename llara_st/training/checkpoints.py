"""Which checkpoint a run may resume from: a run records its settings (:class:`RunFingerprint`) in ``output_dir``
and :func:`resolve_checkpoint` resumes only a run with the same ones (docs/training_guards.md)."""

from __future__ import annotations

import dataclasses
import enum
import json
import logging
import os
import re
import shutil
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from accelerate import PartialState
from safetensors import safe_open
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, sort_checkpoints

from llara_st.errors import LLaRAUserError
from llara_st.folders import FolderNotOursError, content_digest, made_by_llara

logger = logging.getLogger(__name__)

RUN_RECORD_NAME = "llara_run.json"  # also llara_st.folders.RUN_RECORD_NAME: a folder it marks as llara_st's
INCOMPLETE_SUFFIX = ".incomplete"
#: The one ``resume_from_checkpoint`` value that asks for the newest complete checkpoint of ``output_dir``.
LATEST = "latest"
# The settings that change what a run trains, recorded and compared: an allow-list, whose choices (e.g. max_steps
# left out, so that raising it on resume extends a run) docs/training_guards.md explains.
RESULT_SETTINGS: frozenset[str] = frozenset(
    {
        # optimiser, schedule, regularisation
        "learning_rate", "learning_rate_mapping", "lr_scheduler_type", "lr_scheduler_kwargs", "warmup_steps",
        "warmup_ratio", "optim", "optim_args", "optim_target_modules", "weight_decay", "adam_beta1", "adam_beta2",
        "adam_epsilon", "max_grad_norm", "label_smoothing_factor", "neftune_noise_alpha",
        # batches and the order of the data (world_size: processes × per-device batch × accumulation is the step)
        "per_device_train_batch_size", "gradient_accumulation_steps", "world_size", "auto_find_batch_size",
        "average_tokens_across_devices", "dataloader_drop_last", "train_sampling_strategy", "batch_sampler",
        "multi_dataset_batch_sampler", "remove_unused_columns", "ignore_data_skip",
        # seeds
        "seed", "data_seed", "full_determinism",
        # precision and kernels
        "bf16", "fp16", "tf32", "torch_compile", "torch_compile_backend", "torch_compile_mode", "use_liger_kernel",
        "liger_kernel_config", "model_dtype", "attn_implementation",
        # which weights end the run
        "load_best_model_at_end", "metric_for_best_model", "greater_is_better",
        # the model and how texts reach it
        "model_name_or_path", "prompts", "router_mapping", "query_max_length", "passage_max_length",
        # adaptation data and loss (EBAE/EBAR)
        "wikitext_paths", "beir_corpus_paths", "llara_jsonl_paths", "text_paths", "max_rows", "eval_rows",
        "chunk_unit", "chunk_size", "shuffle", "cutoff_length", "lm_weight", "remove_stop_words",
        # fine-tuning data, mining and loss (InfoNCE)
        "train_data", "train_split", "group_size", "positives", "mining_retriever",
        "mining_range_min", "mining_range_max", "mining_relative_margin", "mining_max_score", "mined_negatives",
        "temperature", "cached_loss", "cached_mini_batch_size", "gather_across_devices",
        # LoRA
        "lora", "lora_r", "lora_alpha", "lora_dropout", "lora_target_modules", "train_prompt_tokens",
    }
)  # fmt: skip
_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")


class StaleRunError(LLaRAUserError, RuntimeError):
    """``output_dir`` holds a run whose settings differ from this one's (or cannot be told)."""


class IncompleteCheckpointError(LLaRAUserError, RuntimeError):
    """A checkpoint asked for by path lacks its trainer state, weights or optimizer state."""


def path_identity(path: str | os.PathLike) -> str:
    """A content digest of a file with its size (over 64 MiB by 16 samples), or of a folder's files with their names;
    a missing path (a Hub id) by its name."""
    path = Path(path)
    if not path.exists():
        return content_digest(f"name\0{os.fspath(path)}".encode())
    parts = [path] if path.is_dir() else [str(path.stat().st_size).encode(), path]
    return content_digest(parts, sample_above=64 * 2**20)


def dataset_identity(dataset: Any) -> str:
    """A content digest of a ``datasets.Dataset``: its columns and every row, in order."""
    import pyarrow as pa

    def chunks():  # Arrow IPC streams of 10,000 rows: the dataset is never held whole
        arrow = dataset.with_format("arrow")
        for start in range(0, len(dataset), 10_000):
            sink = pa.BufferOutputStream()
            batch = arrow[start : start + 10_000]
            with pa.ipc.new_stream(sink, batch.schema) as writer:
                writer.write_table(batch)
            yield sink.getvalue().to_pybytes()

    return f"{len(dataset)} rows {dataset.column_names} sha256:{content_digest(chunks())}"


def _canonical(value: Any) -> Any:
    """A JSON value standing for ``value``: paths that exist carry their content identity; functions their
    qualified name; objects their repr without memory addresses (which change from run to run)."""
    from datasets import Dataset

    if isinstance(value, Dataset):
        return {"dataset": dataset_identity(value)}
    if isinstance(value, enum.Enum):
        return _canonical(value.value)
    if isinstance(value, bool | int | float) or value is None:
        return value
    if isinstance(value, str | os.PathLike):
        text = os.fspath(value)
        if text and len(text) < 4096 and Path(text).exists():
            return {"path": str(Path(text).resolve()), "content": path_identity(text)}
        return text
    if isinstance(value, Mapping):
        return {str(key): _canonical(item) for key, item in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, list | tuple | set | frozenset):
        items = [_canonical(item) for item in value]
        return sorted(items, key=json.dumps) if isinstance(value, set | frozenset) else items
    if callable(value) and hasattr(value, "__qualname__"):
        return f"{getattr(value, '__module__', '?')}.{value.__qualname__}"
    return _ADDRESS.sub("", repr(value))


@dataclasses.dataclass(frozen=True)
class RunFingerprint:
    """The settings that determine a training run's result, ``{name: canonical JSON value}`` (build it with
    :meth:`from_configs`): of a dataclass the fields named in :data:`RESULT_SETTINGS` (with ``world_size``), of a
    mapping every entry. A string naming an existing file or folder counts with its content (:func:`path_identity`),
    a ``datasets.Dataset`` with its rows.

    Example::

        >>> from sentence_transformers import SentenceTransformerTrainingArguments as Args
        >>> from llara_st.training.checkpoints import RunFingerprint
        >>> first = RunFingerprint.from_configs(Args("a", learning_rate=1e-5), {"model": llara_path})
        >>> second = RunFingerprint.from_configs(Args("b", learning_rate=2e-5, logging_steps=5), {"model": llara_path})
        >>> second.differences(first)  # output_dir and logging_steps do not change the result
        ['learning_rate: 1e-05 → 2e-05']
    """

    settings: dict[str, Any]

    @classmethod
    def from_configs(cls, *configs: Any, ignore: Iterable[str] = ()) -> RunFingerprint:
        """The fingerprint of dataclasses (recipe configs, ``TrainingArguments``) and mappings of settings, a later
        one's value winning on a shared name; ``ignore`` names settings not to count."""
        ignored, settings = set(ignore), {}
        for config in configs:
            if dataclasses.is_dataclass(config) and not isinstance(config, type):
                config = {name: getattr(config, name) for name in sorted(RESULT_SETTINGS) if hasattr(config, name)}
            elif not isinstance(config, Mapping):
                raise TypeError(f"expected a dataclass or a mapping of settings, got {type(config).__name__}")
            settings |= {name: _canonical(value) for name, value in config.items() if name not in ignored}
        return cls(dict(sorted(settings.items())))

    @property
    def digest(self) -> str:
        """sha256 of the settings."""
        return content_digest(json.dumps(self.settings, sort_keys=True).encode())

    def differences(self, recorded: RunFingerprint) -> list[str]:
        """``"name: recorded value → this value"`` for each setting both hold with different values (a setting
        known to one side only, e.g. a field added by a library upgrade, is not a difference)."""
        return [
            f"{name}: {_short(recorded.settings[name])} → {_short(value)}"
            for name, value in self.settings.items()
            if name in recorded.settings and recorded.settings[name] != value
        ]

    def matches(self, recorded: RunFingerprint | None) -> bool:
        """Whether ``recorded`` is a run with these settings (no :meth:`differences`)."""
        return recorded is not None and not self.differences(recorded)

    def save(self, output_dir: str | os.PathLike) -> Path:
        """Write the record ``output_dir/llara_run.json`` (atomically: a killed run never leaves half a file)."""
        path = Path(output_dir) / RUN_RECORD_NAME
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.name}.{os.getpid()}")
        partial.write_text(json.dumps({"digest": self.digest, "settings": self.settings}, indent=1), "utf8")
        partial.replace(path)
        return path

    @classmethod
    def load(cls, output_dir: str | os.PathLike) -> RunFingerprint | None:
        """The record of the run in ``output_dir``, or None if it holds none."""
        path = Path(output_dir) / RUN_RECORD_NAME
        if not path.is_file():
            return None
        try:
            return cls(json.loads(path.read_text("utf8"))["settings"])
        except (ValueError, KeyError, TypeError) as error:
            raise StaleRunError(f"{path} is not a run record ({error}); remove it or use a new output_dir") from None


def _short(value: Any) -> str:
    if isinstance(value, dict) and "content" in value:
        return f"{value['path']} (content {value['content'][:12]})"
    text = json.dumps(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _weights_complete(path: Path) -> bool:
    """Whether safetensors reads the file: its header parses and the file is as long as the header says."""
    try:
        with safe_open(path, framework="pt"):
            return True
    except Exception:  # SafetensorError, or OSError
        return False


def checkpoint_problems(checkpoint: str | os.PathLike, require_optimizer: bool = True) -> list[str]:
    """What a checkpoint folder lacks to be resumed from: a readable ``trainer_state.json``, model weights (whole
    ``*.safetensors``, ``pytorch_model*.bin`` or DeepSpeed's ``global_step*``) and, if ``require_optimizer``, the
    optimizer state."""
    folder, problems = Path(checkpoint), []
    try:
        json.loads((folder / "trainer_state.json").read_text("utf8"))
    except FileNotFoundError:
        problems.append("no trainer_state.json")
    except (OSError, ValueError):
        problems.append("an unreadable trainer_state.json")
    safetensors = sorted(folder.rglob("*.safetensors"))
    deepspeed = [path for path in folder.glob("global_step*") if path.is_dir()]
    if not safetensors and not list(folder.rglob("pytorch_model*.bin")) and not deepspeed:
        problems.append("no model weights")
    problems += [f"a truncated {path.relative_to(folder)}" for path in safetensors if not _weights_complete(path)]
    optimizer = [folder / "optimizer.pt", folder / "optimizer.bin", *deepspeed, *folder.glob("optimizer_*")]
    if require_optimizer and not any(path.exists() and (path.is_dir() or path.stat().st_size) for path in optimizer):
        problems.append("no optimizer state")
    return problems


def trainer_checkpoints(output_dir: str | os.PathLike) -> list[Path]:
    """The trainer's ``checkpoint-N`` folders in ``output_dir``, newest first (transformers' ``sort_checkpoints``)."""
    found = [Path(path) for path in sort_checkpoints(os.fspath(output_dir))]
    return [path for path in reversed(found) if path.name.removeprefix(f"{PREFIX_CHECKPOINT_DIR}-").isdigit()]


def resolve_checkpoint(
    output_dir: str | os.PathLike,
    resume: str | os.PathLike | None,
    fingerprint: RunFingerprint,
    overwrite: bool = False,
    stale_outputs: Iterable[str] = (),
    require_optimizer: bool = True,
) -> str | None:
    """The checkpoint to pass to ``trainer.train(resume_from_checkpoint=...)`` (None: from scratch), once
    ``output_dir`` is known to hold this run (recorded there) and not another, whose work is a :class:`StaleRunError`
    or removed with ``overwrite``. Every process calls it; the main one alone writes. Cases: docs/training_guards.md.

    Args:
        resume: None (or ""), ``"latest"``, or a checkpoint folder; anything else is an error naming ``"latest"``.
        overwrite: Start afresh over another run's (or this run's) checkpoints, deleting them.
        stale_outputs: The recipe's other outputs, relative to ``output_dir`` or absolute (e.g. ``"final"``):
            another run's are work not to replace silently, and are removed with its checkpoints on ``overwrite``.

    Example::

        >>> from pathlib import Path
        >>> from llara_st.training.checkpoints import RunFingerprint, resolve_checkpoint
        >>> fingerprint = RunFingerprint.from_configs({"learning_rate": 1e-5})  # (config, training_args)
        >>> print(resolve_checkpoint("run", "latest", fingerprint))  # nothing yet: from scratch, run recorded
        None
        >>> Path("run/checkpoint-2").mkdir()  # as the trainer saves it after step 2 (placeholder files)
        >>> for name in ("trainer_state.json", "pytorch_model.bin", "optimizer.pt"):
        ...     _ = Path("run/checkpoint-2", name).write_text("{}")
        >>> resolve_checkpoint("run", "latest", fingerprint)  # trainer.train(resume_from_checkpoint=...)
        'run/checkpoint-2'
        >>> resolve_checkpoint("run", "latest", RunFingerprint.from_configs({"learning_rate": 2e-5}))
        Traceback (most recent call last):
            ...
        llara_st.training.checkpoints.StaleRunError: output_dir run holds a run with a different configuration
        (learning_rate: 1e-05 → 2e-05); to resume it would mix the two runs: ...
    """
    output, latest = Path(output_dir), resume == LATEST
    if resume is not None and resume != "" and not latest:  # a checkpoint folder: complete, and of this run
        hint = f"to continue from the newest checkpoint of output_dir, write resume_from_checkpoint: {LATEST}"
        if not isinstance(resume, str | os.PathLike):
            raise LLaRAUserError(
                f"resume_from_checkpoint must be {LATEST!r} or a checkpoint folder, got {resume!r}; {hint}"
            )
        checkpoint = Path(resume)
        if not checkpoint.is_dir():
            raise FileNotFoundError(f"resume_from_checkpoint={os.fspath(resume)!r} is not a checkpoint folder; {hint}")
        if problems := checkpoint_problems(checkpoint, require_optimizer):
            raise IncompleteCheckpointError(f"checkpoint {checkpoint} cannot be resumed: it has {', '.join(problems)}")
        recorded = RunFingerprint.load(checkpoint.parent)
        if recorded is None:
            logger.warning("Resuming %s, whose run records no settings: they cannot be checked", checkpoint)
        elif not fingerprint.matches(recorded):
            raise StaleRunError(_mismatch_message(checkpoint.parent, fingerprint, recorded, "resume from it"))
        here = RunFingerprint.load(output)
        if here is not None and not fingerprint.matches(here):
            raise StaleRunError(_mismatch_message(output, fingerprint, here, "write into it"))
        PartialState().wait_for_everyone()
        if PartialState().is_main_process and here is None:
            fingerprint.save(output)
        PartialState().wait_for_everyone()
        return str(checkpoint)

    # Decide from what every process sees, before the main process changes anything.
    recorded = RunFingerprint.load(output)
    checkpoints = trainer_checkpoints(output)
    outputs = [output / name for name in stale_outputs if (output / name).exists()]
    same_run = fingerprint.matches(recorded)
    remove = False
    if not same_run and (checkpoints or outputs):
        if not overwrite:
            if recorded is None:
                found = ", ".join(path.name for path in [*checkpoints, *outputs][:3])
                raise StaleRunError(
                    f"output_dir {output} holds the work of a run that recorded no settings ({found}); use a new "
                    "output_dir, overwrite_output_dir: true to delete it, or resume_from_checkpoint: <its folder>"
                )
            raise StaleRunError(_mismatch_message(output, fingerprint, recorded, "resume it"))
        remove = True
    elif same_run and checkpoints and not latest:
        if not overwrite:
            raise StaleRunError(
                f"output_dir {output} holds checkpoints of this run (newest {checkpoints[0].name}): set "
                "resume_from_checkpoint: latest to continue, or overwrite_output_dir: true to start from scratch"
            )
        remove = True
    if remove:
        _check_removable(outputs, recorded)
    chosen, incomplete = None, []
    if latest and not remove:
        for checkpoint in checkpoints:
            problems = checkpoint_problems(checkpoint, require_optimizer)
            if not problems:
                chosen = checkpoint
                break
            incomplete.append((checkpoint, problems))
    PartialState().wait_for_everyone()

    if PartialState().is_main_process:
        if remove:  # the earlier run's checkpoints, trainer state, record and other outputs
            targets = [*checkpoints, *outputs, output / "trainer_state.json", output / RUN_RECORD_NAME]
            for target in targets + list(output.glob(f"{PREFIX_CHECKPOINT_DIR}-*{INCOMPLETE_SUFFIX}")):
                if target.is_dir() and not target.is_symlink():
                    shutil.rmtree(target)
                elif target.exists() or target.is_symlink():
                    target.unlink()
            logger.warning("overwrite_output_dir: removed the earlier run's checkpoints and outputs from %s", output)
        for checkpoint, problems in incomplete:
            aside = checkpoint.with_name(checkpoint.name + INCOMPLETE_SUFFIX)
            logger.warning(
                "Checkpoint %s is incomplete (%s): moved aside to %s; resuming from %s",
                checkpoint, ", ".join(problems), aside.name, chosen.name if chosen else "scratch",
            )  # fmt: skip
            shutil.rmtree(aside, ignore_errors=True)
            checkpoint.rename(aside)
        if remove or not same_run:
            fingerprint.save(output)
    PartialState().wait_for_everyone()
    if chosen is None and latest:
        logger.info("No complete checkpoint of this run in %s: starting from scratch", output)
    return str(chosen) if chosen is not None else None


def _mismatch_message(folder: Path, fingerprint: RunFingerprint, recorded: RunFingerprint, action: str) -> str:
    changes = "; ".join(fingerprint.differences(recorded))
    return (
        f"output_dir {folder} holds a run with a different configuration ({changes}); to {action} "
        "would mix the two runs: use a new output_dir or overwrite_output_dir: true (which deletes the old run)"
    )


def _check_removable(outputs: list[Path], recorded: RunFingerprint | None) -> None:
    """Refuse to delete a non-empty folder that is no LLaRA model or run folder, or a file of no recorded run."""
    for path in outputs:
        if path.is_symlink():
            continue  # only the link is removed
        if path.is_dir():
            if any(path.iterdir()) and not made_by_llara(path):
                raise FolderNotOursError(
                    f"overwrite_output_dir would delete {path}, which is no LLaRA model nor run folder (with "
                    f"{RUN_RECORD_NAME}); move it away or choose another output_dir or final_model_dir"
                )
        elif recorded is None:
            raise FolderNotOursError(
                f"overwrite_output_dir would delete {path}, which no recorded llara_st run wrote (the folder has no "
                f"{RUN_RECORD_NAME}); move it away or choose another output_dir"
            )
