"""A SciFact or NFCorpus BEIR folder (:mod:`llara_st.data.beir`), written once from MTEB's task on the Hugging Face
Hub when there is no local copy; offline, an error says what to download and where to put it."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import uuid
from collections import namedtuple
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from llara_st.data.beir import CORPUS_FILE, QRELS_FOLDER, QUERIES_FILE, read_beir_qrels

logger = logging.getLogger(__name__)

BEIR_DOWNLOAD_URL = "https://public.ukp.informatik.tu-darmstadt.de/thakur/BEIR/datasets/{name}.zip"
#: SciFact's dev split: this many of BEIR's train queries, chosen by :func:`scifact_dev_query_ids`.
SCIFACT_DEV_QUERIES = 200


#: A BEIR folder from MTEB's task ``task_name``: the splits loaded from the Hub, and those written to ``qrels/``.
MTEBSource = namedtuple("MTEBSource", "task_name hub_splits splits")
#: BEIR folders that can be built from MTEB, by folder name (as in ``../shared/data/{name}``).
MTEB_SOURCES = {
    "scifact": MTEBSource("SciFact", hub_splits=("train", "test"), splits=("train", "dev", "test")),
    "nfcorpus": MTEBSource("NFCorpus", hub_splits=("test",), splits=("test",)),
}


def download_instructions(folder: str | os.PathLike) -> str:
    """What to download and where to unzip it so that ``folder`` is a BEIR folder."""
    folder = Path(folder)
    text = (
        f"Download the BEIR dataset (e.g. {BEIR_DOWNLOAD_URL.format(name=folder.name)}) and unzip it so that "
        f"{folder}/{CORPUS_FILE}, {folder}/{QUERIES_FILE} and {folder}/{QRELS_FOLDER}/<split>.tsv exist, or point "
        "the config at another folder."
    )
    if folder.name.lower() == "scifact":
        text += " BEIR's scifact.zip has no dev split: llara_st.pipelines.download.split_scifact_dev(folder) makes it."
    return text


def scifact_dev_query_ids(train_query_ids: Iterable[str]) -> set[str]:
    """This project's SciFact ``dev`` split (not on the Hub): the :data:`SCIFACT_DEV_QUERIES` train queries whose
    ``sha1("scifact-dev-{id}")`` hex digests sort first (it gives ``../shared/data/scifact/qrels/dev.tsv`` exactly)::

        >>> from llara_st.pipelines.download import scifact_dev_query_ids
        >>> dev = scifact_dev_query_ids(str(number) for number in range(1000))
        >>> len(dev), sorted(dev, key=int)[:3]
        (200, ['9', '15', '22'])
    """
    ids = sorted(set(train_query_ids), key=lambda query: hashlib.sha1(f"scifact-dev-{query}".encode()).hexdigest())
    if len(ids) <= SCIFACT_DEV_QUERIES:
        raise ValueError(f"SciFact's train qrels have {len(ids)} queries: too few for {SCIFACT_DEV_QUERIES} dev ones")
    return set(ids[:SCIFACT_DEV_QUERIES])


def _split_dev(train: dict[str, dict[str, int]]) -> tuple[dict[str, dict[str, int]], dict[str, dict[str, int]]]:
    dev_ids = scifact_dev_query_ids(train)
    dev = {query_id: docs for query_id, docs in train.items() if query_id in dev_ids}
    return {query_id: docs for query_id, docs in train.items() if query_id not in dev_ids}, dev


def _write_qrels(path: Path, qrels: dict[str, dict[str, int]]) -> None:
    with path.open("w", encoding="utf8", newline="") as handle:
        handle.write("query-id\tcorpus-id\tscore\n")
        for query_id in sorted(qrels):
            for document_id in sorted(qrels[query_id]):
                handle.write(f"{query_id}\t{document_id}\t{int(qrels[query_id][document_id])}\n")


def split_scifact_dev(folder: str | os.PathLike) -> Path:
    """Move the :func:`scifact_dev_query_ids` queries of an unzipped BEIR ``scifact.zip`` folder from
    ``qrels/train.tsv`` to a new ``qrels/dev.tsv`` (refused if it exists: never split twice)."""
    folder = Path(folder)
    train_path, dev_path = folder / QRELS_FOLDER / "train.tsv", folder / QRELS_FOLDER / "dev.tsv"
    if dev_path.exists():
        raise FileExistsError(f"{dev_path} exists already: {folder} is split into train and dev")
    if not train_path.is_file():
        raise FileNotFoundError(f"{train_path} does not exist: {download_instructions(folder)}")
    train, dev = _split_dev(read_beir_qrels(train_path))
    _write_qrels(dev_path, dev)
    _write_qrels(train_path, train)
    return folder


def _write_jsonl(path: Path, rows: Iterable[dict[str, Any]]) -> None:
    with path.open("w", encoding="utf8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")


def _load_task_splits(source: MTEBSource, folder: Path) -> dict[str, Any]:
    """``{hub split: mteb RetrievalSplitData}`` of the source's task."""
    import mteb
    from huggingface_hub import is_offline_mode

    task = mteb.get_task(source.task_name, eval_splits=list(source.hub_splits))
    try:
        task.load_data()
    except OSError as error:  # ConnectionError, OfflineModeIsEnabled, a dataset missing from the cache
        offline = "HF_HUB_OFFLINE is set" if is_offline_mode() else "the Hub could not be reached"
        raise FileNotFoundError(
            f"BEIR folder {folder.resolve()} does not exist and MTEB's {source.task_name} task could not be "
            f"loaded from the Hugging Face Hub ({offline}: {error}). {download_instructions(folder)}"
        ) from error
    return task.dataset["default"]  # a monolingual task: one subset


def materialize_beir_folder(
    folder: str | os.PathLike, splits: Sequence[str] = (), task_name: str | None = None, download: bool = True
) -> Path:
    """Make sure ``folder`` is a BEIR folder with the qrels ``splits``: one that exists is used as it is (refused,
    with what to download, if it lacks a file); an absent one is written from ``mteb.get_task(task_name)`` with
    every split of its :data:`MTEB_SOURCES` entry (judged queries only, ids as strings) via a renamed scratch folder.

    Args:
        task_name: ``"SciFact"`` or ``"NFCorpus"``; by default, from the folder's name (``scifact``, ``nfcorpus``).
        download: False refuses an absent folder at once instead of asking the Hub.

    Example (an absent ``data/scifact`` would be written from the Hub, the first time only; here a local copy)::

        >>> from llara_st.pipelines.download import materialize_beir_folder
        >>> folder = materialize_beir_folder(beir_path, ["train", "dev"])  # complete: used as it is
        >>> folder.name, sorted(path.name for path in folder.iterdir())
        ('scifact', ['corpus.jsonl', 'qrels', 'queries.jsonl'])
        >>> materialize_beir_folder(beir_path, ["validation"])  # present but incomplete: never overwritten
        Traceback (most recent call last):
        ...
        FileNotFoundError: BEIR folder .../scifact lacks .../scifact/qrels/validation.tsv. Download the BEIR dataset ...
    """
    folder = Path(folder)
    by_task = {source.task_name.lower(): source for source in MTEB_SOURCES.values()}
    source = by_task.get(task_name.lower()) if task_name else MTEB_SOURCES.get(folder.name.lower())
    needed = [folder / CORPUS_FILE, folder / QUERIES_FILE, *(folder / QRELS_FOLDER / f"{s}.tsv" for s in splits)]
    missing = [path for path in needed if not path.is_file()]
    if not missing:
        return folder
    exists = folder.exists() and (not folder.is_dir() or any(folder.iterdir()))  # an empty folder counts as absent
    if exists or source is None:
        tasks = ", ".join(f"{known.task_name} (folder {name})" for name, known in MTEB_SOURCES.items())
        unknown = f" ({task_name or folder.name!r} is not one of the MTEB tasks this can download: {tasks})"
        lacks = ", ".join(str(path) for path in missing) + ("" if exists else unknown)
        raise FileNotFoundError(f"BEIR folder {folder.resolve()} lacks {lacks}. {download_instructions(folder)}")
    unavailable = [split for split in splits if split not in source.splits]
    if unavailable:
        raise ValueError(
            f"BEIR folder {folder} does not exist, and the {source.task_name} folder built from MTEB's task has the "
            f"splits {list(source.splits)}, not {unavailable}. {download_instructions(folder)}"
        )
    if not download:
        raise FileNotFoundError(
            f"BEIR folder {folder.resolve()} does not exist (not fetched from the Hub while other files are missing). "
            f"{download_instructions(folder)}"
        )
    logger.info("%s does not exist: writing it from MTEB's %s task", folder, source.task_name)
    data = _load_task_splits(source, folder)
    qrels = {
        split: {str(q): {str(d): int(s) for d, s in docs.items()} for q, docs in data[split]["relevant_docs"].items()}
        for split in source.hub_splits
    }
    if "dev" in source.splits and "dev" not in source.hub_splits:
        qrels["train"], qrels["dev"] = _split_dev(qrels["train"])
    judged = {query_id for split_qrels in qrels.values() for query_id in split_qrels}
    queries: dict[str, str] = {}
    for split in source.hub_splits:
        for row in data[split]["queries"]:
            if str(row["id"]) in judged:
                queries.setdefault(str(row["id"]), row["text"])
    corpus = data[source.hub_splits[0]]["corpus"]  # every split of a BEIR task shares one corpus
    scratch = folder.parent / f".{folder.name}.partial-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    (scratch / QRELS_FOLDER).mkdir(parents=True)
    try:
        _write_jsonl(
            scratch / CORPUS_FILE,
            ({"_id": str(row["id"]), "title": row.get("title") or "", "text": row["text"]} for row in corpus),
        )
        _write_jsonl(scratch / QUERIES_FILE, ({"_id": query_id, "text": text} for query_id, text in queries.items()))
        for split in source.splits:
            _write_qrels(scratch / QRELS_FOLDER / f"{split}.tsv", qrels[split])
        try:
            scratch.rename(folder)
        except OSError:
            if not folder.is_dir():  # not another process that finished first
                raise
            logger.info("%s was written meanwhile by another process: keeping that one", folder)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return folder
