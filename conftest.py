"""What the docstring examples of ``llara_st`` run on (``python -m pytest`` collects them with ``--doctest-modules``).

Each example runs in a fresh temporary folder (so ``model.save("llara")`` or ``"rows.jsonl"`` write nowhere else) and
finds these names, all built here offline from the tests' tiny model builders (no Hub, no ../shared):

- ``causal_lm_path``: a random 2-layer, 64-wide Llama with a Llama-2-style tokenizer (what a user converts);
- ``llara_path``: that model converted to a LLaRA sentence-transformers folder (``llara_st.convert``);
- ``model``: ``llara_path`` loaded (a fresh copy per example, float32, CPU);
- ``beir_path``: a BEIR folder of five documents and three queries with ``train``, ``dev`` and ``test`` qrels.

The file sits at the repository root, outside the package, so the wheel does not carry it.
"""

from __future__ import annotations

import copy
import importlib
import importlib.util
import re
from pathlib import Path

import pytest
from _pytest.doctest import DoctestItem

from tests.conftest import build_tiny_llama, build_tokenizer, write_beir_folder

ROOT = Path(__file__).resolve().parent
PACKAGE = ROOT / "llara_st"
# The packages of the install extras: a module of llara_st that needs a missing one is not collected for doctests.
EXTRA_PACKAGES = {"mteb", "faiss", "langchain_core", "bm25s", "Stemmer", "gguf", "matplotlib"}
# Modules that import their extra only when used, yet whose examples use it.
EXAMPLE_EXTRAS = {"llara_st/evaluation/faiss_index.py": ["faiss"], "llara_st/data/mining.py": ["bm25s", "Stemmer"]}


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    """Skip (for doctests) a module of the package whose extra is not installed; any other import error shows."""
    if collection_path.suffix != ".py" or PACKAGE not in collection_path.parents:
        return None
    relative = collection_path.relative_to(ROOT)
    if any(importlib.util.find_spec(name) is None for name in EXAMPLE_EXTRAS.get(relative.as_posix(), [])):
        return True
    parts = relative.with_suffix("").parts
    module = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
    try:
        importlib.import_module(module)
    except ModuleNotFoundError as error:
        if (error.name or "").split(".")[0] in EXTRA_PACKAGES:
            return True
        raise
    return None


# Docstring examples that train a model are marked slow, so `-m "not slow"` stays quick (the slow recipe tests run the
# same workflows end to end).
TRAINING_CALLS = re.compile(r"\b(run_adaptation|run_finetuning|train_with_guards|ReproductionPipeline)\(|\.train\(")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if isinstance(item, DoctestItem) and any(TRAINING_CALLS.search(e.source) for e in item.dtest.examples):
            item.add_marker(pytest.mark.slow)


DOCUMENTS = {
    "d1": ("Tides", "The tides rise and fall with the pull of the Moon on the ocean water."),
    "d2": ("Bees", "Honeybees dance on the comb to show the others where flowers and water are."),
    "d3": ("Volcanoes", "A volcano erupts when magma rises through the crust under the ocean."),
    "d4": ("Retrieval", "A retriever embeds queries and documents; relevant documents score high."),
    "d5": ("Rivers", "The river rose and the fields flooded after a week of rain and water from the hills."),
}
QUERIES = {
    "q1": "why do the ocean tides rise?",
    "q2": "where do bees find flowers and water?",
    "q3": "why did the river rise?",
}
QRELS = {"q1": "d1", "q2": "d2", "q3": "d5"}


@pytest.fixture(scope="session")
def _doctest_paths(tmp_path_factory) -> dict[str, str]:
    import llara_st

    tokenizer = build_tokenizer(tmp_path_factory.mktemp("doctest_tokenizer"))
    causal_lm = build_tiny_llama(tmp_path_factory.mktemp("doctest_causal_lm"), tokenizer)
    llara = tmp_path_factory.mktemp("doctest_llara") / "llara"
    loaded = llara_st.convert(str(causal_lm), llara)
    qrels = {split: [(query, doc, 1) for query, doc in QRELS.items()] for split in ("train", "dev", "test")}
    beir = write_beir_folder(tmp_path_factory.mktemp("doctest_beir") / "scifact", DOCUMENTS, QUERIES, qrels)
    return {"causal_lm_path": str(causal_lm), "llara_path": str(llara), "beir_path": str(beir), "_model": loaded}


@pytest.fixture(autouse=True)
def _llara_doctest_namespace(request: pytest.FixtureRequest) -> None:
    """For docstring examples only (the tests do not pay for it): the names above, a temporary working folder."""
    if not isinstance(request.node, DoctestItem):
        return
    paths = request.getfixturevalue("_doctest_paths")
    namespace = request.getfixturevalue("doctest_namespace")
    namespace.update({name: value for name, value in paths.items() if not name.startswith("_")})
    namespace["model"] = copy.deepcopy(paths["_model"])
    request.getfixturevalue("monkeypatch").chdir(request.getfixturevalue("tmp_path"))
