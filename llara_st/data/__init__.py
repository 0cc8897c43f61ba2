"""Data builders for LLaRA training: adaptation pairs (and, later, contrastive fine-tuning rows)."""

from llara_st.data.pretraining import (
    NEXT_TEXT_COLUMN,
    TEXT_COLUMN,
    DocumentChunker,
    TextDocument,
    beir_corpus_pairs,
    build_pretraining_pairs,
    detokenize_wikitext,
    read_beir_corpus,
    read_llara_jsonl,
    read_text_documents,
    read_wikitext,
    text_file_pairs,
    wikitext_heading,
    wikitext_pairs,
)

__all__ = [
    "NEXT_TEXT_COLUMN",
    "TEXT_COLUMN",
    "DocumentChunker",
    "TextDocument",
    "beir_corpus_pairs",
    "build_pretraining_pairs",
    "detokenize_wikitext",
    "read_beir_corpus",
    "read_llara_jsonl",
    "read_text_documents",
    "read_wikitext",
    "text_file_pairs",
    "wikitext_heading",
    "wikitext_pairs",
]
