"""Adaptation pairs: WikiText parsing and detokenisation, chunking, BEIR corpus, the authors' JSONL."""

from __future__ import annotations

import json
import math
import random
import re
from pathlib import Path

import pytest
from transformers import AutoTokenizer

from llara_st.data import (
    NEXT_TEXT_COLUMN,
    TEXT_COLUMN,
    DocumentChunker,
    TextDocument,
    build_adaptation_pairs,
    detokenize_wikitext,
    read_adaptation_pairs,
    read_beir_documents,
    read_text_documents,
    read_wikitext,
    wikitext_heading,
)
from tests.conftest import SENTENCES, build_tokenizer

# A WikiText-2 excerpt in the raw file's own layout (leading and trailing space, CRLF, " @-@ " tokenisation,
# headings "= = Title = ="), with the two formula lines of "Constant k filter" that wrap so as to look like
# headings. The structure tests run on it without ../shared, and on the whole test file when it is there.
_FILLER = (
    " The series received mixed reviews from critics , who praised the acting but found the plot slow . "
    "Ratings rose in the second season , and the show ran for 5 @,@ 000 episodes in 12 countries . "
)
WIKITEXT_EXCERPT = [
    " = Robert Boulter = ",
    " Robert Boulter is an English film , television and theatre actor . He had a guest @-@ starring role on "
    "the television series The Bill in 2000 ." + _FILLER * 6,
    " = = Career = = ",
    " = = = 2000 – 2005 = = = ",
    ' In 2000 Boulter had a guest @-@ starring role on the television series The Bill ; he portrayed " Scott '
    'Parry " in the episode , " In Safe Hands " .' + _FILLER * 6,
    " = = = 2006 – present = = = ",
    " In 2006 Boulter starred in the play Citizenship written by Mark Ravenhill ." + _FILLER * 6,
    " = Constant k filter = ",
    " Constant k filters , also k @-@ type filters , are a type of electronic filter designed using the image "
    "method ." + _FILLER * 6,
    " = = = Prototype transformations = = = ",
    " The presented plots of image impedance , attenuation and phase change correspond to a low @-@ pass "
    "prototype filter section . The prototype has a cut @-@ off frequency of ωc ",
    " = 1 rad / s and a nominal impedance k = ",
    " 1 Ω . This is produced by a filter half @-@ section with inductance L ",
    " = 1 henry and capacitance C = ",
    " 1 farad . This prototype can be impedance scaled and frequency scaled to the desired values ." + _FILLER * 6,
]


@pytest.fixture(scope="session", params=["excerpt", "wikitext-2 test file"])
def wikitext_path(request, tmp_path_factory) -> Path:
    if request.param == "excerpt":
        path = tmp_path_factory.mktemp("wikitext") / "excerpt.raw"
        path.write_bytes("".join(f"{line}\r\n" for line in WIKITEXT_EXCERPT).encode("utf8"))
        return path
    path = request.getfixturevalue("data_dir") / "wikitext2" / "wiki.test.raw"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    return path


@pytest.fixture(scope="session")
def wikitext_articles(wikitext_path: Path) -> list[TextDocument]:
    return read_wikitext(wikitext_path)


# Two formula lines of "Constant k filter" wrapped so that they look like headings; they are text.
WRAPPED_FORMULAS = ("= 1 rad / s and a nominal impedance k =", "= 1 henry and capacitance C =")


@pytest.fixture(scope="session")
def heading_lines(wikitext_path: Path) -> list[str]:
    lines = wikitext_path.read_text(encoding="utf8").splitlines()
    headings = [line.strip() for line in lines if wikitext_heading(line) is not None]
    assert all(formula in headings for formula in WRAPPED_FORMULAS)
    return [line for line in headings if line not in WRAPPED_FORMULAS]


@pytest.fixture(scope="session")
def llama_tokenizer(tmp_path_factory):
    """A Llama-2-style tokenizer built in the tests (tests/conftest.py); no ../shared needed. Its 400 tokens over the
    plain sentences split the long word below into as many chunks as the test counts."""
    folder = tmp_path_factory.mktemp("llama_tokenizer")
    return AutoTokenizer.from_pretrained(build_tokenizer(folder, texts=SENTENCES, vocab_size=400))


# Words a byte-level BPE only ever sees after a space: it learns " retrieval" as one token but must spell
# "retrieval" at the start of a text in pieces, as GPT-2's and SmolLM2's tokenizers do with rarer words.
BPE_WORDS = (
    "retrieval model encodes passages queries dense vectors search large corpora scientific claims evidence"
).split()


@pytest.fixture(scope="session")
def byte_level_bpe_tokenizer(tmp_path_factory):
    """A GPT-2-style byte-level BPE tokenizer trained here on a few sentences (no download)."""
    rng = random.Random(0)
    sentences = ["so " + " ".join(rng.choice(BPE_WORDS) for _ in range(12)) for _ in range(200)]
    folder = tmp_path_factory.mktemp("byte_level_bpe")
    return AutoTokenizer.from_pretrained(build_tokenizer(folder, texts=sentences, vocab_size=400, byte_level=True))


# ---------------------------------------------------------------------------------------------- WikiText


def test_detokenize_wikitext_reads_naturally():
    raw = (
        'In 2004 Boulter played " Craig " in " Teddy \'s Story " ( a two @-@ part episode ) , which cost '
        "$ 10 @,@ 000 or 3 @.@ 5 % of the ships ' budget ; he didn 't mind ."
    )
    assert detokenize_wikitext(raw) == (
        'In 2004 Boulter played "Craig" in "Teddy\'s Story" (a two-part episode), which cost '
        "$10,000 or 3.5% of the ships' budget; he didn't mind."
    )


def test_wikitext_heading_levels():
    assert wikitext_heading(" = Robert Boulter = \n") == (1, "Robert Boulter")
    assert wikitext_heading(" = = Career = = ") == (2, "Career")
    assert wikitext_heading(" = = = 2000 – 2005 = = = ") == (3, "2000 – 2005")
    assert wikitext_heading(" Robert Boulter is an English actor . ") is None
    assert wikitext_heading(" = Qualified for the next round ") is None  # a table legend, not a heading
    assert wikitext_heading(" = = Unbalanced = ") is None


def test_wikitext_articles_are_the_level_one_headings(wikitext_path, wikitext_articles, heading_lines):
    titles = [detokenize_wikitext(title) for level, title in map(wikitext_heading, heading_lines) if level == 1]
    assert [article.title for article in wikitext_articles] == titles
    assert len(wikitext_articles) == {"excerpt.raw": 2, "wiki.test.raw": 60}[wikitext_path.name]
    constant_k = next(article for article in wikitext_articles if article.title == "Constant k filter")
    assert "cut-off frequency of ωc = 1 rad / s and a nominal impedance k = 1 Ω." in constant_k.text


def test_wikitext_text_has_no_headings_or_tokenisation(wikitext_articles):
    for article in wikitext_articles:
        text = article.text
        assert "= =" not in text
        assert not re.search(r" @.@ ", text)
        assert " , " not in text and " . " not in text
        for paragraph in article.paragraphs:
            assert wikitext_heading(paragraph) is None


@pytest.mark.slow
def test_wikitext_rows_no_heading_no_crossing_and_sized(wikitext_path, wikitext_articles, heading_lines):
    chunk_size = 64
    chunker = DocumentChunker(chunk_size=chunk_size, unit="words")
    rows = read_adaptation_pairs(wikitext_path, "wikitext", chunker)
    assert rows.column_names == [TEXT_COLUMN, NEXT_TEXT_COLUMN]

    # Pairs come article by article: the whole dataset is the concatenation of per-article pairs, and each
    # pair is two neighbouring pieces of its own article.
    expected = []
    for article in wikitext_articles:
        pairs = chunker.pairs(article)
        for text, next_text in pairs:
            assert f"{text} {next_text}" in article.text
        expected.extend(pairs)
    assert list(zip(rows[TEXT_COLUMN], rows[NEXT_TEXT_COLUMN], strict=True)) == expected

    headings = {detokenize_wikitext(line) for line in heading_lines}
    for text in list(rows[TEXT_COLUMN]) + list(rows[NEXT_TEXT_COLUMN]):
        assert "= " not in text[:2] and " =" not in text[-2:] and "= =" not in text
        assert not any(heading in text for heading in headings)
        assert 0.75 * chunk_size <= len(text.split()) <= chunk_size

    # Every article of n chunks gives n - 1 pairs, and chunks are nearly full.
    total_words = sum(len(article.text.split()) for article in wikitext_articles)
    assert len(rows) >= total_words / chunk_size - 2 * len(wikitext_articles)
    assert len(rows) <= total_words / (0.75 * chunk_size)


def test_wikitext_token_chunks_fit_the_budget(wikitext_path, llama_tokenizer):
    budget = 89  # the reference text budget: cutoff 128 - BOS " - 19 - 18
    chunker = DocumentChunker(chunk_size=budget, unit="tokens", tokenizer=llama_tokenizer)
    rows = read_adaptation_pairs(wikitext_path, "wikitext", chunker, max_rows=400)
    assert len(rows) == 400 if wikitext_path.name == "wiki.test.raw" else len(rows) >= 10
    lengths = [
        len(llama_tokenizer(text, add_special_tokens=False)["input_ids"])
        for text in list(rows[TEXT_COLUMN]) + list(rows[NEXT_TEXT_COLUMN])
    ]
    assert max(lengths) <= budget
    assert min(lengths) >= 0.75 * budget


def test_wikitext_sections_as_documents(wikitext_path, wikitext_articles):
    sections = read_wikitext(wikitext_path, boundary="section")
    assert len(sections) > len(wikitext_articles)
    assert all(section.title.split(" / ")[0] in {a.title for a in wikitext_articles} for section in sections)
    assert sum(len(s.text.split()) for s in sections) == sum(len(a.text.split()) for a in wikitext_articles)


# ---------------------------------------------------------------------------------------------- chunking


def test_chunks_are_balanced_and_cover_the_document():
    words = [f"w{i}" for i in range(70)]
    chunker = DocumentChunker(chunk_size=64, unit="words")
    chunks = chunker.chunk(" ".join(words))
    assert [len(chunk.split()) for chunk in chunks] == [35, 35]
    assert " ".join(chunks).split() == words


def test_long_document_chunks_stay_within_size():
    words = [f"w{i}" for i in range(1000)]
    chunks = DocumentChunker(chunk_size=64, unit="words").chunk(" ".join(words))
    assert len(chunks) == 16
    assert all(60 <= len(chunk.split()) <= 64 for chunk in chunks)
    assert " ".join(chunks).split() == words


def test_short_documents_are_halved_or_skipped():
    chunker = DocumentChunker(chunk_size=64, unit="words", min_chunk_size=8)
    short = " ".join(f"w{i}" for i in range(30))
    assert chunker.pairs(short) == [(" ".join(f"w{i}" for i in range(15)), " ".join(f"w{i}" for i in range(15, 30)))]
    assert chunker.pairs(" ".join(f"w{i}" for i in range(15))) == []  # halves under min_chunk_size
    assert DocumentChunker(chunk_size=64, split_short_documents=False).pairs(short) == []
    assert chunker.pairs("") == []


def test_token_chunker_splits_a_word_longer_than_a_chunk(llama_tokenizer):
    chunker = DocumentChunker(chunk_size=8, unit="tokens", tokenizer=llama_tokenizer)
    text = "see " + "x" * 60 + " and more words after it"
    chunks = chunker.chunk(text)
    assert "".join(chunk.replace(" ", "") for chunk in chunks) == text.replace(" ", "")
    # Cut between tokens of the whole text; a piece starting mid-word may re-tokenise longer, so the chunker
    # cuts again with less per chunk: a few more chunks, none over the budget.
    fewest = math.ceil(chunker.length(text) / 8)
    assert fewest <= len(chunks) <= fewest + 3
    assert any(len(chunk) > 1 and set(chunk) == {"x"} for chunk in chunks)  # the long word was cut
    assert all(chunker.length(chunk) <= 8 for chunk in chunks)


def test_token_chunks_fit_the_budget_with_a_byte_level_bpe(byte_level_bpe_tokenizer):
    """Inside a text " retrieval" is one token; a chunk starting with it tokenises "retrieval" alone, in pieces.
    The loss tokenises each chunk on its own: the chunk must fit the budget then (it came out 22 > 20)."""
    tokenizer = byte_level_bpe_tokenizer
    assert len(tokenizer("retrieval", add_special_tokens=False)["input_ids"]) > 1
    assert len(tokenizer(" retrieval", add_special_tokens=False)["input_ids"]) == 1
    rng = random.Random(1)
    document = " ".join(rng.choice(BPE_WORDS) for _ in range(400))
    chunker = DocumentChunker(chunk_size=20, unit="tokens", tokenizer=tokenizer)
    chunks = chunker.chunk(document)
    pairs = chunker.pairs(document)
    assert [text for text, _ in pairs] + [pairs[-1][1]] == chunks
    assert " ".join(chunks) == document  # consecutive, nothing dropped
    lengths = [len(ids) for ids in tokenizer(chunks, add_special_tokens=False)["input_ids"]]
    assert max(lengths) <= 20
    assert min(lengths) >= 15  # still balanced and nearly full
    assert len(chunks) <= math.ceil(chunker.length(document) / 20) + 3


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"chunk_size": 1}, "chunk_size"),
        ({"unit": "sentences"}, "unit"),
        ({"unit": "tokens"}, "tokenizer"),
        ({"chunk_size": 16, "min_chunk_size": 17}, "min_chunk_size"),
    ],
)
def test_chunker_rejects_bad_settings(kwargs, message):
    with pytest.raises(ValueError, match=message):
        DocumentChunker(**kwargs)


def test_chunker_rejects_a_non_text_document():
    with pytest.raises(TypeError, match="TextDocument or a string"):
        DocumentChunker().pairs(["a", "list"])


def test_max_rows_caps_the_dataset():
    documents = [" ".join(f"d{d}w{i}" for i in range(200)) for d in range(5)]
    rows = build_adaptation_pairs(documents, DocumentChunker(chunk_size=20), max_rows=7)
    assert len(rows) == 7
    assert rows[0][TEXT_COLUMN].startswith("d0w0 ")


# ---------------------------------------------------------------------------------------------- other sources


@pytest.mark.slow
def test_beir_corpus_rows_on_scifact(data_dir: Path):
    corpus = data_dir / "scifact" / "corpus.jsonl"
    chunker = DocumentChunker(chunk_size=64, unit="words")
    documents = [f"{row['title']} {row['text']}" for row in read_beir_documents(corpus)]
    assert len(documents) == 5183
    first = json.loads(corpus.open(encoding="utf8").readline())
    rows = read_adaptation_pairs(corpus, "beir_corpus", chunker)
    per_document = [len(chunker.pairs(document)) for document in documents]
    assert len(rows) == sum(per_document)
    assert min(per_document) >= 1  # even the shortest abstract (33 words) is halved into one pair
    assert rows[0][TEXT_COLUMN].startswith(first["title"])
    assert all(len(text.split()) <= 64 for text in rows[TEXT_COLUMN])


def test_beir_corpus_rejects_rows_without_text(tmp_path: Path):
    path = tmp_path / "corpus.jsonl"
    path.write_text(json.dumps({"_id": "1", "title": "t"}) + "\n")
    with pytest.raises(ValueError, match="no 'text' field"):
        read_adaptation_pairs(path, "beir_corpus")


def test_beir_corpus_rows_put_the_title_first_and_never_cross_documents(tmp_path: Path):
    path = tmp_path / "corpus.jsonl"
    rows = [
        {"_id": 7, "title": "Tides", "text": " ".join(f"t{i}" for i in range(30))},
        {"_id": "d2", "title": None, "text": " ".join(f"b{i}" for i in range(40))},
    ]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    pairs = read_adaptation_pairs(path, "beir_corpus", DocumentChunker(chunk_size=20, min_chunk_size=4))
    assert pairs[TEXT_COLUMN][0].startswith("Tides t0 ")  # the title opens the first chunk
    assert [text[0] + next_text[0] for text, next_text in zip(*pairs[:].values(), strict=True)] == ["Tt", "bb"]


def test_read_adaptation_pairs_rejects_bad_arguments(tmp_path: Path):
    path = tmp_path / "docs.txt"
    path.write_text("some words\n")
    with pytest.raises(ValueError, match="file_format must be one of .*'markdown'"):
        read_adaptation_pairs(path, "markdown")
    with pytest.raises(ValueError, match="pairs already: pass no chunker"):
        read_adaptation_pairs(path, "llara_jsonl", DocumentChunker())
    with pytest.raises(ValueError, match="max_rows must be positive"):
        read_adaptation_pairs(path, "text", max_rows=0)
    with pytest.raises(FileNotFoundError, match="nowhere.raw"):
        read_adaptation_pairs([path, tmp_path / "nowhere.raw"], "wikitext")


def test_text_file_rows_respect_blank_line_documents(tmp_path: Path):
    path = tmp_path / "docs.txt"
    first = " ".join(f"a{i}" for i in range(40))
    second = " ".join(f"b{i}" for i in range(40))
    path.write_text(f"{first}\n\n{second}\n")
    rows = read_adaptation_pairs(path, "text", DocumentChunker(chunk_size=20))
    assert len(rows) == 2
    for text, next_text in zip(rows[TEXT_COLUMN], rows[NEXT_TEXT_COLUMN], strict=True):
        assert text[0] == next_text[0]  # never an "a" chunk paired with a "b" chunk
    one_document = read_text_documents(path, split_on_blank_lines=False)
    assert len(build_adaptation_pairs(one_document, DocumentChunker(chunk_size=20))) == 3


def test_llara_jsonl_pairs_match_the_authors_rows(fixture_dir: Path):
    path = fixture_dir / "inputs" / "pretrain.jsonl"
    rows = read_adaptation_pairs(path, "llara_jsonl")
    raw = [json.loads(line) for line in path.read_text(encoding="utf8").splitlines() if line.strip()]
    assert rows.column_names == [TEXT_COLUMN, NEXT_TEXT_COLUMN]
    assert rows[TEXT_COLUMN] == [row["output_summarize"] for row in raw]
    assert rows[NEXT_TEXT_COLUMN] == [row["output_predict"] for row in raw]
    assert len(read_adaptation_pairs([path, path], "llara_jsonl", max_rows=8)) == 8


def test_llara_jsonl_pairs_name_bad_rows(tmp_path: Path):
    path = tmp_path / "rows.jsonl"
    path.write_text(json.dumps({"input": "a", "output_summarize": "a"}) + "\n")
    with pytest.raises(ValueError, match=r"rows.jsonl:1: row has no 'output_predict' field"):
        read_adaptation_pairs(path, "llara_jsonl")
    path.write_text("{not json\n")
    with pytest.raises(ValueError, match="rows.jsonl:1 is not valid JSON"):
        read_adaptation_pairs(path, "llara_jsonl")
    with pytest.raises(FileNotFoundError, match="missing.jsonl"):
        read_adaptation_pairs(tmp_path / "missing.jsonl", "llara_jsonl")


def test_llara_jsonl_pairs_across_files_capped_and_checked(tmp_path: Path, caplog):
    def row(text: str, next_text: str, given: str | None = None) -> str:
        return json.dumps(
            {"input": text if given is None else given, "output_summarize": text, "output_predict": next_text}
        )

    first, second = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    first.write_text(row("a1", "a2") + "\n\n" + row("a2", "a3", given="other") + "\n")
    second.write_text(row("b1", "b2") + "\n" + row("b2", "b3") + "\n")
    with caplog.at_level("WARNING", logger="llara_st.data.adaptation"):
        rows = read_adaptation_pairs([first, second], "llara_jsonl", max_rows=3)
    assert rows[:] == {TEXT_COLUMN: ["a1", "a2", "b1"], NEXT_TEXT_COLUMN: ["a2", "a3", "b2"]}
    assert "1 rows have 'input' different" in caplog.text
    first.write_text(row("a1", "a2") + "\n\n" + row("a2", " ") + "\n")  # the empty text is on line 3
    with pytest.raises(ValueError, match=r"a.jsonl:3: 'output_predict' must be a non-empty string"):
        read_adaptation_pairs(first, "llara_jsonl")


def test_text_paths_accept_folders_and_globs(tmp_path: Path):
    """Issue 18.2: a folder was refused ("does not exist or is not a file")."""
    folder = tmp_path / "notes"
    (folder / "sub").mkdir(parents=True)
    documents = {
        "a.txt": " ".join(f"a{i}" for i in range(40)),
        "b.txt": " ".join(f"b{i}" for i in range(40)),
        "sub/c.txt": " ".join(f"c{i}" for i in range(40)),
        "skip.md": " ".join(f"m{i}" for i in range(40)),
    }
    for name, text in documents.items():
        (folder / name).write_text(text + "\n")
    chunker = DocumentChunker(chunk_size=20)
    from_folder = read_adaptation_pairs(folder, "text", chunker)
    assert [text[0] for text in from_folder[TEXT_COLUMN]] == ["a", "b", "c"]  # *.txt, sorted
    listed = [folder / "a.txt", folder / "b.txt", folder / "sub" / "c.txt"]
    assert from_folder[:] == read_adaptation_pairs(listed, "text", chunker)[:]
    from_glob = read_adaptation_pairs(str(folder / "*.txt"), "text", chunker)
    assert [text[0] for text in from_glob[TEXT_COLUMN]] == ["a", "b"]
    recursive = read_adaptation_pairs(str(folder / "**" / "c.txt"), "text", chunker)
    assert [text[0] for text in recursive[TEXT_COLUMN]] == ["c"]
    with pytest.raises(FileNotFoundError, match=r"matches no file"):
        read_adaptation_pairs(str(folder / "*.rst"), "text", chunker)
    with pytest.raises(FileNotFoundError, match=r"holds no file matching '\*.raw'"):
        read_adaptation_pairs(folder, "wikitext", chunker)


def test_a_jsonl_of_texts_without_ids_is_adaptation_input(tmp_path: Path):
    """Issue 18.2: a JSONL of {"text": ...} rows was refused for lacking "_id"; ids are not needed to adapt."""
    path = tmp_path / "texts.jsonl"
    texts = [" ".join(f"t{i}" for i in range(30)), " ".join(f"b{i}" for i in range(40))]
    path.write_text("".join(json.dumps({"text": text}) + "\n" for text in texts))
    pairs = read_adaptation_pairs(path, "beir_corpus", DocumentChunker(chunk_size=20, min_chunk_size=4))
    assert [text[0] + next_text[0] for text, next_text in zip(*pairs[:].values(), strict=True)] == ["tt", "bb"]
    beir_folder = tmp_path / "beir"
    beir_folder.mkdir()
    (beir_folder / "corpus.jsonl").write_text(path.read_text())
    from_folder = read_adaptation_pairs(beir_folder, "beir_corpus", DocumentChunker(chunk_size=20, min_chunk_size=4))
    assert from_folder[:] == pairs[:]
