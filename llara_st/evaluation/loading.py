"""Former evaluation loaders, kept as thin aliases of :func:`llara_st.load` for code that still imports them."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from sentence_transformers import SentenceTransformer

from llara_st.model import load


def resolve_model_folder(path: str | os.PathLike, revision: str | None = None) -> Path:
    """The local folder of a model folder or Hub id (downloaded to the cache), as :func:`llara_st.load` finds it.

    Args:
        path: A folder, or a Hub id.
        revision: The Hub revision to download.
    """
    from llara_st.model import _model_folder

    folder, _ = _model_folder(
        path, revision=revision, token=None, cache_folder=None, local_files_only=False, download_everything=False
    )
    return folder


def load_sentence_transformer(
    path: str | os.PathLike,
    *,
    trust_remote_code: bool = False,
    device: str | None = None,
    model_kwargs: dict[str, Any] | None = None,
) -> SentenceTransformer:
    """Alias of :func:`llara_st.load` (same arguments); use that instead."""
    return load(path, trust_remote_code=trust_remote_code, device=device, model_kwargs=model_kwargs)


__all__ = ["load_sentence_transformer", "resolve_model_folder"]
