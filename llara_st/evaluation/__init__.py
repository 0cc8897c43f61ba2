"""Evaluation: MTEB retrieval, LLaRA model metadata, faiss indexes, sub-corpora and ``DocumentIndex``. Names load
on first use (PEP 562), so each optional extra (faiss, mteb) works alone, and a missing one is named."""

from __future__ import annotations

import importlib
from typing import Any

_NAMES_OF_SUBMODULE = {
    "beir_task": ["BEIRFolderRetrieval", "beir_folder_revision", "beir_split_names", "read_beir_qrels"],
    "document_index": ["DocumentIndex", "ModelMismatchError", "SearchHit"],
    "evaluate": ["HEADLINE_METRICS", "evaluate_beir", "evaluate_mteb", "format_scores"],
    "faiss_index": ["FaissIndex", "FaissSearchBackend", "default_nlist"],
    "fingerprint": ["model_fingerprint"],
    "ir_evaluator": ["beir_ir_evaluator", "run_on_main_process"],
    "model_meta": ["LLARA_CITATION", "llara_model_meta", "load_llara_for_mteb", "model_meta_for", "mteb_encoder"],
    "sub_corpus": ["sub_corpus_ids", "write_sub_corpus"],
}
_SUBMODULE_OF = {name: module for module, names in _NAMES_OF_SUBMODULE.items() for name in names}
__all__ = sorted(_SUBMODULE_OF)


def __getattr__(name: str) -> Any:
    if name not in _SUBMODULE_OF:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    try:
        module = importlib.import_module(f"{__name__}.{_SUBMODULE_OF[name]}")
    except ModuleNotFoundError as error:
        missing = (error.name or "").partition(".")[0]
        if missing not in ("mteb", "faiss"):  # the optional extras, named as their top-level modules
            raise
        message = f"{__name__}.{name} needs {missing}, which is not installed: pip install 'llara-st[{missing}]'"
        raise ModuleNotFoundError(message, name=missing) from error
    globals()[name] = value = getattr(module, name)  # later look-ups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
