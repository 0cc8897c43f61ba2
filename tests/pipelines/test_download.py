"""A BEIR folder from MTEB's task when the local one is absent; offline, an error that says what to download."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import huggingface_hub
import mteb
import pytest
from mteb.abstasks.retrieval import AbsTaskRetrieval
from mteb.abstasks.retrieval_dataset_loaders import RetrievalSplitData

from llara_st.data import read_beir
from llara_st.pipelines.download import (
    SCIFACT_DEV_QUERIES,
    materialize_beir_folder,
    scifact_dev_query_ids,
    split_scifact_dev,
)

REAL_GET_TASK = mteb.get_task
# BEIR SciFact's train split: enough queries that 200 go to dev and some stay in train; ids as on the Hub.
SCIFACT_HUB = {
    "corpus": {"0123": {"title": "Tides", "text": "The moon pulls the sea."}, "77": {"title": "", "text": "Bees."}},
    "queries": {"train": {str(n): f"claim {n}" for n in range(205)}, "test": {"9001": "do bees dance?"}},
    "relevant_docs": {
        "train": {str(n): {"0123": 1} if n % 2 else {"77": 1, "0123": 1} for n in range(205)},
        "test": {"9001": {"77": 1}},
    },
}
NFCORPUS_HUB = {
    "corpus": {"MED-10": {"title": "Statins", "text": "Statin use and breast cancer."}},
    "queries": {"test": {"PLAIN-2": "Do cholesterol statin drugs cause breast cancer?"}},
    "relevant_docs": {"test": {"PLAIN-2": {"MED-10": 2}}},
}


def fake_get_task(hub_data: dict, calls: list[str], error: Exception | None = None):
    """``mteb.get_task`` returning the real task class whose data come from ``hub_data`` instead of the Hub.

    The task is a subclass of MTEB's own task (``AbsTaskRetrieval``); its ``load_data`` hands MTEB the BEIR-style
    dictionaries and lets MTEB's ``convert_v1_dataset_format_to_v2`` build ``task.dataset``, so the data have the
    shape MTEB's loader gives (``{"default": {split: RetrievalSplitData}}``, ``datasets.Dataset`` corpus and
    queries with ``id``/``title``/``text``) without a network.
    """

    def get_task(task_name: str, eval_splits=None, **kwargs):
        real = REAL_GET_TASK(task_name, eval_splits=eval_splits, **kwargs)

        class HubFreeTask(type(real)):
            def load_data(self, num_proc=None, **_):
                calls.append(task_name)
                if error is not None:
                    raise error
                splits = self.eval_splits
                self.corpus = {split: hub_data["corpus"] for split in splits}
                self.queries = {split: hub_data["queries"][split] for split in splits}
                self.relevant_docs = {split: hub_data["relevant_docs"][split] for split in splits}
                self.convert_v1_dataset_format_to_v2(num_proc)
                self.data_loaded = True

        return HubFreeTask().filter_eval_splits(eval_splits)

    return get_task


def read_qrels(path: Path) -> list[list[str]]:
    with path.open(encoding="utf8", newline="") as handle:
        return list(csv.reader(handle, delimiter="\t"))


def test_the_fake_task_has_the_data_shape_of_mteb_retrieval_tasks():
    calls: list[str] = []
    task = fake_get_task(SCIFACT_HUB, calls)("SciFact", eval_splits=["train", "test"])
    assert isinstance(task, AbsTaskRetrieval) and task.metadata.name == "SciFact"
    task.load_data()
    split = task.dataset["default"]["test"]
    assert set(split) == set(RetrievalSplitData.__annotations__)
    assert {"id", "title", "text"} <= set(split["corpus"].column_names)
    assert split["queries"].column_names == ["id", "text"] and split["relevant_docs"] == {"9001": {"77": 1}}


def test_an_absent_scifact_folder_is_written_from_mteb_with_dev_taken_from_train(tmp_path, monkeypatch):
    calls: list[str] = []
    monkeypatch.setattr(mteb, "get_task", fake_get_task(SCIFACT_HUB, calls))
    folder = tmp_path / "data" / "scifact"

    assert materialize_beir_folder(folder, ["train", "dev"]) == folder

    assert calls == ["SciFact"]
    assert sorted(os.listdir(folder / "qrels")) == ["dev.tsv", "test.tsv", "train.tsv"]
    assert os.listdir(folder.parent) == ["scifact"]  # no scratch folder left behind
    train, dev, test = (read_beir(folder, split) for split in ("train", "dev", "test"))
    assert set(dev.qrels) == scifact_dev_query_ids(SCIFACT_HUB["queries"]["train"])
    assert len(dev.qrels) == SCIFACT_DEV_QUERIES and len(train.qrels) == 5
    assert train.qrels | dev.qrels == SCIFACT_HUB["relevant_docs"]["train"]  # every judgement, each in one split
    assert test.qrels == {"9001": {"77": 1}} and test.queries[:] == {"id": ["9001"], "text": ["do bees dance?"]}
    assert sorted(zip(*train.corpus[:].values(), strict=True)) == [
        ("0123", "Tides", "The moon pulls the sea."),  # ids stay strings: "0123" is not 123
        ("77", "", "Bees."),
    ]
    assert len(read_beir(folder, "train").queries) + len(dev.queries) == 205


def test_nfcorpus_is_written_with_its_test_split_only_and_other_splits_are_refused(tmp_path, monkeypatch):
    calls: list[str] = []
    monkeypatch.setattr(mteb, "get_task", fake_get_task(NFCORPUS_HUB, calls))
    with pytest.raises(ValueError, match=r"NFCorpus folder built from MTEB's task has the splits \['test'\], not "):
        materialize_beir_folder(tmp_path / "nfcorpus", ["train"])
    assert calls == [] and not (tmp_path / "nfcorpus").exists()

    materialize_beir_folder(tmp_path / "held-out", ["test"], task_name="NFCorpus")
    corpus, queries, qrels = read_beir(tmp_path / "held-out", "test")
    assert calls == ["NFCorpus"] and os.listdir(tmp_path / "held-out" / "qrels") == ["test.tsv"]
    assert qrels == {"PLAIN-2": {"MED-10": 2}}
    assert corpus[0] == {"id": "MED-10", "title": "Statins", "text": "Statin use and breast cancer."}


def test_an_existing_folder_is_used_as_it_is_and_an_incomplete_one_is_refused(tmp_path, monkeypatch):
    calls: list[str] = []
    monkeypatch.setattr(mteb, "get_task", fake_get_task(SCIFACT_HUB, calls))
    folder = materialize_beir_folder(tmp_path / "scifact", ["test"])
    (folder / "qrels" / "dev.tsv").unlink()
    before = (folder / "corpus.jsonl").read_bytes()

    assert materialize_beir_folder(folder, ["train", "test"]) == folder
    with pytest.raises(FileNotFoundError, match=r"lacks .*qrels/dev\.tsv\. Download .*datasets/scifact\.zip"):
        materialize_beir_folder(folder, ["dev"])
    assert calls == ["SciFact"] and (folder / "corpus.jsonl").read_bytes() == before  # never re-downloaded


def test_a_folder_no_mteb_task_fills_says_what_to_download(tmp_path, monkeypatch):
    calls: list[str] = []
    monkeypatch.setattr(mteb, "get_task", fake_get_task(SCIFACT_HUB, calls))
    with pytest.raises(FileNotFoundError, match=r"not one of the MTEB tasks .*SciFact.*datasets/fiqa\.zip") as error:
        materialize_beir_folder(tmp_path / "fiqa", ["test"])
    assert "fiqa/corpus.jsonl" in str(error.value) and "fiqa/qrels/<split>.tsv" in str(error.value)
    assert calls == []


@pytest.mark.parametrize(
    ("offline", "reason"), [(False, "the Hub could not be reached"), (True, "HF_HUB_OFFLINE is set")]
)
def test_no_network_says_what_to_download_and_where(tmp_path, monkeypatch, offline, reason):
    # The reason depends on HF_HUB_OFFLINE (CI sets it): pin it both ways rather than read the environment.
    monkeypatch.setattr(huggingface_hub, "is_offline_mode", lambda: offline)
    calls: list[str] = []
    unreachable = ConnectionError("Couldn't reach 'mteb/scifact' on the Hub (LocalEntryNotFoundError)")
    monkeypatch.setattr(mteb, "get_task", fake_get_task(SCIFACT_HUB, calls, error=unreachable))
    with pytest.raises(FileNotFoundError) as error:
        materialize_beir_folder(tmp_path / "scifact", ["dev"])
    message = str(error.value)
    assert f"{reason}: Couldn't reach 'mteb/scifact'" in message
    assert "thakur/BEIR/datasets/scifact.zip" in message and "scifact/queries.jsonl" in message
    assert "split_scifact_dev" in message  # BEIR's zip has no dev split: the message says how to make it
    assert not (tmp_path / "scifact").exists()


@pytest.mark.slow  # a fresh interpreter imports mteb and sentence-transformers
def test_offline_with_real_mteb_says_what_to_download_and_where(tmp_path):
    # HF_HUB_OFFLINE is read when huggingface_hub is imported: a fresh interpreter, with an empty cache.
    code = (
        "import sys\nfrom llara_st.pipelines.download import materialize_beir_folder\n"
        "try:\n    materialize_beir_folder(sys.argv[1], ['test'])\n"
        "except FileNotFoundError as error:\n    print(error)\nelse:\n    print('no error')\n"
    )
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_HOME": str(tmp_path / "hf"),
        "HF_DATASETS_CACHE": str(tmp_path / "hf" / "datasets"),
        "OMP_NUM_THREADS": "1",
    }
    folder = tmp_path / "nfcorpus"
    result = subprocess.run(
        [sys.executable, "-c", code, str(folder)], env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    assert "MTEB's NFCorpus task could not be loaded from the Hugging Face Hub (HF_HUB_OFFLINE is set" in result.stdout
    assert "datasets/nfcorpus.zip" in result.stdout and f"{folder}/corpus.jsonl" in result.stdout
    assert not folder.exists()


def test_the_dev_rule_gives_the_shared_scifact_dev_split_byte_for_byte(data_dir, tmp_path):
    # BEIR's train qrels are this project's train + dev; splitting them again must give the same two files.
    shared = data_dir / "scifact" / "qrels"
    beir = tmp_path / "scifact"
    (beir / "qrels").mkdir(parents=True)
    rows = read_qrels(shared / "train.tsv") + read_qrels(shared / "dev.tsv")[1:]
    (beir / "qrels" / "train.tsv").write_text("".join("\t".join(row) + "\n" for row in rows))

    split_scifact_dev(beir)

    for split in ("train", "dev"):
        assert (beir / "qrels" / f"{split}.tsv").read_bytes() == (shared / f"{split}.tsv").read_bytes()
    with pytest.raises(FileExistsError, match="is split into train and dev"):
        split_scifact_dev(beir)


def test_reproduction_builds_an_absent_data_folder_from_mteb(tmp_path, monkeypatch):
    from llara_st.pipelines.reproduction import ReproductionPipeline, parse_reproduction_config

    calls: list[str] = []
    monkeypatch.setattr(mteb, "get_task", fake_get_task(SCIFACT_HUB, calls))
    config = {"beir_dir": str(tmp_path / "scifact"), "adapt": {"wikitext_paths": [str(tmp_path / "wiki.raw")]}}
    with pytest.raises(FileNotFoundError, match=r"adapt\.wikitext_paths.*scifact\.zip"):  # local files first
        ReproductionPipeline(parse_reproduction_config(config))
    assert calls == []  # nothing fetched while a local file is missing
    (tmp_path / "wiki.raw").write_text(" = A = \n \n Some text . \n")
    ReproductionPipeline(parse_reproduction_config(config))
    assert calls == ["SciFact"] and len(read_beir(tmp_path / "scifact", "dev").qrels) == SCIFACT_DEV_QUERIES
