"""Building, converting and safely loading LLaRA sentence-transformers models, and finding their input module."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path, PureWindowsPath
from typing import Any, Literal, overload

from safetensors import SafetensorError, safe_open
from sentence_transformers import SentenceTransformer
from sentence_transformers.base.modules import Module, Normalize
from sentence_transformers.util.misc import import_from_string
from tokenizers import Tokenizer
from torch import nn

from llara_st.errors import LLaRAUserError
from llara_st.folders import DEGENERATE_MARKER, save_model_staged
from llara_st.model_card import LLaRAModelCardData
from llara_st.modules import LastKPooling, LLaRATransformer, check_pooling_width
from llara_st.prompts import DEFAULT_PASSAGE_MAX_LENGTH, DEFAULT_QUERY_MAX_LENGTH, NUM_PROMPT_TOKENS, PROMPT_TOKENS

logger = logging.getLogger(__name__)

# Module classes the safe loader may instantiate, by the ``type`` that modules.json records.
_LLARA_MODULE_CLASSES: dict[str, type] = {
    name: cls
    for cls in (LLaRATransformer, LastKPooling)
    for name in (f"{cls.__module__}.{cls.__name__}", f"llara_st.modules.{cls.__name__}")
}
_PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".joblib")
_CODE_SUFFIXES = (".py", ".pyc")
# Never downloaded for the safe loader: pickles and code it would refuse, and weights of other frameworks.
_HUB_IGNORE_PATTERNS = [f"*{suffix}" for suffix in _PICKLE_SUFFIXES + _CODE_SUFFIXES] + [
    "*.h5", "*.msgpack", "*.gguf", "*.onnx", "onnx/*", "openvino/*",
]  # fmt: skip


@overload
def llara_module(model: nn.Module, *, required: Literal[True]) -> LLaRATransformer: ...
@overload
def llara_module(model: nn.Module, *, required: bool = False) -> LLaRATransformer | None: ...
def llara_module(model: nn.Module, *, required: bool = False) -> LLaRATransformer | None:
    """The :class:`~llara_st.modules.LLaRATransformer` input module of a LLaRA model, or None for other models.

    Args:
        model: A ``SentenceTransformer``, possibly wrapped by DDP or DeepSpeed (``.module``), or the input module.
        required: Raise ``TypeError`` instead of returning None when the model is not a LLaRA model.

    Example::

        >>> import llara_st
        >>> from llara_st.model import llara_module
        >>> model = llara_st.load(llara_path)  # a LLaRA folder, e.g. written by llara_st.convert
        >>> llara_module(model, required=True) is model[0], llara_module(model[1]) is None  # model[1]: the pooling
        (True, True)
    """
    unwrapped = getattr(model, "module", model)
    if isinstance(unwrapped, LLaRATransformer):
        return unwrapped
    first = unwrapped[0] if isinstance(unwrapped, nn.Sequential) and len(unwrapped) > 0 else None
    if isinstance(first, LLaRATransformer):
        return first
    if required:
        raise TypeError(
            f"expected a LLaRA model whose first module is LLaRATransformer, got {type(first or unwrapped).__name__}; "
            "build one with llara_st.build_llara_model or load one with llara_st.load"
        )
    return None


def build_llara_model(
    model_name_or_path: str,
    *,
    query_max_length: int = DEFAULT_QUERY_MAX_LENGTH,
    passage_max_length: int = DEFAULT_PASSAGE_MAX_LENGTH,
    num_pooled_tokens: int = NUM_PROMPT_TOKENS,
    add_prompt_tokens: bool = True,
    device: str | None = None,
    model_card_data: LLaRAModelCardData | None = None,
    **transformer_kwargs: Any,
) -> SentenceTransformer:
    """A LLaRA embedder (input module → last-8 mean pooling → L2 normalisation) around a causal LM.

    Args:
        model_name_or_path: A causal LM or an authors' LLaRA checkpoint (whose ``<s1>``…``<s16>`` ids are kept).
        add_prompt_tokens: Add ``<s1>``…``<s16>`` to a tokenizer that lacks them and resize the embeddings.
        model_card_data: What the saved ``README.md`` says (license, language, ...).
        **transformer_kwargs: Passed to :class:`~llara_st.modules.LLaRATransformer`
            (``model_kwargs={"torch_dtype": "bfloat16", "attn_implementation": "flash_attention_2"}``, ...).

    Example::

        >>> import llara_st
        >>> model = llara_st.build_llara_model(causal_lm_path)  # e.g. "HuggingFaceTB/SmolLM2-135M"
        >>> model.encode_document(["The Moon pulls the oceans."]).shape
        (1, 64)
    """
    transformer = LLaRATransformer(
        model_name_or_path,
        query_max_length=query_max_length,
        passage_max_length=passage_max_length,
        add_prompt_tokens=add_prompt_tokens,
        **transformer_kwargs,
    )
    modules = [transformer, LastKPooling(num_pooled_tokens), Normalize()]
    check_pooling_width(modules)
    return SentenceTransformer(
        modules=modules,
        similarity_fn_name="cosine",
        device=device,
        model_card_data=model_card_data or LLaRAModelCardData(),
    )


def convert(src: str, dst: str | os.PathLike, **kwargs: Any) -> SentenceTransformer:
    """Turn a causal LM (folder or Hub id) into a LLaRA sentence-transformers folder at ``dst``.

    Missing ``<s1>``…``<s16>`` are added as special tokens (present ones keep their ids). ``dst`` is written beside
    and moved into place, replacing only a LLaRA model folder (:func:`llara_st.folders.check_replaceable`).
    ``kwargs`` go to :func:`build_llara_model`.

    Example::

        >>> import llara_st
        >>> model = llara_st.convert(causal_lm_path, "llara")  # e.g. "meta-llama/Llama-2-7b-hf"
        >>> llara_st.load("llara").encode_query(["what causes tides?"]).shape
        (1, 64)
    """
    model = build_llara_model(src, **kwargs)
    save_model_staged(model, dst, "output folder")
    logger.info("Saved LLaRA model to %s", dst)
    return model


class UnsafeModelError(LLaRAUserError):
    """A model folder holds something :func:`llara_st.load` refuses to run, unpickle or read from outside it."""


def _model_folder(
    model_name_or_path: str | os.PathLike,
    revision: str | None,
    token: bool | str | None,
    cache_folder: str | None,
    local_files_only: bool,
    download_everything: bool,
) -> tuple[Path, list[Path]]:
    """The local folder to read, and the roots its files may resolve into (a Hub snapshot's links into ``blobs``)."""
    folder = Path(model_name_or_path).expanduser()
    if folder.is_dir():
        root = folder.resolve()
        return root, [root]
    text = str(model_name_or_path)
    if folder.exists():
        raise NotADirectoryError(f"{folder} is a file; llara_st.load takes a model folder or a Hub id")
    parts = text.split("/")
    if not (len(parts) == 2 and all(parts) and not text.startswith((".", "~", "/")) and "\\" not in text):
        raise FileNotFoundError(f"Model folder {folder} does not exist (and {text!r} is not a Hub id 'org/name')")

    from huggingface_hub import constants, errors, snapshot_download

    offline_env = os.environ.get("HF_HUB_OFFLINE") or ""
    offline = local_files_only or constants.HF_HUB_OFFLINE or offline_env.strip().upper() in {"1", "ON", "YES", "TRUE"}
    cache_folder = cache_folder or os.environ.get("SENTENCE_TRANSFORMERS_HOME")
    try:
        snapshot = snapshot_download(
            repo_id=text,
            revision=revision,
            cache_dir=cache_folder,
            token=token,
            local_files_only=offline,
            ignore_patterns=None if download_everything else _HUB_IGNORE_PATTERNS,
        )
    except (errors.LocalEntryNotFoundError, errors.IncompleteSnapshotError) as error:
        reason = "HF_HUB_OFFLINE is set or local_files_only=True" if offline else "the Hub cannot be reached"
        raise FileNotFoundError(
            f"{text!r} is neither a local folder nor complete in the Hugging Face cache "
            f"{cache_folder or constants.HF_HUB_CACHE} ({reason}): download it while online, or pass a local copy"
        ) from error
    except (errors.RepositoryNotFoundError, errors.GatedRepoError) as error:
        raise FileNotFoundError(
            f"{text!r} is not a local folder, and the Hub refuses it (missing, private or gated: pass token=...)"
        ) from error
    except errors.RevisionNotFoundError as error:
        raise FileNotFoundError(f"The Hub repository {text!r} has no revision {revision!r}") from error
    root = Path(snapshot).resolve()
    roots = [root]
    blobs = Path(snapshot).parent.parent / "blobs"  # the cache layout: models--org--name/{snapshots/<sha>,blobs}
    if Path(snapshot).parent.name == "snapshots" and blobs.is_dir():
        roots.append(blobs.resolve())
    return root, roots


def _inside(path: Path, roots: Sequence[Path]) -> bool:
    return any(path == root or path.is_relative_to(root) for root in roots)


def _escapes(relative: str) -> bool:
    """Whether a path read from a model file is absolute or climbs out (``..``), on any platform."""
    return bool(PureWindowsPath(relative).anchor) or ".." in PureWindowsPath(relative).parts


def _check_files(folder: Path, roots: Sequence[Path]) -> None:
    """Refuse code, pickles, indexes of anything but safetensors shards inside, and entries resolving outside."""
    outside: list[str] = []
    code: list[str] = []
    pickles: list[str] = []
    indexes: list[Path] = []
    # os.walk does not enter linked folders, but lists them: each entry is checked where it resolves to.
    for directory, subdirectories, files in os.walk(folder):
        for name in subdirectories + files:
            path = Path(directory) / name
            relative = str(path.relative_to(folder))
            try:
                target = path.resolve()
            except (RuntimeError, OSError) as error:  # Python 3.11: RuntimeError("Symlink loop from ...")
                raise UnsafeModelError(f"{folder} holds {relative}, a symlink loop or bad link: {error}") from None
            if not _inside(target, roots):
                outside.append(f"{relative} -> {target}")
            elif name.endswith(_CODE_SUFFIXES):
                code.append(relative)
            elif name.endswith(_PICKLE_SUFFIXES):
                pickles.append(relative)
            elif name.endswith(".index.json"):
                indexes.append(path)
    if outside:
        raise UnsafeModelError(f"{folder} holds links that resolve outside it: {sorted(outside)}")
    if code:
        raise UnsafeModelError(f"{folder} contains Python files {sorted(code)}; llara_st.load never runs model code")
    if pickles:
        raise UnsafeModelError(f"{folder} contains pickle-format weights {sorted(pickles)}; use safetensors")
    for index in sorted(indexes):
        if not index.name.endswith(".safetensors.index.json"):
            raise UnsafeModelError(f"{index} indexes pickle weights: re-save the model with safe_serialization=True")
        try:
            shards = set(json.loads(index.read_text(encoding="utf8"))["weight_map"].values())
        except (ValueError, KeyError, TypeError, AttributeError) as error:
            raise UnsafeModelError(f"{index} is not a safetensors index with a 'weight_map': {error}") from None
        for shard in sorted(shards, key=str):
            if (
                not isinstance(shard, str)
                or _escapes(shard)
                or not shard.endswith(".safetensors")
                or not _inside((index.parent / shard).resolve(), roots)
            ):
                raise UnsafeModelError(f"{index} names the shard {shard!r}, not a .safetensors file inside the folder")


def _read_json(path: Path) -> Any:
    """The JSON value in ``path``; a ``ValueError`` naming the file (and line, counted from 1) if it is not JSON."""
    try:
        return json.loads(path.read_text(encoding="utf8"))
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not valid JSON (line {error.lineno}, column {error.colno}): {error.msg}") from None
    except UnicodeDecodeError as error:
        raise ValueError(f"{path} is not valid JSON (not UTF-8 text: {error.reason})") from None
    except RecursionError:
        raise ValueError(f"{path} is nested too deeply to be a model's JSON file") from None


def _check_model_files(folder: Path) -> None:
    """Name a broken JSON, safetensors or tokenizer file (or a degenerate model) before transformers trips on it."""
    _check_degenerate_marker(folder)
    for path in sorted(path for path in folder.rglob("*") if path.is_file()):
        if path.suffix == ".json":
            _read_json(path)
        if path.name == "tokenizer.json":
            try:
                Tokenizer.from_file(str(path))
            except Exception as error:  # tokenizers raises a bare Exception for a malformed file
                raise ValueError(f"{path} is not a tokenizers file: {error}") from None
        elif path.suffix == ".safetensors":
            try:  # parses the header and checks that the file is as long as the header says
                with safe_open(path, "np"):
                    pass
            except SafetensorError:
                raise ValueError(f"{path} is not a complete safetensors file (bad header, or cut short)") from None


def _check_degenerate_marker(folder: Path) -> None:
    marker = folder / DEGENERATE_MARKER
    if marker.is_file():
        try:
            reason = str(json.loads(marker.read_text(encoding="utf8")).get("reason", ""))
        except (ValueError, AttributeError):
            reason = ""
        raise ValueError(
            f"{folder} was marked unusable by the training run that wrote it: {reason or 'its model collapsed'} "
            f"({marker.name}); train again, or delete {marker} to load it anyway"
        )


# Keys of sentence_bert_config.json's ``*_kwargs`` naming a place to write: the caller's choice, never a model's.
_WRITE_PATH_KEYS = frozenset({"offload_folder", "offload_dir", "cache_dir", "cache_folder"})
# Keys whose file transformers reads joined to the model folder: allowed as a relative path inside it.
_FOLDER_RELATIVE_KEYS = frozenset({"gguf_file", "subfolder"})
_PATH_KEY_SUFFIXES = ("_file", "_folder", "_dir", "_path", "_name_or_path", "_files")
_KWARGS_SECTIONS = (
    "model_kwargs", "processor_kwargs", "config_kwargs", "tokenizer_kwargs", "model_args", "tokenizer_args",
    "config_args",
)  # fmt: skip


def _check_module_config_paths(module_folder: Path, folder: Path, roots: Sequence[Path]) -> None:
    """Refuse ``sentence_bert_config.json`` paths to read or write, except a ``gguf_file`` or ``subfolder`` inside."""
    config_path = module_folder / "sentence_bert_config.json"
    if not config_path.is_file():
        return
    config = _read_json(config_path)
    if not isinstance(config, dict):
        raise ValueError(f"{config_path} must hold a JSON object of settings, got {type(config).__name__}")
    named: list[tuple[str, str, Any]] = [(key, key, value) for key, value in config.items()]
    for section in _KWARGS_SECTIONS:
        values = config.get(section)
        if values is None:
            continue
        if not isinstance(values, dict):
            raise ValueError(f"{config_path}: {section} must be a JSON object, got {type(values).__name__}")
        named += [(f"{section}.{key}", key, value) for key, value in values.items()]
    for name, key, value in named:
        # Every _WRITE_PATH_KEYS key has such a suffix; "subfolder" has none.
        if value is None or not (key in _FOLDER_RELATIVE_KEYS or key.endswith(_PATH_KEY_SUFFIXES)):
            continue
        if (
            key in _FOLDER_RELATIVE_KEYS
            and isinstance(value, str)
            and not _escapes(value)
            and _inside((module_folder / value).resolve(), roots)
        ):
            continue
        where = "where to write" if key in _WRITE_PATH_KEYS else "a path"
        raise UnsafeModelError(
            f"{config_path} sets {name} = {value!r:.120}, {where} not taken from a model folder: pass it to "
            "llara_st.load(..., model_kwargs=...) instead"
        )


def _read_modules_json(path: Path, folder: Path) -> list[dict[str, Any]]:
    """The entries of ``modules.json``, each with a string ``type`` and a relative ``path`` inside."""
    entries = _read_json(path)
    if not isinstance(entries, list) or not entries:
        got = type(entries).__name__ if entries != [] else "an empty list"
        raise ValueError(f"{path} must hold a non-empty JSON list of modules, got {got}")
    for position, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise ValueError(f"{path}: entry {position} must be an object, got {type(entry).__name__}: {entry!r:.80}")
        for key in ("type", "path"):
            if not isinstance(entry.get(key), str):
                problem = "has no" if key not in entry else f"has a non-string ({entry[key]!r:.40})"
                raise ValueError(f"{path}: entry {position} ({entry!r:.120}) {problem} {key!r}")
        subfolder = entry["path"]
        if _escapes(subfolder):
            raise UnsafeModelError(f"{path}: entry {position} has the path {subfolder!r}, outside the model folder")
        # A module without files (Normalize in all-MiniLM-L6-v2) may list a folder that was never written.
        if (folder / subfolder).exists() and not (folder / subfolder).is_dir():
            raise ValueError(f"{path}: entry {position} has the path {subfolder!r}, which is not a folder in {folder}")
    return entries


def _module_class(class_ref: str, path: Path, position: int) -> type[Module]:
    if class_ref in _LLARA_MODULE_CLASSES:
        return _LLARA_MODULE_CLASSES[class_ref]
    if not class_ref.startswith("sentence_transformers."):
        raise UnsafeModelError(f"modules.json names {class_ref!r}, not a llara_st or sentence-transformers class")
    try:
        module_class = import_from_string(class_ref)
    except ImportError:
        raise ValueError(f"{path}: entry {position}: sentence-transformers does not have {class_ref!r}") from None
    if not (isinstance(module_class, type) and issubclass(module_class, Module)):
        raise ValueError(f"{path}: entry {position}: {class_ref!r} is not a sentence-transformers module class")
    return module_class


def _check_adapter_base(module_folder: Path) -> None:
    """A LoRA adapter's base model folder is checked the same way."""
    adapter_config = module_folder / "adapter_config.json"
    if not adapter_config.is_file():
        return
    try:
        base = json.loads(adapter_config.read_text(encoding="utf8"))["base_model_name_or_path"]
    except (ValueError, KeyError, TypeError) as error:
        raise ValueError(f"{adapter_config} has no readable 'base_model_name_or_path': {error}") from None
    base_folder = Path(str(base)).expanduser()
    if not base_folder.is_dir():
        raise UnsafeModelError(
            f"{adapter_config} loads its base model from {base!r}, not a local folder that llara_st.load can check: "
            "merge the adapter (llara_st.training.merge_lora_adapter)"
        )
    root = base_folder.resolve()
    _check_files(root, [root])


def load(
    model_name_or_path: str | os.PathLike,
    *,
    device: str | None = None,
    model_kwargs: dict[str, Any] | None = None,
    revision: str | None = None,
    token: bool | str | None = None,
    cache_folder: str | None = None,
    local_files_only: bool = False,
    trust_remote_code: bool = False,
    **kwargs: Any,
) -> SentenceTransformer:
    """Load a LLaRA (or any sentence-transformers) model from a folder or a Hub id without running its code.

    It reads a sentence-transformers folder (llara_st and sentence-transformers module classes only) or an authors'
    LLaRA checkpoint (a causal LM whose tokenizer has ``<s1>``…``<s16>``, e.g. ``BAAI/LLARA-passage``), a Hub id
    downloaded without pickles or code. :class:`UnsafeModelError` names code, pickle weights, a foreign module class
    or anything resolving outside the folder (docs/quickstart.md lists the checks).

    Args:
        model_kwargs: Passed to the backbone's ``from_pretrained`` (e.g. ``{"torch_dtype": "bfloat16"}``).
        cache_folder: The Hub cache folder (default ``SENTENCE_TRANSFORMERS_HOME``, else the Hugging Face cache).
        trust_remote_code: Skip every check and load with ``SentenceTransformer(folder, trust_remote_code=True)``,
            running the folder's code.
        **kwargs: Passed to the ``SentenceTransformer`` constructor (``truncate_dim``, ...).

    Example::

        >>> import llara_st
        >>> model = llara_st.load(llara_path)  # a folder, or a Hub id, e.g. llara_st.load("BAAI/LLARA-passage")
        >>> model.encode_query(["what causes tides?"]).shape
        (1, 64)
    """
    folder, roots = _model_folder(
        model_name_or_path, revision, token, cache_folder, local_files_only, trust_remote_code
    )
    modules_path = folder / "modules.json"
    if trust_remote_code:
        _check_degenerate_marker(folder)
        card_data = kwargs.pop("model_card_data", None)
        if card_data is None and modules_path.is_file() and "llara_st." in modules_path.read_text(encoding="utf8"):
            card_data = LLaRAModelCardData()
        return SentenceTransformer(
            str(folder),
            device=device,
            trust_remote_code=True,
            model_kwargs=model_kwargs,
            model_card_data=card_data,
            **kwargs,
        )
    try:
        _check_files(folder, roots)
        _check_model_files(folder)
        entries = _read_modules_json(modules_path, folder) if modules_path.is_file() else []
        module_classes = [_module_class(entry["type"], modules_path, i) for i, entry in enumerate(entries)]
        for entry in entries:
            _check_adapter_base(folder / entry["path"])
            _check_module_config_paths(folder / entry["path"], folder, roots)
    except UnsafeModelError as error:
        raise UnsafeModelError(
            f"{error}. If you trust this model, load it with trust_remote_code=True (CLI: --trust-remote-code), "
            "which runs its code"
        ) from None
    if not entries:
        return _load_authors_checkpoint(folder, model_name_or_path, device=device, model_kwargs=model_kwargs, **kwargs)
    modules = []
    for entry, module_class in zip(entries, module_classes, strict=True):
        load_kwargs: dict[str, Any] = {"subfolder": entry["path"]}
        if issubclass(module_class, LLaRATransformer) or entry["type"].endswith("Transformer"):
            load_kwargs.update(trust_remote_code=False, model_kwargs=model_kwargs)
        modules.append(module_class.load(str(folder), **load_kwargs))
    settings_path = folder / "config_sentence_transformers.json"
    settings = _read_json(settings_path) if settings_path.is_file() else {}
    if not isinstance(settings, dict):
        raise ValueError(f"{settings_path} must hold a JSON object of settings, got {type(settings).__name__}")
    kwargs.setdefault("similarity_fn_name", settings.get("similarity_fn_name"))
    kwargs.setdefault("prompts", settings.get("prompts") or None)
    kwargs.setdefault("default_prompt_name", settings.get("default_prompt_name"))
    if isinstance(modules[0], LLaRATransformer):
        kwargs.setdefault("model_card_data", LLaRAModelCardData())
    check_pooling_width(modules)
    return SentenceTransformer(modules=modules, device=device, **kwargs)


def _load_authors_checkpoint(
    folder: Path, source: str | os.PathLike, *, device: str | None, model_kwargs: dict[str, Any] | None, **kwargs: Any
) -> SentenceTransformer:
    # Files a sentence-transformers save writes beside modules.json; an authors' checkpoint (a causal LM) has none.
    written = [
        name for name in ("config_sentence_transformers.json", "sentence_bert_config.json") if (folder / name).is_file()
    ]
    if written:
        raise FileNotFoundError(f"{folder} is an incomplete save ({written[0]} but no modules.json): save it again")
    has_prompt_tokens = False
    if (folder / "config.json").is_file():
        from transformers import AutoTokenizer

        try:
            vocab = AutoTokenizer.from_pretrained(str(folder), trust_remote_code=False).get_vocab()
            has_prompt_tokens = all(token in vocab for token in PROMPT_TOKENS)
        except (OSError, ValueError):
            pass
    if not has_prompt_tokens:
        raise FileNotFoundError(
            f"{folder} is neither a sentence-transformers folder (no modules.json) nor an authors' LLaRA checkpoint "
            f"(no <s1>…<s16>); convert a causal LM first: `llara-st convert {source} DST`"
        )
    never_remote_code = {"trust_remote_code": False}  # a config.json auto_map must not pull code in
    transformer = LLaRATransformer(
        str(folder),
        model_kwargs={**(model_kwargs or {}), **never_remote_code},
        processor_kwargs=never_remote_code,
        config_kwargs=never_remote_code,
    )
    kwargs.setdefault("model_card_data", LLaRAModelCardData())
    return SentenceTransformer(
        modules=[transformer, LastKPooling(NUM_PROMPT_TOKENS), Normalize()],
        similarity_fn_name=kwargs.pop("similarity_fn_name", "cosine"),
        device=device,
        **kwargs,
    )


__all__ = ["UnsafeModelError", "build_llara_model", "convert", "llara_module", "load"]
