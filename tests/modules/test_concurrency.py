"""Issue 11.1: queries and documents embedded at the same time on one model equal the embeddings made one after
the other. The bug this pins: the fast tokenizer's truncation is state of its shared backend, so a thread
tokenising queries cut another thread's documents at the query budget (and the other way round)."""

from __future__ import annotations

import asyncio
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch

# Queries and documents of varied lengths, the longest beyond their budgets (64 and 160 tokens on the tiny model).
QUERIES = [f"what causes the tides number {i}, and why? " * (1 + i % 4) for i in range(12)]
DOCUMENTS = [
    f"Document {i}. The tides rise and fall with the pull of the Moon. " * (1 + 2 * (i % 6)) for i in range(12)
]


@pytest.fixture
def frequent_thread_switches():
    """Switch threads every microsecond, so that the threads interleave inside every call."""
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    yield
    sys.setswitchinterval(interval)


def test_preprocess_in_two_threads_equals_sequential(tiny_llara, frequent_thread_switches):
    transformer = tiny_llara[0]
    expected = {
        "query": transformer.preprocess(QUERIES, task="query")["input_ids"],
        "document": transformer.preprocess(DOCUMENTS, task="document")["input_ids"],
    }
    texts = {"query": QUERIES, "document": DOCUMENTS}
    mismatches = {"query": 0, "document": 0}
    start = threading.Barrier(2)

    def run(task: str) -> None:
        start.wait()
        for _ in range(300):
            if not torch.equal(transformer.preprocess(texts[task], task=task)["input_ids"], expected[task]):
                mismatches[task] += 1

    threads = [threading.Thread(target=run, args=(task,)) for task in ("query", "document")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert mismatches == {"query": 0, "document": 0}


def test_encode_query_and_encode_document_in_threads_equal_sequential(tiny_llara, frequent_thread_switches):
    expected_queries = tiny_llara.encode_query(QUERIES, batch_size=2)
    expected_documents = tiny_llara.encode_document(DOCUMENTS, batch_size=2)
    with ThreadPoolExecutor(max_workers=4) as pool:
        futures = [
            (kind, pool.submit(encode, texts, batch_size=2))
            for _ in range(4)
            for kind, encode, texts in (
                ("query", tiny_llara.encode_query, QUERIES),
                ("document", tiny_llara.encode_document, DOCUMENTS),
            )
        ]
        results = [(kind, future.result()) for kind, future in futures]
    for kind, embeddings in results:
        expected = expected_queries if kind == "query" else expected_documents
        np.testing.assert_allclose(embeddings, expected, atol=1e-6, err_msg=f"concurrent {kind} embeddings differ")


def test_asyncio_gather_over_threads_equals_sequential(tiny_llara, frequent_thread_switches):
    """What LangChain's ``aembed_query``/``aembed_documents`` do under ``asyncio.gather``."""
    expected_queries = tiny_llara.encode_query(QUERIES, batch_size=2)
    expected_documents = tiny_llara.encode_document(DOCUMENTS, batch_size=2)

    async def embed_all() -> list[np.ndarray]:
        calls = []
        for _ in range(3):
            calls.append(asyncio.to_thread(tiny_llara.encode_query, QUERIES, batch_size=2))
            calls.append(asyncio.to_thread(tiny_llara.encode_document, DOCUMENTS, batch_size=2))
        return await asyncio.gather(*calls)

    results = asyncio.run(embed_all())
    for index, embeddings in enumerate(results):
        expected = expected_queries if index % 2 == 0 else expected_documents
        np.testing.assert_allclose(embeddings, expected, atol=1e-6)


def test_forward_passes_are_not_serialised(tiny_llara):
    """The fix must not be a lock around the forward pass: two threads are inside the decoder at once."""
    decoder = tiny_llara[0].model.get_decoder()
    inside = {"now": 0, "most": 0}
    lock = threading.Lock()

    def enter(module, args, kwargs):
        with lock:
            inside["now"] += 1
            inside["most"] = max(inside["most"], inside["now"])
        time.sleep(0.02)  # hold the forward open (releasing the GIL) so the other thread can come in

    def leave(module, args, kwargs, output):
        with lock:
            inside["now"] -= 1

    handles = [
        decoder.register_forward_pre_hook(enter, with_kwargs=True),
        decoder.register_forward_hook(leave, with_kwargs=True),
    ]
    try:
        with ThreadPoolExecutor(max_workers=2) as pool:
            queries = pool.submit(tiny_llara.encode_query, QUERIES, batch_size=1)
            documents = pool.submit(tiny_llara.encode_document, DOCUMENTS, batch_size=1)
            queries.result(), documents.result()
    finally:
        for handle in handles:
            handle.remove()
    assert inside["most"] >= 2
