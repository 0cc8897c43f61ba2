"""Evaluation: MTEB retrieval on local BEIR folders and MTEB tasks, LLaRA model metadata, faiss indexes, an
evaluator for use during training, sub-corpora for cheaper evaluation, and search over your own documents
(``DocumentIndex``).

Names load on first use, so each optional extra works alone: ``FaissIndex`` needs faiss but not mteb,
and the MTEB functions say ``pip install llara-st[mteb]`` when mteb is missing. Models load with
:func:`llara_st.load`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # for type checkers and IDEs; at run time the names load lazily below
    from llara_st.evaluation.beir_task import (
        BEIRFolderRetrieval,
        beir_folder_revision,
        beir_split_names,
        read_beir_qrels,
    )
    from llara_st.evaluation.document_index import DocumentIndex, ModelMismatchError, SearchHit
    from llara_st.evaluation.evaluate import HEADLINE_METRICS, evaluate_beir, evaluate_mteb, format_scores
    from llara_st.evaluation.faiss_index import FaissIndex, FaissSearchBackend, default_nlist, faiss_gpu_count
    from llara_st.evaluation.fingerprint import model_fingerprint
    from llara_st.evaluation.ir_evaluator import beir_ir_evaluator
    from llara_st.evaluation.model_meta import (
        LLARA_CITATION,
        llara_model_meta,
        load_llara_for_mteb,
        model_meta_for,
        mteb_encoder,
    )
    from llara_st.evaluation.sub_corpus import sub_corpus_ids, write_sub_corpus

# Public name -> the submodule that defines it.
_SUBMODULE_OF: dict[str, str] = {
    "BEIRFolderRetrieval": "beir_task",
    "beir_folder_revision": "beir_task",
    "beir_split_names": "beir_task",
    "read_beir_qrels": "beir_task",
    "DocumentIndex": "document_index",
    "ModelMismatchError": "document_index",
    "SearchHit": "document_index",
    "HEADLINE_METRICS": "evaluate",
    "evaluate_beir": "evaluate",
    "evaluate_mteb": "evaluate",
    "format_scores": "evaluate",
    "FaissIndex": "faiss_index",
    "FaissSearchBackend": "faiss_index",
    "default_nlist": "faiss_index",
    "faiss_gpu_count": "faiss_index",
    "beir_ir_evaluator": "ir_evaluator",
    "LLARA_CITATION": "model_meta",
    "llara_model_meta": "model_meta",
    "load_llara_for_mteb": "model_meta",
    "model_fingerprint": "fingerprint",
    "model_meta_for": "model_meta",
    "mteb_encoder": "model_meta",
    "sub_corpus_ids": "sub_corpus",
    "write_sub_corpus": "sub_corpus",
}

# Top-level modules of optional dependencies -> the llara-st extra that installs them.
_EXTRA_OF_MODULE: dict[str, str] = {"mteb": "mteb", "faiss": "faiss"}


def __getattr__(name: str) -> Any:
    submodule = _SUBMODULE_OF.get(name)
    if submodule is None:
        raise AttributeError(f"module 'llara_st.evaluation' has no attribute {name!r}")
    try:
        module = importlib.import_module(f"llara_st.evaluation.{submodule}")
    except ModuleNotFoundError as error:
        missing = (error.name or "").split(".")[0]
        if missing not in _EXTRA_OF_MODULE:
            raise
        extra = _EXTRA_OF_MODULE[missing]
        raise ModuleNotFoundError(
            f"llara_st.evaluation.{name} needs {missing}, which is not installed: pip install 'llara-st[{extra}]'",
            name=missing,
        ) from error
    value = getattr(module, name)
    globals()[name] = value  # later look-ups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_SUBMODULE_OF])


__all__ = [
    "BEIRFolderRetrieval",
    "DocumentIndex",
    "ModelMismatchError",
    "SearchHit",
    "FaissIndex",
    "FaissSearchBackend",
    "HEADLINE_METRICS",
    "LLARA_CITATION",
    "beir_folder_revision",
    "beir_ir_evaluator",
    "beir_split_names",
    "default_nlist",
    "evaluate_beir",
    "evaluate_mteb",
    "faiss_gpu_count",
    "format_scores",
    "llara_model_meta",
    "load_llara_for_mteb",
    "model_fingerprint",
    "model_meta_for",
    "mteb_encoder",
    "read_beir_qrels",
    "sub_corpus_ids",
    "write_sub_corpus",
]
