"""``(text, next_text)`` rows for LLaRA's EBAE/EBAR adaptation (Li et al., 2023, arXiv:2312.15503): neighbouring
chunks of a document from WikiText, text files, BEIR corpora or JSONL of ``{"text"}`` rows, or the authors' pairs."""

from __future__ import annotations

import bisect
import glob
import logging
import math
import os
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, NamedTuple

from datasets import Dataset, concatenate_datasets

from llara_st.data.beir import read_jsonl

logger = logging.getLogger(__name__)

TEXT_COLUMN = "text"
NEXT_TEXT_COLUMN = "next_text"

AdaptationFileFormat = Literal["wikitext", "beir_corpus", "text", "llara_jsonl"]
PathOrPaths = str | os.PathLike | Sequence[str | os.PathLike]


@dataclass
class TextDocument:
    """One document, paragraph by paragraph (chunks are never paired across two); ``title`` (article title,
    ``file#N``) says where it came from and is never part of the text."""

    paragraphs: list[str]
    title: str = ""

    @property
    def text(self) -> str:
        """The paragraphs joined with single spaces (runs of whitespace collapsed)."""
        return " ".join(word for paragraph in self.paragraphs for word in paragraph.split())


_WORD = re.compile(r"\S+")


def _document_text(document: TextDocument | str) -> str:
    if isinstance(document, TextDocument):
        return document.text
    if not isinstance(document, str):
        raise TypeError(f"A document is a TextDocument or a string, got {type(document).__name__}")
    return " ".join(document.split())


class _Span(NamedTuple):  # a piece never cut: a word, or a run of tokens of a very long word
    start: int
    end: int
    cost: int


@dataclass
class DocumentChunker:
    """Splits a document into consecutive chunks of at most ``chunk_size`` words or tokens.

    Chunks are cut at word boundaries and balanced (``L`` units: ``ceil(L / chunk_size)`` chunks of about equal size);
    a token chunk fits ``chunk_size`` also tokenised on its own, as the collator does. A document that fits in one
    chunk is halved into a pair when ``split_short_documents`` and each half holds ``min_chunk_size`` units, else
    skipped (docs/adaptation.md).

    Args:
        chunk_size: Maximum units per chunk (Llama-2's reference text budget at cutoff 128: 89 tokens, ~64 words).
        min_chunk_size: Smallest chunk worth training on; defaults to ``chunk_size // 4`` (at least 1).

    Example::

        >>> from llara_st.data import DocumentChunker, TextDocument
        >>> chunker = DocumentChunker(chunk_size=64, unit="words")
        >>> article = TextDocument([" ".join(f"w{i}" for i in range(40)), " ".join(f"w{i}" for i in range(40, 70))])
        >>> [len(chunk.split()) for chunk in chunker.chunk(article)]  # balanced: not 64 + 6
        [35, 35]
        >>> [len(chunk.split()) for chunk in chunker.pairs("a short abstract of six words " * 6)[0]]  # halved
        [18, 18]
    """

    chunk_size: int = 64
    unit: Literal["words", "tokens"] = "words"
    tokenizer: Any = None
    min_chunk_size: int | None = None
    split_short_documents: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.chunk_size, int) or self.chunk_size < 2:
            raise ValueError(f"chunk_size must be an integer >= 2, got {self.chunk_size!r}")
        if self.unit not in ("words", "tokens"):
            raise ValueError(f"unit must be 'words' or 'tokens', got {self.unit!r}")
        if self.unit == "tokens" and not getattr(self.tokenizer, "is_fast", False):  # None included
            raise ValueError(f"unit='tokens' needs a fast tokenizer (offsets), got {type(self.tokenizer).__name__}")
        if self.min_chunk_size is None:
            self.min_chunk_size = max(1, self.chunk_size // 4)
        if not 1 <= self.min_chunk_size <= self.chunk_size:
            raise ValueError(f"min_chunk_size must be in [1, chunk_size={self.chunk_size}], got {self.min_chunk_size}")

    def length(self, text: str) -> int:
        """Size of ``text`` in this chunker's unit (tokens counted without special tokens)."""
        if self.unit == "words":
            return len(text.split())
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def chunk(self, document: TextDocument | str) -> list[str]:
        """Consecutive chunks of a document; one chunk if it fits, none if it is empty."""
        return self._chunks(_document_text(document), halve_one_chunk=False)

    def pairs(self, document: TextDocument | str) -> list[tuple[str, str]]:
        """``(chunk, next chunk)`` for every pair of neighbouring chunks of one document."""
        chunks = self._chunks(_document_text(document), halve_one_chunk=self.split_short_documents)
        return list(zip(chunks[:-1], chunks[1:], strict=True))

    def _chunks(self, text: str, halve_one_chunk: bool) -> list[str]:
        words = [(m.start(), m.end()) for m in _WORD.finditer(text)]
        token_ends = self._token_ends(text, words) if self.unit == "tokens" else None
        limit = self.chunk_size  # units per chunk as counted inside the document
        while True:
            spans = self._spans(words, token_ends, limit)
            total = sum(span.cost for span in spans)
            if total == 0:
                return []
            num_chunks = math.ceil(total / limit)
            if num_chunks == 1 and halve_one_chunk and total >= 2 * self.min_chunk_size and len(spans) >= 2:
                num_chunks = 2
            # Cutting at word boundaries leaves each chunk a little under its share; when the shortfall adds up to
            # an extra (tiny) last chunk, aim for one chunk more, which gives every chunk some slack.
            while len(groups := self._greedy_groups(spans, num_chunks, limit)) > num_chunks:
                num_chunks += 1
            chunks = [text[group[0].start : group[-1].end] for group in groups]
            if self.unit == "words":
                return chunks
            # The collator tokenises each chunk on its own, where its first word (or the piece of a cut word) may
            # take more tokens than inside the document (a byte-level BPE has " retrieval" as one token but spells
            # "retrieval" in pieces): cut again with that much less per chunk.
            lengths = [len(ids) for ids in self.tokenizer(chunks, add_special_tokens=False)["input_ids"]]
            over = max(lengths) - self.chunk_size
            if over <= 0:
                return chunks
            if limit - over < 1:
                raise ValueError(
                    f"cannot cut the document starting {text[:60]!r} into chunks of at most {self.chunk_size} "
                    f"tokens: a chunk of {limit} tokens inside the document takes {max(lengths)} on its own"
                )
            limit -= over

    def _token_ends(self, text: str, words: list[tuple[int, int]]) -> list[list[int]]:
        """For each word, the end offsets of its tokens as the whole text is tokenised."""
        if not words:
            return []
        # verbose=False: documents may be longer than the model's max length; only offsets are read here.
        encoding = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True, verbose=False)
        word_starts = [start for start, _ in words]
        token_ends: list[list[int]] = [[] for _ in words]
        for token_start, token_end in encoding["offset_mapping"]:
            if token_end <= token_start:
                continue
            # A token belongs to the word holding its last character; a token of whitespace alone (Llama's
            # lone "▁" before digits) belongs to the word after it.
            if text[token_start:token_end].isspace():
                index = min(bisect.bisect_left(word_starts, token_start), len(words) - 1)
            else:
                index = max(0, bisect.bisect_right(word_starts, token_end - 1) - 1)
            token_ends[index].append(token_end)
        return token_ends

    @staticmethod
    def _spans(words: list[tuple[int, int]], token_ends: list[list[int]] | None, limit: int) -> list[_Span]:
        """The uncut pieces of the text: words, and runs of ``limit`` tokens of a word longer than that."""
        if token_ends is None:
            return [_Span(start, end, 1) for start, end in words]
        spans: list[_Span] = []
        for (start, end), ends in zip(words, token_ends, strict=True):
            if len(ends) <= limit:
                spans.append(_Span(start, end, len(ends)))
                continue
            # A "word" longer than a whole chunk (a URL, a formula): cut it between tokens.
            piece_start, previous = start, 0
            for count in range(limit, len(ends), limit):
                cut = ends[count - 1]
                spans.append(_Span(piece_start, cut, count - previous))
                piece_start, previous = cut, count
            spans.append(_Span(piece_start, end, len(ends) - previous))
        return spans

    @staticmethod
    def _greedy_groups(spans: list[_Span], num_chunks: int, limit: int) -> list[list[_Span]]:
        total = sum(span.cost for span in spans)
        target = total / num_chunks
        groups: list[list[_Span]] = [[]]
        group_cost = done = 0  # done: the cost of every span placed so far
        for span in spans:
            boundary = len(groups) * target
            # Cut when the chunk is full, or before this span if that lands nearer the ideal boundary than after it.
            nearer = len(groups) < num_chunks and boundary - done < done + span.cost - boundary
            if groups[-1] and (group_cost + span.cost > limit or nearer):
                groups.append([])
                group_cost = 0
            groups[-1].append(span)
            group_cost += span.cost
            done += span.cost
        return [group for group in groups if group]


_GLOB_CHARACTERS = re.compile(r"[*?\[]")


def expand_paths(paths: PathOrPaths, folder_pattern: str = "*") -> list[Path]:
    """The files named by ``paths``, in order: a file as given, a folder's files matching ``folder_pattern``
    (searched recursively, sorted, hidden files and folders skipped), a glob pattern's matches (sorted; ``**``
    crosses folders). A path that names nothing, a folder or pattern without a matching file, is an error.

    Example::

        >>> from pathlib import Path
        >>> from llara_st.data.adaptation import expand_paths
        >>> for name in ("notes/b.txt", "notes/sub/a.txt", "notes/.hidden.txt", "notes/d.md"):
        ...     Path(name).parent.mkdir(parents=True, exist_ok=True)
        ...     _ = Path(name).write_text("text")
        >>> [path.as_posix() for path in expand_paths(["notes/d.md", "notes"], "*.txt")]
        ['notes/d.md', 'notes/b.txt', 'notes/sub/a.txt']
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    result: list[Path] = []
    for given in paths:
        path = Path(given).expanduser()
        if path.is_file():
            result.append(path)
            continue
        if path.is_dir():
            matches = path.rglob(folder_pattern)
            found = [match for match in matches if not any(p.startswith(".") for p in match.relative_to(path).parts)]
            nothing = f"folder {path} holds no file matching {folder_pattern!r}"
        elif _GLOB_CHARACTERS.search(str(given)):
            found = [Path(match) for match in glob.glob(str(path), recursive=True)]
            nothing = f"the pattern {str(given)!r} matches no file"
        else:
            raise FileNotFoundError(f"{path} does not exist")
        found = sorted(match for match in found if match.is_file())
        if not found:
            raise FileNotFoundError(nothing)
        result.extend(found)
    if not result:
        raise ValueError("No input path given")
    return result


def adaptation_files(paths: PathOrPaths, file_format: AdaptationFileFormat) -> list[Path]:
    """The files :func:`read_adaptation_pairs` reads for ``paths`` in ``file_format`` (:func:`expand_paths`)."""
    if file_format not in _FOLDER_PATTERNS:
        raise ValueError(f"file_format must be one of {list(_FOLDER_PATTERNS)}, got {file_format!r}")
    return expand_paths(paths, _FOLDER_PATTERNS[file_format])


_WIKITEXT_HEADING = re.compile(r"^((?:= )+)(.*?)((?: =)+)$")
_SPACE_BEFORE = re.compile(r" +([,.;:!?%)\]}])")
_WIKITEXT_FIXES = [  # applied in this order
    (re.compile(r" @([-.,])@ "), r"\1"),  # mid @-@ 1950s, 10 @,@ 000, 3 @.@ 5
    (re.compile(r"(\w) (['’])(\w)"), r"\1\2\3"),  # Nero 's
    (re.compile(r"(\w) ’ (s|t|re|ve|ll|d|m)\b"), r"\1’\2"),  # don ’ t
    (re.compile(r"(\ws) '(?=\s|$)"), r"\1'"),  # ships '
    (_SPACE_BEFORE, r"\1"),
    (re.compile(r"([(\[{$£€¥#]) +"), r"\1"),  # space after
]
_QUOTED = re.compile(r'" *([^"]*?) *("|$)')  # quotes paired left to right; a last one alone opens


def detokenize_wikitext(text: str) -> str:
    """WikiText's tokenised style undone: ``mid @-@ 1950s`` → ``mid-1950s``, ``10 @,@ 000`` → ``10,000``, no space
    before ``, . ; : ! ? ) ] %`` or after ``( [ $``, ``Nero 's`` → ``Nero's``, ``don ’ t`` → ``don’t``, ``ships '`` →
    ``ships'``, ``" Craig "`` → ``"Craig"`` (double quotes paired left to right)."""
    for pattern, replacement in _WIKITEXT_FIXES:
        text = pattern.sub(replacement, text)
    if '"' in text:
        text = _SPACE_BEFORE.sub(r"\1", _QUOTED.sub(r'"\1\2', text))
    return " ".join(text.split())


def wikitext_heading(line: str) -> tuple[int, str] | None:
    """``(level, title)`` if ``line`` is a WikiText heading (`` = Title = `` is level 1, an article), else None."""
    match = _WIKITEXT_HEADING.match(line.strip())
    if match is None or len(match.group(1)) != len(match.group(3)):
        return None
    return len(match.group(1)) // 2, match.group(2).strip()


def read_wikitext(path: str | os.PathLike, boundary: Literal["article", "section"] = "article") -> list[TextDocument]:
    """Articles (or sections) of a WikiText-2/-103 ``*.raw`` file, headings removed, text detokenised.

    Level-1 headings (`` = Title = ``) start an article, deeper ones a section; headings are never text. A
    heading-shaped line between a line that stops mid-sentence and one that goes on (a wrapped formula,
    ``= 1 rad / s and a nominal impedance k =``) is text, joined to both into one paragraph.

    Args:
        boundary: ``"article"``: one document per article (chunks may cross its sections); ``"section"``: one per
            section, titled ``"Article / Section"``.
    """
    if boundary not in ("article", "section"):
        raise ValueError(f"boundary must be 'article' or 'section', got {boundary!r}")
    with open(path, encoding="utf8") as handle:  # a missing file or a folder: the OSError names it
        lines = [line.strip() for line in handle if line.strip()]
    documents: list[TextDocument] = []
    article_title = ""
    current: TextDocument | None = None
    continues_paragraph = False  # the line before was a wrapped formula: this line is joined to it
    for index, line in enumerate(lines):
        heading = wikitext_heading(line)
        wrapped = (
            heading is not None
            and 0 < index < len(lines) - 1
            and wikitext_heading(lines[index - 1]) is None
            and lines[index - 1][-1].isalnum()  # the line before stops mid-sentence
            and (lines[index + 1][0].isdigit() or lines[index + 1][0].islower())  # the line after goes on
        )
        if heading is not None and not wrapped:
            level, title = heading[0], detokenize_wikitext(heading[1])
            if level == 1:
                article_title = title
            if level == 1 or boundary == "section":
                current = TextDocument([], title=article_title if level == 1 else f"{article_title} / {title}")
                documents.append(current)
            continue
        if current is None:  # text before the first heading is a document of its own
            current = TextDocument([], title="")
            documents.append(current)
        if wrapped or continues_paragraph:  # a wrapped formula and the line after it: one paragraph
            current.paragraphs[-1] += " " + detokenize_wikitext(line)
        else:
            current.paragraphs.append(detokenize_wikitext(line))
        continues_paragraph = wrapped
    return [document for document in documents if document.paragraphs]


def read_text_documents(path: str | os.PathLike, split_on_blank_lines: bool = True) -> list[TextDocument]:
    """Documents of a plain UTF-8 text file: separated by blank lines, or the whole file as one document."""
    text = Path(path).read_text(encoding="utf8")
    blocks = re.split(r"\n\s*\n", text) if split_on_blank_lines else [text]
    return [
        TextDocument(block.splitlines(), title=f"{Path(path).name}#{number}")
        for number, block in enumerate(blocks, start=1)
        if block.strip()
    ]


def build_adaptation_pairs(
    documents: Iterable[TextDocument | str], chunker: DocumentChunker | None = None, max_rows: int | None = None
) -> Dataset:
    """A ``(text, next_text)`` dataset of neighbouring chunks of each document (never across two), in document
    order, chunked by ``chunker`` (default: 64 words), stopping after ``max_rows`` rows.

    Example::

        >>> from llara_st.data import DocumentChunker, TextDocument, build_adaptation_pairs
        >>> tides = TextDocument(["Tides rise and fall every day.", "The Moon pulls on the oceans."], title="Tides")
        >>> rows = build_adaptation_pairs([tides, "Bees."], DocumentChunker(chunk_size=6, unit="words"))
        >>> rows[:]  # a one-word document has no pair
        {'text': ['Tides rise and fall every day.'], 'next_text': ['The Moon pulls on the oceans.']}
    """
    if max_rows is not None and max_rows < 1:
        raise ValueError(f"max_rows must be positive or None, got {max_rows}")
    chunker = chunker or DocumentChunker()
    rows: list[tuple[str, str]] = []
    skipped = 0
    for document in documents:
        pairs = chunker.pairs(document)
        skipped += not pairs
        rows.extend(pairs)
        if max_rows is not None and len(rows) >= max_rows:
            del rows[max_rows:]
            break
    if skipped:
        logger.info("Skipped %d documents too short for a (text, next_text) pair", skipped)
    return Dataset.from_dict({TEXT_COLUMN: [text for text, _ in rows], NEXT_TEXT_COLUMN: [text for _, text in rows]})


def read_adaptation_pairs(
    paths: PathOrPaths,
    file_format: AdaptationFileFormat,
    chunker: DocumentChunker | None = None,
    max_rows: int | None = None,
) -> Dataset:
    """``(text, next_text)`` rows from files of one format, in file order, chunked by ``chunker`` (default: 64
    words) and paired within a document (:func:`build_adaptation_pairs`).

    Args:
        paths: Files, folders or glob patterns (:func:`expand_paths`); a folder gives its files of the format.
        file_format: ``"wikitext"`` (``*.raw``, a document per article), ``"beir_corpus"`` (JSONL of ``{"text"}``
            rows, title first), ``"text"`` (``*.txt``, documents separated by blank lines) or ``"llara_jsonl"`` (the
            authors' pairs, no chunker: ``output_summarize`` and ``output_predict``; docs/adaptation.md).

    Example::

        >>> from pathlib import Path
        >>> from llara_st.data import DocumentChunker, read_adaptation_pairs
        >>> article = " The tides rise and fall with the pull of the Moon on the ocean water . " * 3
        >>> lines = [" = Tides = ", article, " = = Spring tides = = ", article]  # WikiText's own layout
        >>> _ = Path("wiki.raw").write_text("\\n".join(lines))
        >>> rows = read_adaptation_pairs("wiki.raw", "wikitext", DocumentChunker(chunk_size=64))
        >>> len(rows), rows[0]["text"][-24:]  # 90 words: one pair; headings are never text, " ." is undone
        (1, 'Moon on the ocean water.')
    """
    files = adaptation_files(paths, file_format)
    if file_format != "llara_jsonl":  # build_adaptation_pairs checks max_rows before the first file is read
        read = _DOCUMENT_READERS[file_format]
        return build_adaptation_pairs((document for path in files for document in read(path)), chunker, max_rows)
    if chunker is not None:
        raise ValueError("the authors' rows (file_format='llara_jsonl') are pairs already: pass no chunker")
    if max_rows is not None and max_rows < 1:
        raise ValueError(f"max_rows must be positive or None, got {max_rows}")
    parts: list[Dataset] = []
    for path in files:
        parts.append(read_jsonl(path, _LLARA_TEXTS, optional_texts=["input"], check=_blank_llara_text))
        if max_rows is not None and sum(map(len, parts)) >= max_rows:
            break
    rows = concatenate_datasets(parts)
    if max_rows is not None:
        rows = rows.select(range(min(len(rows), max_rows)))
    inputs, texts = rows["input"], rows["output_summarize"]
    differing = sum(bool(given) and given != text for given, text in zip(inputs, texts, strict=True))
    if differing:
        logger.warning("%d rows have 'input' different from 'output_summarize', read as input and target", differing)
    columns = {"output_summarize": TEXT_COLUMN, "output_predict": NEXT_TEXT_COLUMN}
    return rows.select_columns(list(columns)).rename_columns(columns)


def _beir_corpus_documents(path: Path) -> Iterator[TextDocument]:
    # Adaptation needs no ids: a JSONL of {"text"} rows (title optional) is read as a corpus.jsonl is.
    rows = read_jsonl(path, ["text"], optional_texts=["title"])
    for number, row in enumerate(rows, start=1):
        yield TextDocument([row["title"], row["text"]], title=f"{path.name}#{number}")


_DOCUMENT_READERS = {"wikitext": read_wikitext, "beir_corpus": _beir_corpus_documents, "text": read_text_documents}
# What a folder given for each format contributes (a BEIR folder: its corpus.jsonl).
_FOLDER_PATTERNS = {"wikitext": "*.raw", "beir_corpus": "corpus.jsonl", "text": "*.txt", "llara_jsonl": "*.jsonl"}
_LLARA_TEXTS = ["output_summarize", "output_predict"]


def _blank_llara_text(row: dict[str, str]) -> str | None:
    return next((f"{key!r} must be a non-empty string" for key in _LLARA_TEXTS if not row[key].strip()), None)
