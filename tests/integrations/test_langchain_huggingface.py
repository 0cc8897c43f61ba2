"""langchain-huggingface's own HuggingFaceEmbeddings with a LLaRA folder, used as docs/langchain.md shows."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("langchain_huggingface")
from langchain_huggingface import HuggingFaceEmbeddings  # noqa: E402

QUERY = "what causes tides?"
DOCUMENTS = ["The Moon's gravity pulls the oceans and causes tides.", "Paris is the capital of France."]


def test_documented_usage_embeds_queries_with_the_query_template(tiny_llara_dir, tiny_llara):
    embeddings = HuggingFaceEmbeddings(
        model_name=str(tiny_llara_dir),
        model_kwargs={"trust_remote_code": True, "device": "cpu"},
        query_encode_kwargs={"task": "query"},
    )
    expected_query = tiny_llara.encode_query([QUERY])[0]
    np.testing.assert_allclose(embeddings.embed_query(QUERY), expected_query, atol=1e-5)
    np.testing.assert_allclose(embeddings.embed_documents(DOCUMENTS), tiny_llara.encode_document(DOCUMENTS), atol=1e-5)
    # Without query_encode_kwargs a query gets the passage template: the documented setting is what makes it right.
    plain = HuggingFaceEmbeddings(model_name=str(tiny_llara_dir), model_kwargs={"trust_remote_code": True})
    assert not np.allclose(plain.embed_query(QUERY), expected_query, atol=1e-3)
