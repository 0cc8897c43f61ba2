"""Data for LLaRA: one reader for BEIR folders and JSONL rows, adaptation pairs, contrastive fine-tuning rows."""

from llara_st.data.adaptation import (
    NEXT_TEXT_COLUMN,
    TEXT_COLUMN,
    DocumentChunker,
    TextDocument,
    adaptation_files,
    build_adaptation_pairs,
    detokenize_wikitext,
    expand_paths,
    read_adaptation_pairs,
    read_text_documents,
    read_wikitext,
    wikitext_heading,
)
from llara_st.data.beir import (
    beir_split_names,
    load_beir,
    read_beir,
    read_beir_documents,
    read_beir_qrels,
    read_jsonl,
)
from llara_st.data.contrastive import (
    InvalidTrainingRowsError,
    beir_examples,
    build_contrastive_dataset,
    check_text_rows,
    contrastive_router_mapping,
    load_contrastive_dataset,
    negative_columns,
    read_contrastive_jsonl,
    relevant_documents,
    write_contrastive_jsonl,
)
from llara_st.data.documents import read_documents, read_jsonl_documents, read_queries
from llara_st.data.mining import mine_hard_negatives_from_qrels

__all__ = [
    # reading BEIR folders and JSONL rows
    "beir_split_names",
    "load_beir",
    "read_beir",
    "read_beir_documents",
    "read_beir_qrels",
    "read_jsonl",
    # adaptation pairs
    "NEXT_TEXT_COLUMN",
    "TEXT_COLUMN",
    "DocumentChunker",
    "TextDocument",
    "adaptation_files",
    "build_adaptation_pairs",
    "detokenize_wikitext",
    "expand_paths",
    "read_adaptation_pairs",
    "read_text_documents",
    "read_wikitext",
    "wikitext_heading",
    # your own documents and queries, for search
    "read_documents",
    "read_jsonl_documents",
    "read_queries",
    # contrastive fine-tuning
    "InvalidTrainingRowsError",
    "beir_examples",
    "build_contrastive_dataset",
    "check_text_rows",
    "contrastive_router_mapping",
    "load_contrastive_dataset",
    "mine_hard_negatives_from_qrels",
    "negative_columns",
    "read_contrastive_jsonl",
    "relevant_documents",
    "write_contrastive_jsonl",
]
