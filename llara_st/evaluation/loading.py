"""Loading a sentence-transformers model for evaluation: LLaRA folders safely, others on request with remote code."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from sentence_transformers import SentenceTransformer


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

    folder = Path(path).expanduser()
    if not folder.is_dir():
        if folder.is_absolute() or str(path).startswith((".", "~")) or str(path).count("/") != 1:
            raise FileNotFoundError(f"Model folder {folder} does not exist (and {str(path)!r} is not a Hub id)")
        from huggingface_hub import snapshot_download

        folder = Path(snapshot_download(repo_id=str(path)))
    if trust_remote_code:
        return SentenceTransformer(str(folder), device=device, trust_remote_code=True, model_kwargs=model_kwargs)
    try:
        return load(folder, device=device, model_kwargs=model_kwargs)
    except UnsafeModelError as error:
        raise UnsafeModelError(
            f"{error}. If you trust this folder, load it with trust_remote_code=True (CLI: --trust-remote-code)"
        ) from error


__all__ = ["load_sentence_transformer"]
