"""Evaluation: MTEB retrieval on local BEIR folders and MTEB tasks, LLaRA model metadata, faiss indexes."""

from llara_st.evaluation.beir_task import BEIRFolderRetrieval, beir_folder_revision, beir_split_names, read_beir_qrels
from llara_st.evaluation.evaluate import HEADLINE_METRICS, evaluate_beir, evaluate_mteb, format_scores
from llara_st.evaluation.faiss_index import FaissIndex, FaissSearchBackend, default_nlist, faiss_gpu_count
from llara_st.evaluation.loading import load_sentence_transformer, resolve_model_folder
from llara_st.evaluation.model_meta import (
    LLARA_CITATION,
    is_llara_model,
    llara_model_meta,
    load_llara_for_mteb,
    model_fingerprint,
    model_meta_for,
    mteb_encoder,
)

__all__ = [
    "BEIRFolderRetrieval",
    "FaissIndex",
    "FaissSearchBackend",
    "HEADLINE_METRICS",
    "LLARA_CITATION",
    "beir_folder_revision",
    "beir_split_names",
    "default_nlist",
    "evaluate_beir",
    "evaluate_mteb",
    "faiss_gpu_count",
    "format_scores",
    "is_llara_model",
    "llara_model_meta",
    "load_llara_for_mteb",
    "load_sentence_transformer",
    "model_fingerprint",
    "model_meta_for",
    "mteb_encoder",
    "read_beir_qrels",
    "resolve_model_folder",
]
