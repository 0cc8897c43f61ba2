"""Each install extra works alone (issue 13.3): every integration imports and runs with the other extras absent.

CI installs ``[all]``, so each case runs in a fresh interpreter in which the other extras' modules are made
uninstalled: ``sys.modules[name] = None`` makes ``import name`` raise ``ModuleNotFoundError`` and
``importlib.util.find_spec(name)`` return None, as for a package that is not installed.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

EXTRA_MODULES = {"mteb": "mteb", "faiss": "faiss", "langchain": "langchain_core"}

_PRELUDE = """
import sys
for name in {absent!r}:
    sys.modules[name] = None
"""

_CASES = {
    # pip install llara-st (no extra): the package, its loaders and the lazy namespaces import; using an extra's
    # feature names the extra to install.
    "none": """
        import llara_st, llara_st.integrations, llara_st.evaluation
        from llara_st.evaluation import FaissIndex
        from llara_st import load
        from llara_st.cli import main
        try:
            llara_st.evaluation.evaluate_beir
        except ModuleNotFoundError as error:
            assert "pip install 'llara-st[mteb]'" in str(error), error
        else:
            raise AssertionError("evaluate_beir imported without mteb")
        try:
            from llara_st.integrations import LLaRAEmbeddings
        except ModuleNotFoundError as error:
            assert "pip install 'llara-st[langchain]'" in str(error), error
        else:
            raise AssertionError("LLaRAEmbeddings imported without langchain-core")
        try:
            FaissIndex.build([[1.0, 0.0]], ["d1"])
        except ImportError as error:
            assert "llara-st[faiss]" in str(error), error
        else:
            raise AssertionError("FaissIndex built without faiss")
        assert main(["evaluate", MODEL_DIR, "--tasks", "SciFact"]) == 1
        assert main(["index", MODEL_DIR, MODEL_DIR + "/README.md", "--index", MODEL_DIR + "/never-written"]) == 1
        print("ok")
    """,
    # pip install llara-st[langchain]: LLaRAEmbeddings("path") loads and embeds without mteb or faiss.
    "langchain": """
        from llara_st.integrations.langchain import LLaRAEmbeddings
        embeddings = LLaRAEmbeddings(MODEL_DIR, device="cpu")
        assert len(embeddings.embed_query("what causes tides?")) == len(embeddings.embed_documents(["Tides."])[0])
        print("ok")
    """,
    # pip install llara-st[faiss]: FaissIndex builds and searches without mteb.
    "faiss": """
        import numpy as np
        from llara_st.evaluation import FaissIndex
        index = FaissIndex.build(np.eye(3, dtype="float32"), ["a", "b", "c"])
        assert index.search(np.eye(3, dtype="float32")[[1]], 1)[1] == [["b"]]
        import llara_st
        from llara_st.evaluation import DocumentIndex
        documents = DocumentIndex(llara_st.load(MODEL_DIR), "Flat")  # search your own documents: no mteb needed
        documents.add({"a": "Tides rise.", "b": "Bees dance."}, show_progress_bar=False)
        assert len(documents.search("Tides rise.", k=2)[0]) == 2
        print("ok")
    """,
    # pip install llara-st[mteb]: the MTEB evaluation imports without faiss or langchain-core.
    "mteb": """
        from llara_st.evaluation import BEIRFolderRetrieval, evaluate_beir, llara_model_meta
        print("ok")
    """,
}


@pytest.mark.slow  # one fresh interpreter per extra
@pytest.mark.parametrize("installed", list(_CASES))
def test_each_extra_works_without_the_others(installed, tiny_llara_dir):
    absent = sorted(module for extra, module in EXTRA_MODULES.items() if extra != installed)
    script = _PRELUDE.format(absent=absent) + f"MODEL_DIR = {str(tiny_llara_dir)!r}\n"
    script += textwrap.dedent(_CASES[installed])
    script += f"\nfor name in {absent!r}:\n    assert sys.modules.get(name) is None, name + ' was imported'\n"
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().splitlines()[-1] == "ok"
    if installed == "none":
        assert "pip install 'llara-st[mteb]'" in result.stderr  # the CLI's one-line error
        assert "llara-st index: error: FaissIndex needs faiss" in result.stderr
        assert "Traceback" not in result.stderr
