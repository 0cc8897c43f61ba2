"""Loading a sentence-transformers model for evaluation: LLaRA folders safely, others on request with remote code."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from sentence_transformers import SentenceTransformer


def resolve_model_folder(path: str | os.PathLike, revision: str | None = None) -> Path:
    """A local model folder: ``path`` itself, or a Hub id (``organization/model``) downloaded to the HF cache.

    Args:
        path: A folder, or a Hub id.
        revision: The Hub commit to download.
    """
    folder = Path(path).expanduser()
    if folder.is_dir():
        return folder
    text = str(path)
    if folder.is_absolute() or text.startswith((".", "~")) or text.count("/") != 1:
        raise FileNotFoundError(f"Model folder {folder} does not exist (and {text!r} is not a Hub id)")
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id=text, revision=revision))
    except Exception as error:  # offline, unknown repository, gated model, ...
        raise FileNotFoundError(
            f"{text!r} is neither a local folder nor a Hub model that could be downloaded: {error}"
        ) from error


def load_sentence_transformer(
    path: str | os.PathLike,
    *,
    trust_remote_code: bool = False,
    device: str | None = None,
    model_kwargs: dict[str, Any] | None = None,
) -> SentenceTransformer:
    """Load a sentence-transformers model (a LLaRA model or any other) from a folder or a Hub id.

    By default the safe :func:`llara_st.load` reads it: llara_st and sentence-transformers module classes and
    safetensors weights only, no code from the folder. Models with their own module classes need
    ``trust_remote_code=True``, which loads with ``SentenceTransformer(path, trust_remote_code=True)`` and runs
    the folder's code: only for folders you trust.

    Args:
        path: A local folder, or a Hub id (downloaded first; needs network access).
        trust_remote_code: Allow module classes and code from the folder.
        device: Where to put the model.
        model_kwargs: Passed to the backbone's ``from_pretrained`` (e.g. ``{"torch_dtype": "bfloat16"}``).
    """
    from llara_st.model import UnsafeModelError, load

    folder = resolve_model_folder(path)
    if trust_remote_code:
        return SentenceTransformer(str(folder), device=device, trust_remote_code=True, model_kwargs=model_kwargs)
    try:
        return load(folder, device=device, model_kwargs=model_kwargs)
    except UnsafeModelError as error:
        raise UnsafeModelError(
            f"{error}. If you trust this folder, load it with trust_remote_code=True (CLI: --trust-remote-code)"
        ) from error


__all__ = ["load_sentence_transformer", "resolve_model_folder"]
