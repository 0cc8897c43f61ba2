"""A smaller corpus for cheaper evaluation: the relevant documents plus a seeded sample of the others. Its scores
are higher than the full corpus's: a proxy for comparing models, not a figure to report."""

from __future__ import annotations

import os
import random
import shutil
from collections.abc import Iterable, Mapping
from pathlib import Path

from llara_st.data.beir import CORPUS_FILE, QRELS_FOLDER, QUERIES_FILE, read_beir_documents, read_beir_qrels

Qrels = Mapping[str, Mapping[str, int]]


def sub_corpus_ids(
    doc_ids: Iterable[str], qrels: Qrels | Iterable[Qrels], size: int | None, seed: int, min_relevance: int = 1
) -> set[str]:
    """The documents of a sub-corpus of ``size``: every one with a qrels score ``>= min_relevance`` in any of the
    ``qrels`` splits (even beyond ``size``), then a sample of the others drawn with ``seed``. ``size`` None keeps all.

    Args:
        qrels: One split's ``{query_id: {doc_id: score}}``, or several (e.g. dev and test).

    Example::

        >>> from llara_st.evaluation import sub_corpus_ids
        >>> dev, test = {"q1": {"d1": 1}}, {"q2": {"d2": 2, "d3": 0}}
        >>> kept = sub_corpus_ids([f"d{i}" for i in range(10)], [dev, test], size=4, seed=0)
        >>> len(kept), {"d1", "d2"} <= kept
        (4, True)
    """
    doc_ids = set(doc_ids)
    splits = [qrels] if isinstance(qrels, Mapping) else list(qrels)
    if size is None or size >= len(doc_ids):
        return doc_ids
    relevant = {
        doc for split in splits for judged in split.values() for doc, score in judged.items() if score >= min_relevance
    }
    others = sorted(doc_ids - relevant)
    return relevant | set(random.Random(seed).sample(others, max(0, min(len(others), size - len(relevant)))))


def write_sub_corpus(
    folder: str | os.PathLike,
    splits: str | Iterable[str],
    size: int | None,
    seed: int,
    out: str | os.PathLike,
    max_queries: int | None = None,
) -> Path:
    """A BEIR folder at ``out`` with the documents of :func:`sub_corpus_ids` for the qrels ``splits``, the queries,
    and those splits' qrels without the (score-0) judgements of documents left out; an ``out`` already written is
    returned as it is. With ``max_queries``, each split keeps that many of its judged queries (drawn with ``seed``),
    for collections such as NFCorpus whose queries judge most of the corpus relevant.

    Example::

        >>> from llara_st.evaluation import write_sub_corpus
        >>> out = write_sub_corpus(beir_path, ["dev", "test"], size=3, seed=0, out="sub")
        >>> len((out / "corpus.jsonl").read_text().splitlines())
        3
    """
    folder, out = Path(folder), Path(out)
    splits = [splits] if isinstance(splits, str) else list(splits)
    qrels_files = [Path(QRELS_FOLDER) / f"{split}.tsv" for split in splits]
    if (out / CORPUS_FILE).is_file() and all((out / name).is_file() for name in qrels_files):
        return out
    ids = list(read_beir_documents(folder / CORPUS_FILE)["id"])  # checked as everywhere; one per non-blank line
    with (folder / CORPUS_FILE).open(encoding="utf8") as handle:
        lines = [line.rstrip("\n") for line in handle if line.strip()]
    qrels = [read_beir_qrels(folder / name) for name in qrels_files]
    if max_queries is not None:
        qrels = [
            {query: split[query] for query in random.Random(seed).sample(sorted(split), min(max_queries, len(split)))}
            for split in qrels
        ]
    keep = sub_corpus_ids(ids, qrels, size, seed)
    (out / QRELS_FOLDER).mkdir(parents=True, exist_ok=True)
    shutil.copy(folder / QUERIES_FILE, out / QUERIES_FILE)
    for name, judged in zip(qrels_files, qrels, strict=True):
        # The header, and the judgements of kept queries and documents (a score-0 document may be left out).
        header, *judgements = (folder / name).read_text(encoding="utf8").splitlines(keepends=True)
        kept = [
            line
            for line in judgements
            if line.split("\t")[1:2] and line.split("\t")[0].strip() in judged and line.split("\t")[1].strip() in keep
        ]
        (out / name).write_text(header + "".join(kept), encoding="utf8")
    partial = out / f"{CORPUS_FILE}.partial"
    partial.write_text("".join(line + "\n" for line, doc in zip(lines, ids, strict=True) if doc in keep), "utf8")
    partial.replace(out / CORPUS_FILE)
    return out
