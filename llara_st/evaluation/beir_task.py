"""An MTEB retrieval task read from a local BEIR-layout folder (no Hub call)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mteb.abstasks import AbsTaskRetrieval
from mteb.abstasks.task_metadata import TaskMetadata

from llara_st.data.beir import (
    CORPUS_FILE,
    QRELS_FOLDER,
    QUERIES_FILE,
    beir_split_names,
    check_beir_folder,
    read_beir,
    read_beir_qrels,
)
from llara_st.folders import content_digest

logger = logging.getLogger(__name__)


def beir_folder_revision(folder: str | Path) -> str:
    """A content hash of the corpus, the queries and every qrels file (all splits, so the splits of one folder share
    a result file): the dataset revision MTEB records."""
    folder = Path(folder)
    qrels = [folder / QRELS_FOLDER / f"{split}.tsv" for split in beir_split_names(folder)]
    files = [folder / CORPUS_FILE, folder / QUERIES_FILE, *qrels]
    return content_digest(part for path in files for part in (path.name.encode(), path))[:16]


class BEIRFolderRetrieval(AbsTaskRetrieval):
    """An MTEB retrieval task read from a local BEIR folder (``corpus.jsonl``, ``queries.jsonl``,
    ``qrels/{split}.tsv``), with no Hub call, checked by :func:`llara_st.data.read_beir`; its dataset revision is
    :func:`beir_folder_revision`.

    Args:
        splits: The qrels splits to evaluate (default: every ``qrels/*.tsv``).
        name: The task name in result files (default: the folder's name). Do not reuse an MTEB task's name
            (``SciFact``): leaderboard results must come from MTEB's own task.

    Example::

        >>> import mteb
        >>> from llara_st.evaluation import BEIRFolderRetrieval
        >>> task = BEIRFolderRetrieval(beir_path, splits=["dev"])  # e.g. a download of BEIR's SciFact
        >>> task.metadata.name, task.metadata.eval_splits
        ('scifact', ['dev'])
        >>> result = mteb.evaluate(model, task, cache=mteb.ResultCache("runs/"), show_progress_bar=False)
        >>> 0 <= result.task_results[0].scores["dev"][0]["ndcg_at_10"] <= 1
        True
    """

    folder: Path

    def __new__(
        cls,
        folder: str | Path,
        splits: Sequence[str] | None = None,
        *,
        name: str | None = None,
        description: str | None = None,
        languages: Sequence[str] = ("eng-Latn",),
        **kwargs: Any,
    ) -> BEIRFolderRetrieval:
        # MTEB reads a task's metadata from its class (unload_data() drops instance-level metadata), so each
        # folder gets its own subclass carrying the folder's metadata.
        folder_path = Path(folder).expanduser().resolve()
        splits = [splits] if isinstance(splits, str) else splits
        check_beir_folder(folder_path, splits or [])  # the folder, its corpus and queries, the given splits' qrels
        splits = list(splits) if splits is not None else beir_split_names(folder_path)
        if not splits:
            raise ValueError(f"BEIR folder {folder_path} has no qrels/*.tsv files")
        metadata = TaskMetadata(
            name=name or folder_path.name,
            description=description or f"Local BEIR-layout retrieval task read from {folder_path}",
            dataset={"path": str(folder_path), "revision": beir_folder_revision(folder_path)},
            type="Retrieval",
            category="t2t",
            modalities=["text"],
            eval_splits=splits,
            eval_langs=list(languages),
            main_score="ndcg_at_10",
            bibtex_citation="",
        )
        folder_class = type(cls.__name__, (cls,), {"metadata": metadata, "folder": folder_path})
        return super().__new__(folder_class)

    def __init__(self, folder: str | Path, splits: Sequence[str] | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)  # mteb's AbsTask ignores the options __new__ consumed (name, ...)

    def load_data(self, num_proc: int | None = None, **kwargs: Any) -> None:
        """Read the folder into MTEB's retrieval format (``self.dataset[subset][split]``)."""
        if self.data_loaded:
            return
        self.dataset = {"default": {}}
        for split in self.eval_splits:
            # Checked (ids, texts, qrels against corpus and queries): MTEB would score a mismatch as misses, silently.
            corpus, queries, qrels = read_beir(self.folder, split)
            self.dataset["default"][split] = dict(corpus=corpus, queries=queries, relevant_docs=qrels, top_ranked=None)
            logger.info(
                "Loaded %s split %s: %d documents, %d queries", self.metadata.name, split, len(corpus), len(queries)
            )
        self.data_loaded = True


__all__ = ["BEIRFolderRetrieval", "beir_folder_revision", "beir_split_names", "read_beir_qrels"]
