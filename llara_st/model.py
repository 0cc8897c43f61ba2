"""Building, converting and safely loading LLaRA sentence-transformers models."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from sentence_transformers import SentenceTransformer
from sentence_transformers.base.modules import Normalize
from sentence_transformers.util.misc import import_from_string

from llara_st.modules import LastKPooling, LLaRATransformer
from llara_st.prompts import DEFAULT_PASSAGE_MAX_LENGTH, DEFAULT_QUERY_MAX_LENGTH, NUM_PROMPT_TOKENS

logger = logging.getLogger(__name__)

# Module classes the safe loader may instantiate, by the ``type`` that modules.json records.
LLARA_MODULE_CLASSES: dict[str, type] = {
    "llara_st.modules.llara_transformer.LLaRATransformer": LLaRATransformer,
    "llara_st.modules.last_k_pooling.LastKPooling": LastKPooling,
    "llara_st.modules.LLaRATransformer": LLaRATransformer,
    "llara_st.modules.LastKPooling": LastKPooling,
}
_PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".joblib")


def build_llara_model(
    model_name_or_path: str,
    *,
    query_max_length: int = DEFAULT_QUERY_MAX_LENGTH,
    passage_max_length: int = DEFAULT_PASSAGE_MAX_LENGTH,
    num_pooled_tokens: int = NUM_PROMPT_TOKENS,
    add_prompt_tokens: bool = True,
    device: str | None = None,
    **transformer_kwargs: Any,
) -> SentenceTransformer:
    """A LLaRA embedder (input module → last-8 mean pooling → L2 normalisation) around a causal LM.

    Args:
        model_name_or_path: A Hugging Face causal LM (Llama, Mistral, Qwen2, SmolLM2, ...) or an authors'
            LLaRA checkpoint (whose ``<s1>``…``<s16>`` ids are kept).
        query_max_length, passage_max_length: Max input tokens per side, template included.
        num_pooled_tokens: Trailing positions averaged (8).
        add_prompt_tokens: Add ``<s1>``…``<s16>`` to a tokenizer that lacks them and resize the embeddings.
        device: Where to put the model.
        **transformer_kwargs: Passed to :class:`~llara_st.modules.LLaRATransformer`
            (``model_kwargs={"torch_dtype": "bfloat16", "attn_implementation": "flash_attention_2"}``, ...).
    """
    transformer = LLaRATransformer(
        model_name_or_path,
        query_max_length=query_max_length,
        passage_max_length=passage_max_length,
        add_prompt_tokens=add_prompt_tokens,
        **transformer_kwargs,
    )
    return SentenceTransformer(
        modules=[transformer, LastKPooling(num_pooled_tokens), Normalize()],
        similarity_fn_name="cosine",
        device=device,
    )


def convert(src: str, dst: str | os.PathLike, **kwargs: Any) -> SentenceTransformer:
    """Turn a causal LM (folder or Hub id) into a LLaRA sentence-transformers folder at ``dst``.

    Missing ``<s1>``…``<s16>`` tokens are added as special tokens (embeddings resized); present ones keep
    their ids. The folder holds ``modules.json`` and safetensors weights only, and loads with
    ``SentenceTransformer(dst, trust_remote_code=True)`` or :func:`llara_st.load`.

    Args:
        src: The causal LM.
        dst: The output folder.
        **kwargs: Passed to :func:`build_llara_model`.
    """
    model = build_llara_model(src, **kwargs)
    model.save(str(dst), safe_serialization=True)
    logger.info("Saved LLaRA model to %s", dst)
    return model


class UnsafeModelError(ValueError):
    """A model folder holds something :func:`llara_st.load` refuses to run or unpickle."""


def _check_folder_is_safe(folder: Path) -> list[dict[str, Any]]:
    modules_path = folder / "modules.json"
    if not modules_path.is_file():
        raise FileNotFoundError(f"{folder} is not a sentence-transformers folder: it has no modules.json")
    code = sorted(str(p.relative_to(folder)) for p in folder.rglob("*.py"))
    if code:
        raise UnsafeModelError(f"{folder} contains Python files {code}; llara_st.load never runs model code")
    pickles = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.suffix in _PICKLE_SUFFIXES)
    if pickles:
        raise UnsafeModelError(
            f"{folder} contains pickle-format weights {pickles}; llara_st.load reads safetensors only"
        )
    modules = json.loads(modules_path.read_text(encoding="utf8"))
    for entry in modules:
        class_ref = entry["type"]
        if class_ref not in LLARA_MODULE_CLASSES and not class_ref.startswith("sentence_transformers."):
            raise UnsafeModelError(
                f"modules.json names the module class {class_ref!r}, which is neither a llara_st nor a "
                "sentence-transformers class; llara_st.load refuses it"
            )
    return modules


def load(
    path: str | os.PathLike,
    *,
    device: str | None = None,
    model_kwargs: dict[str, Any] | None = None,
    **kwargs: Any,
) -> SentenceTransformer:
    """Load a saved LLaRA (or any sentence-transformers) model without ``trust_remote_code``.

    Only classes of sentence-transformers and llara_st are instantiated; a folder with other module
    classes, Python files or pickle weights is refused with :class:`UnsafeModelError`. Remote code in the
    backbone's ``config.json`` (``auto_map``) is never trusted.

    Args:
        path: A local sentence-transformers folder.
        device: Where to put the model.
        model_kwargs: Passed to the backbone's ``from_pretrained`` (e.g. ``{"torch_dtype": "bfloat16"}``).
        **kwargs: Passed to the ``SentenceTransformer`` constructor (``truncate_dim``, ...).
    """
    folder = Path(path)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} is not a local folder (download a Hub model first)")
    modules_config = _check_folder_is_safe(folder)
    modules = []
    for entry in modules_config:
        class_ref = entry["type"]
        module_class = LLARA_MODULE_CLASSES.get(class_ref) or import_from_string(class_ref)
        load_kwargs: dict[str, Any] = {"subfolder": entry["path"]}
        if issubclass(module_class, LLaRATransformer) or class_ref.endswith("Transformer"):
            load_kwargs.update(trust_remote_code=False, model_kwargs=model_kwargs)
        modules.append(module_class.load(str(folder), **load_kwargs))
    settings_path = folder / "config_sentence_transformers.json"
    settings = json.loads(settings_path.read_text(encoding="utf8")) if settings_path.is_file() else {}
    kwargs.setdefault("similarity_fn_name", settings.get("similarity_fn_name"))
    kwargs.setdefault("prompts", settings.get("prompts") or None)
    kwargs.setdefault("default_prompt_name", settings.get("default_prompt_name"))
    return SentenceTransformer(modules=modules, device=device, **kwargs)
