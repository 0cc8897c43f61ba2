"""The 7B recipes' data commands on tiny stand-ins in the official layouts (no network here): WikiText-103's raw
file from its zip or the Hub dataset's rows, MS MARCO rows with hard negatives mined from the official TSV files or
converted from the Hub dataset's rows."""

from __future__ import annotations

import zipfile
from pathlib import Path

import datasets
import pytest
import yaml
from datasets import Dataset

from llara_st.data import load_contrastive_dataset, read_adaptation_pairs, read_contrastive_jsonl
from llara_st.data.adaptation import DocumentChunker
from llara_st.pipelines import paper_data
from llara_st.pipelines.paper_data import MSMARCO_HUB, WIKITEXT_HUB, main

CONFIGS_DIR = Path(__file__).resolve().parents[2] / "recipes" / "configs"
WIKI_LINES = [
    " \n",
    " = Tides = \n",
    " \n",
    " The tides rise and fall twice a day as the Moon pulls on the oceans @-@ water . \n",
    " \n",
    " = Honeybees = \n",
    " \n",
    " Honeybees dance on the comb to show the others where the flowers are . \n",
    " \n",
]
TOPICS = ["tide", "bee", "volcano", "glacier", "violin", "cactus", "penguin", "comet"]


def test_wikitext103_from_the_official_zip(tmp_path: Path):
    archive = tmp_path / "wikitext-103-raw-v1.zip"
    with zipfile.ZipFile(archive, "w") as handle:
        handle.writestr("wikitext-103-raw/wiki.train.raw", "".join(WIKI_LINES))
        handle.writestr("wikitext-103-raw/wiki.valid.raw", " = Other = \n")
    written = main(["wikitext103", str(tmp_path / "data" / "wikitext-103-raw"), "--zip", str(archive)])
    assert written == tmp_path / "data" / "wikitext-103-raw" / "wiki.train.raw"
    assert written.read_text(encoding="utf8") == "".join(WIKI_LINES)
    rows = read_adaptation_pairs([written], "wikitext", DocumentChunker(chunk_size=5, unit="words"))
    assert len(rows) > 0


def test_wikitext103_from_the_hub_rows_is_the_same_file(tmp_path: Path, monkeypatch):
    calls = []

    def fake_load_dataset(*args, **kwargs):
        calls.append((args, kwargs))
        return Dataset.from_dict({"text": WIKI_LINES})

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    written = paper_data.write_wikitext103(tmp_path / "wiki")
    assert calls == [(WIKITEXT_HUB, {"split": "train"})]
    assert written.read_text(encoding="utf8") == "".join(WIKI_LINES)


def write_official_msmarco(folder: Path) -> tuple[Path, Path, Path]:
    """collection.tsv, queries.train.tsv and qrels.train.tsv in MS MARCO's layout: passage i names topic i % 8."""
    folder.mkdir()
    # The judged passage i < 8 is short and about its topic; the others name a topic among many other words (BM25
    # ranks them lower, beyond the 5 % margin under which a candidate is taken for an unjudged positive).
    passages = [f"The {TOPICS[i]} {TOPICS[i]}." for i in range(8)] + [
        f"Passage {i} names the {TOPICS[i % 8]} among words on weather, roads, farms, rivers and libraries."
        for i in range(8, 40)
    ]
    (folder / "collection.tsv").write_text("".join(f"{i}\t{text}\n" for i, text in enumerate(passages)))
    (folder / "queries.train.tsv").write_text(
        "".join(f"{1000 + i}\twhat is a {topic}\n" for i, topic in enumerate(TOPICS)) + "9999\tunjudged query\n"
    )
    (folder / "qrels.train.tsv").write_text("".join(f"{1000 + i}\t0\t{i}\t1\n" for i in range(len(TOPICS))))
    return folder / "collection.tsv", folder / "queries.train.tsv", folder / "qrels.train.tsv"


def test_msmarco_hard_negatives_mined_from_the_official_files(tmp_path: Path):
    collection, queries, qrels = write_official_msmarco(tmp_path / "msmarco")
    out = tmp_path / "data" / "msmarco" / "train_hard_negatives.jsonl"
    written = main(
        ["msmarco", str(out), "--collection", str(collection), "--queries", str(queries), "--qrels", str(qrels)]
        + ["--num-negatives", "3", "--range-min", "0", "--range-max", "6"]
    )
    assert written == out
    rows = read_contrastive_jsonl(out)
    assert len(rows) == len(TOPICS)
    for index, row in enumerate(rows):
        assert row["query"] == f"what is a {TOPICS[index]}"
        assert row["pos"] == [f"The {TOPICS[index]} {TOPICS[index]}."]
        assert len(row["neg"]) == 3 and row["pos"][0] not in row["neg"]
        # BM25's top candidates share the query's topic: the other passages about it, never the judged one.
        assert all(TOPICS[index] in negative for negative in row["neg"])
    # The fine-tuning config reads it as it is: 1 positive + 3 negatives per query.
    assert load_contrastive_dataset(out, group_size=4).column_names == [
        "anchor", "positive", "negative_1", "negative_2", "negative_3",
    ]  # fmt: skip


def test_msmarco_from_the_hub_rows(tmp_path: Path, monkeypatch):
    hub_rows = [
        {
            "query_id": "1",
            "query": "what is a tide",
            "positive_passages": [{"docid": "7", "title": "-", "text": "Tides rise and fall."}],
            "negative_passages": [{"docid": str(n), "title": "", "text": f"Negative {n}."} for n in range(20)],
        },
        {"query_id": "2", "query": "no negatives", "positive_passages": [], "negative_passages": []},
    ]
    calls = []

    def fake_load_dataset(*args, **kwargs):
        calls.append((args, kwargs))
        return Dataset.from_list(hub_rows)

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    out = main(["msmarco", str(tmp_path / "rows.jsonl"), "--hub"])
    assert calls == [((MSMARCO_HUB,), {"split": "train"})]
    (row,) = read_contrastive_jsonl(out)
    assert row == {
        "query": "what is a tide",
        "pos": ["Tides rise and fall."],
        "neg": [f"Negative {n}." for n in range(15)],
    }


def test_msmarco_needs_all_three_files_or_the_hub(tmp_path: Path):
    with pytest.raises(SystemExit):
        main(["msmarco", str(tmp_path / "rows.jsonl"), "--collection", "collection.tsv"])
    with pytest.raises(ValueError, match="all three"):
        paper_data.write_msmarco_hard_negatives(tmp_path / "rows.jsonl", "collection.tsv")


def test_the_7b_configs_read_what_the_commands_write():
    adapt = yaml.safe_load((CONFIGS_DIR / "adapt_llama2_7b_8gpu.yaml").read_text())
    finetune = yaml.safe_load((CONFIGS_DIR / "finetune_llama2_7b_msmarco_8gpu.yaml").read_text())
    assert adapt["wikitext_paths"] == [
        "data/wikitext-103-raw/wiki.train.raw"
    ]  # write_wikitext103(data/wikitext-103-raw)
    assert finetune["train_data"] == "data/msmarco/train_hard_negatives.jsonl"
    assert "paper_data" in (CONFIGS_DIR / "finetune_llama2_7b_msmarco_8gpu.yaml").read_text()
    assert "paper_data" in (CONFIGS_DIR / "adapt_llama2_7b_8gpu.yaml").read_text()
