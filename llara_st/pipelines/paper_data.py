"""Write the data of the paper-scale recipes (``recipes/configs/*7b*``): WikiText-103 and MS MARCO hard negatives.

Where the configs read them, from the official files or a Hub dataset; the commands: docs/reproduction.md."""

from __future__ import annotations

import argparse
import csv
import logging
import os
import random
import shutil
import sys
import zipfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from llara_st.data.contrastive import beir_examples, write_contrastive_jsonl
from llara_st.data.mining import mine_hard_negatives_from_qrels

logger = logging.getLogger(__name__)

WIKITEXT_HUB = ("Salesforce/wikitext", "wikitext-103-raw-v1")
WIKITEXT_ZIP_MEMBER = "wikitext-103-raw/wiki.train.raw"
MSMARCO_HUB = "Tevatron/msmarco-passage"
MSMARCO_FILES_URL = "https://microsoft.github.io/msmarco/Datasets.html (collectionandqueries.tar.gz, qrels.train.tsv)"


def _replace_atomically(path: Path, write: Any) -> None:
    """``write(partial path)``, then moved to ``path``: an interrupted run leaves no half file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial-{os.getpid()}")
    try:
        write(partial)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


def write_wikitext103(out_dir: str | os.PathLike, zip_path: str | os.PathLike | None = None) -> Path:
    """``out_dir/wiki.train.raw`` (``data/wikitext-103-raw`` for the 7B config), WikiText-103's raw training text
    from the official ``zip_path`` or, if None, from the Hub dataset :data:`WIKITEXT_HUB`, whose ``text`` rows are
    the file's lines (newlines included): the same file."""
    target = Path(out_dir) / "wiki.train.raw"

    def write(partial: Path) -> None:
        if zip_path is not None:
            with zipfile.ZipFile(zip_path) as archive, archive.open(WIKITEXT_ZIP_MEMBER) as source:
                with partial.open("wb") as handle:
                    shutil.copyfileobj(source, handle)
            return
        from datasets import load_dataset

        rows = load_dataset(*WIKITEXT_HUB, split="train")
        with partial.open("w", encoding="utf8", newline="") as handle:
            handle.writelines(rows["text"])

    _replace_atomically(target, write)
    logger.info("Wrote %s", target)
    return target


def _read_tsv(path: str | os.PathLike) -> Iterable[list[str]]:
    with open(path, encoding="utf8", newline="") as handle:
        yield from csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)


def read_msmarco_files(
    collection: str | os.PathLike,
    queries: str | os.PathLike,
    qrels: str | os.PathLike,
    max_queries: int | None = None,
    seed: int = 42,
) -> tuple[dict[str, str], dict[str, str], dict[str, dict[str, int]]]:
    """``corpus, queries, qrels`` (as :func:`llara_st.data.load_beir` returns them) from the official MS MARCO
    ``collection.tsv``, ``queries.train.tsv`` and ``qrels.train.tsv`` (TREC layout); ``max_queries`` keeps a
    seeded sample of the judged queries (all ~503k by default)."""
    judged: dict[str, dict[str, int]] = {}
    for query_id, _, passage_id, score in _read_tsv(qrels):
        judged.setdefault(query_id, {})[passage_id] = int(score)
    if max_queries is not None and max_queries < len(judged):
        kept = random.Random(seed).sample(sorted(judged), max_queries)
        judged = {query_id: judged[query_id] for query_id in sorted(kept)}
    query_texts = {row[0]: row[1] for row in _read_tsv(queries) if row[0] in judged}
    corpus = {row[0]: row[1] for row in _read_tsv(collection)}
    missing = [query_id for query_id in judged if query_id not in query_texts]
    if missing:
        raise ValueError(f"{len(missing)} judged queries of {qrels} are not in {queries} (e.g. {missing[0]})")
    return corpus, query_texts, judged


def _passage_text(passage: Mapping[str, Any]) -> str:
    title = (passage.get("title") or "").strip()
    return f"{title} {passage['text']}" if title and title != "-" else passage["text"]


def hub_msmarco_examples(rows: Iterable[Mapping[str, Any]], num_negatives: int = 15) -> list[dict[str, Any]]:
    """``{"query", "pos", "neg"}`` rows (the first ``num_negatives`` negatives) from ``Tevatron/msmarco-passage``'s."""
    examples = []
    for row in rows:
        positives = [_passage_text(passage) for passage in row["positive_passages"]]
        negatives = [_passage_text(passage) for passage in row["negative_passages"]][:num_negatives]
        if positives and negatives:
            examples.append({"query": row["query"], "pos": positives, "neg": negatives})
    return examples


def write_msmarco_hard_negatives(
    out: str | os.PathLike,
    collection: str | os.PathLike | None = None,
    queries: str | os.PathLike | None = None,
    qrels: str | os.PathLike | None = None,
    *,
    retriever: Any = "bm25",
    num_negatives: int = 15,
    range_min: int = 10,
    range_max: int = 200,
    relative_margin: float | None = 0.05,
    max_queries: int | None = None,
    seed: int = 42,
) -> Path:
    """MS MARCO training rows with hard negatives, in the authors' ``{"query", "pos", "neg"}`` JSONL at ``out``
    (``data/msmarco/train_hard_negatives.jsonl`` for the 7B config). With the three official files, mined by
    :func:`llara_st.data.mine_hard_negatives_from_qrels` (``num_negatives`` from ranks ``[range_min, range_max)``
    of ``retriever``, ``"bm25"`` or a sentence-transformers model; the reference took 15 from the top 200);
    without them, converted from the Hub dataset :data:`MSMARCO_HUB` (BM25 negatives)."""
    given = [path is not None for path in (collection, queries, qrels)]
    if any(given) and not all(given):
        raise ValueError("Mining needs all three MS MARCO files: collection, queries and qrels")
    if all(given):
        corpus, query_texts, judged = read_msmarco_files(collection, queries, qrels, max_queries, seed)
        logger.info("Mining %d negatives for %d queries over %d passages", num_negatives, len(judged), len(corpus))
        negatives = mine_hard_negatives_from_qrels(
            corpus,
            query_texts,
            judged,
            retriever,
            num_negatives=num_negatives,
            range_min=range_min,
            range_max=range_max,
            relative_margin=relative_margin,
            seed=seed,
        )
        examples = [row for row in beir_examples(corpus, query_texts, judged, negatives) if row["neg"]]
    else:
        from datasets import load_dataset

        rows = load_dataset(MSMARCO_HUB, split="train")
        if max_queries is not None and max_queries < len(rows):
            rows = rows.shuffle(seed=seed).select(range(max_queries))
        examples = hub_msmarco_examples(rows, num_negatives)
    _replace_atomically(Path(out), lambda partial: write_contrastive_jsonl(examples, partial))
    logger.info("Wrote %d rows to %s", len(examples), out)
    return Path(out)


def main(argv: Sequence[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(prog="python -m llara_st.pipelines.paper_data", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    wikitext = commands.add_parser("wikitext103", help="write <out_dir>/wiki.train.raw")
    wikitext.add_argument("out_dir")
    wikitext.add_argument("--zip", help="the official wikitext-103-raw-v1.zip (default: the Hub dataset)")
    msmarco = commands.add_parser("msmarco", help="write {query,pos,neg} rows with hard negatives")
    msmarco.add_argument("out")
    msmarco.add_argument("--collection", help="collection.tsv")
    msmarco.add_argument("--queries", help="queries.train.tsv")
    msmarco.add_argument("--qrels", help="qrels.train.tsv")
    msmarco.add_argument("--hub", action="store_true", help=f"convert {MSMARCO_HUB} instead of mining")
    msmarco.add_argument("--retriever", default="bm25", help="'bm25' or a sentence-transformers model to mine with")
    integers = ("num_negatives", "range_min", "range_max", "max_queries", "seed")
    for name in integers:  # unset: write_msmarco_hard_negatives's default
        msmarco.add_argument(f"--{name.replace('_', '-')}", type=int, default=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    if args.command == "wikitext103":
        return write_wikitext103(args.out_dir, args.zip)
    files = (args.collection, args.queries, args.qrels)
    if (args.hub and any(files)) or (not args.hub and not all(files)):
        parser.error(
            f"give either --collection, --queries and --qrels (official files from {MSMARCO_FILES_URL}) or --hub"
        )
    retriever: Any = args.retriever
    if retriever != "bm25":
        import llara_st

        retriever = llara_st.load(retriever)  # a LLaRA folder (its query/passage templates) or any ST model
    options = {name: value for name, value in vars(args).items() if name in integers}
    return write_msmarco_hard_negatives(args.out, *files, retriever=retriever, **options)


if __name__ == "__main__":
    print(main(sys.argv[1:]))
