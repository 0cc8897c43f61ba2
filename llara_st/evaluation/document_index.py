"""Search your own documents: a :class:`FaissIndex` of a model's document embeddings, with the documents and a
record of the model, saved as one folder."""

from __future__ import annotations

import json
import logging
import os
import shutil
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from sentence_transformers import SentenceTransformer

from llara_st.data.beir import jsonl_rows
from llara_st.evaluation.faiss_index import FaissIndex, SearchParameters, read_json
from llara_st.evaluation.fingerprint import model_fingerprint
from llara_st.folders import replace_folder
from llara_st.model import load

logger = logging.getLogger(__name__)

CONFIG_FILE = "document_index.json"
DOCUMENTS_FILE = "documents.jsonl"
FAISS_FOLDER = "faiss"
_FORMAT = "llara-st document index"
_FORMAT_VERSION = 1


class ModelMismatchError(ValueError):
    """The model given to search or grow an index is not the one its documents were embedded with."""


@dataclass
class SearchHit:
    """One document found for a query, best first (``rank`` 1)."""

    rank: int
    id: str
    score: float
    title: str
    text: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def is_document_index(folder: str | os.PathLike) -> bool:
    """Whether ``folder`` holds an index written by :meth:`DocumentIndex.save`."""
    return (Path(folder) / CONFIG_FILE).is_file()


class DocumentIndex:
    """Documents embedded by one model (``encode_document`` of ``title + " " + text``) in a :class:`FaissIndex`,
    with their texts and the model's fingerprint; queries go through ``encode_query``, scores are cosine
    similarities. An index that needs training (IVF, PQ, SQ) is trained on the first documents added. The saved
    folder records the model: another model is refused with :class:`ModelMismatchError`.

    Args:
        model_name_or_path: The model's location to record (loaded again by :meth:`load`).

    Example::

        >>> from llara_st.evaluation import DocumentIndex
        >>> index = DocumentIndex(model, "Flat", model_name_or_path=llara_path)  # model: llara_st.load(llara_path)
        >>> documents = {"tides": "The Moon pulls the oceans.", "bees": "Bees dance on the comb."}
        >>> index.add(documents, show_progress_bar=False)
        2
        >>> _ = index.save("my-index")
        >>> index = DocumentIndex.load("my-index")  # loads the recorded model; DocumentIndex.load(path, model) too
        >>> hits = index.search("The Moon pulls the oceans.", k=2)[0]
        >>> [(hit.rank, hit.id) for hit in hits]
        [(1, 'tides'), (2, 'bees')]
    """

    def __init__(
        self,
        model: SentenceTransformer,
        factory_string: str = "Flat",
        *,
        model_name_or_path: str | os.PathLike | None = None,
    ) -> None:
        self.model = model
        self.factory_string = factory_string
        self.model_name_or_path = None if model_name_or_path is None else model_location(model_name_or_path)
        self.fingerprint = model_fingerprint(model)
        self.faiss: FaissIndex | None = None
        self._documents: dict[str, tuple[str, str]] = {}  # id -> (title, text), in the faiss index's order

    def __len__(self) -> int:
        return len(self._documents)

    def __repr__(self) -> str:
        return f"DocumentIndex({self.factory_string!r}, documents={len(self)}, model={self.model_name_or_path!r})"

    @property
    def ids(self) -> list[str]:
        return [] if self.faiss is None else self.faiss.ids

    def document(self, document_id: str) -> dict[str, str]:
        """``{"id", "title", "text"}`` of an indexed document."""
        title, text = self._documents[document_id]
        return {"id": document_id, "title": title, "text": text}

    def add(
        self,
        documents: Iterable[Mapping[str, Any]] | Mapping[str, str],
        *,
        batch_size: int = 32,
        show_progress_bar: bool | None = None,
    ) -> int:
        """Embed and add ``documents``, rows ``{"id", "text", "title"?}`` or ``{id: text}``; returns how many were
        new. A document indexed already with the same title and text is skipped, with another text refused."""
        if isinstance(documents, Mapping):
            rows = [(document_id, "", text) for document_id, text in documents.items()]
        else:
            rows = [(row["id"], row.get("title") or "", row["text"]) for row in documents]
        new, seen = [], set()
        for document_id, title, text in rows:
            if not isinstance(document_id, str) or not isinstance(text, str) or not isinstance(title, str):
                raise TypeError(f"ids, titles and texts must be strings, got {(document_id, title, text)!r:.120}")
            if document_id in seen:
                raise ValueError(f"document id {document_id!r} is given twice")
            seen.add(document_id)
            indexed = self._documents.get(document_id)
            if indexed is None:
                new.append((document_id, title, text))
            elif indexed != (title, text):
                raise ValueError(f"document {document_id!r} is indexed already with another text: build a new index")
        if len(new) < len(rows):
            logger.info("%d of %d documents are indexed already", len(rows) - len(new), len(rows))
        if not new:
            return 0
        embeddings = self.model.encode_document(
            [f"{title} {text}".strip() for _, title, text in new],
            batch_size=batch_size,
            show_progress_bar=show_progress_bar,
            convert_to_numpy=True,
        )
        new_ids = [document_id for document_id, _, _ in new]
        if self.faiss is None:  # trained (IVF, PQ, SQ) on the first documents
            self.faiss = FaissIndex.build(embeddings, new_ids, self.factory_string, normalize=True)
        else:
            self.faiss.add(embeddings, new_ids)
        self._documents.update((document_id, (title, text)) for document_id, title, text in new)
        return len(new)

    def search(
        self,
        queries: str | Sequence[str],
        k: int = 10,
        *,
        search_parameters: SearchParameters | None = None,
        batch_size: int = 32,
        show_progress_bar: bool | None = False,
    ) -> list[list[SearchHit]]:
        """The ``k`` best documents for each query, best first (fewer if the index finds fewer);
        ``search_parameters`` (e.g. ``{"nprobe": 16}``) stay set for later searches."""
        if self.faiss is None:
            raise RuntimeError("The index holds no documents: add() some before searching")
        queries = [queries] if isinstance(queries, str) else list(queries)
        if search_parameters:
            self.faiss.set_search_parameters(search_parameters)
        embeddings = self.model.encode_query(
            queries, batch_size=batch_size, show_progress_bar=show_progress_bar, convert_to_numpy=True
        )
        scores, ids = self.faiss.search(embeddings, k)
        return [
            [
                SearchHit(rank, document_id, score, *self._documents[document_id])
                # a row's ids stop where the index found no more hits (IVF); its scores go on with -inf
                for rank, (document_id, score) in enumerate(zip(row_ids, row_scores.tolist(), strict=False), start=1)
            ]
            for row_ids, row_scores in zip(ids, scores, strict=True)
        ]

    def save(self, folder: str | os.PathLike) -> Path:
        """Write the index to ``folder`` (absent, empty, or an index, which is replaced), written beside it first."""
        if self.faiss is None:
            raise RuntimeError("The index holds no documents: add() some before saving")
        folder = Path(folder).expanduser()
        check_index_destination(folder)
        folder.parent.mkdir(parents=True, exist_ok=True)
        staging = folder.parent / f".{folder.name}.writing-{uuid.uuid4().hex[:12]}"
        staging.mkdir()  # not mkdtemp, whose folder would stay private to the user
        try:
            self.faiss.save(staging / FAISS_FOLDER)
            with (staging / DOCUMENTS_FILE).open("w", encoding="utf8") as handle:
                for document_id, (title, text) in self._documents.items():
                    handle.write(json.dumps({"id": document_id, "title": title, "text": text}) + "\n")
            config = {
                "format": _FORMAT,
                "format_version": _FORMAT_VERSION,
                "model": {"name_or_path": self.model_name_or_path, "fingerprint": self.fingerprint},
                "factory_string": self.factory_string,
                "documents": len(self),
            }
            (staging / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n", encoding="utf8")
            replace_folder(staging, folder)  # an old index goes only once the new one is in place
        finally:
            if staging.exists():
                shutil.rmtree(staging)
        return folder

    @staticmethod
    def read_config(folder: str | os.PathLike) -> dict[str, Any]:
        """The ``document_index.json`` of a saved index."""
        folder = Path(folder).expanduser()
        if not is_document_index(folder):
            raise FileNotFoundError(f"{folder} is not a document index (no {CONFIG_FILE}); build one first")
        config = read_json(folder / CONFIG_FILE)
        if not isinstance(config, dict) or config.get("format") != _FORMAT:
            raise ValueError(f"{folder / CONFIG_FILE} is not a {_FORMAT} config")
        if config.get("format_version") != _FORMAT_VERSION:
            raise ValueError(f"{folder} has format version {config.get('format_version')}, not {_FORMAT_VERSION}")
        return config

    @classmethod
    def load(
        cls, folder: str | os.PathLike, model: SentenceTransformer | None = None, **load_kwargs: Any
    ) -> DocumentIndex:
        """Read a saved index with ``model`` (refused unless it is the recorded one), by default the recorded model
        loaded with :func:`llara_st.load` (``load_kwargs``: ``device``, ...)."""
        folder = Path(folder).expanduser()
        config = cls.read_config(folder)
        recorded = config["model"]
        if model is None:
            if not recorded.get("name_or_path"):
                raise ValueError(f"{folder} does not record its model's location: pass the model")
            model = load(recorded["name_or_path"], **load_kwargs)
        index = cls(model, config["factory_string"], model_name_or_path=recorded.get("name_or_path"))
        if index.fingerprint != recorded["fingerprint"]:
            raise ModelMismatchError(
                f"{folder} was built with {recorded.get('name_or_path')!r} (fingerprint {recorded['fingerprint']}), "
                f"not this model ({index.fingerprint}): search with that model, or build a new index"
            )
        index.faiss = FaissIndex.load(folder / FAISS_FOLDER)
        index._documents = {
            row.get("id"): (row.get("title") or "", row["text"]) for _, row in jsonl_rows(folder / DOCUMENTS_FILE)
        }
        if list(index._documents) != index.faiss.ids:
            ids = len(index.faiss.ids)
            raise ValueError(f"{folder / DOCUMENTS_FILE} does not list the faiss index's {ids} ids in its order")
        return index


def model_location(model_name_or_path: str | os.PathLike) -> str:
    """A local folder as an absolute path, a Hub id as given."""
    path = Path(model_name_or_path).expanduser()
    return str(path.resolve()) if path.exists() else str(model_name_or_path)


def check_index_destination(folder: Path) -> None:
    """Refuse to write an index over a file or over a non-empty folder that is not an index."""
    if folder.exists() and not folder.is_dir():
        raise FileExistsError(f"{folder} is a file, not an index folder")
    if folder.is_dir() and any(folder.iterdir()) and not is_document_index(folder):
        raise FileExistsError(f"{folder} is not empty and not a document index: choose another --index folder")


__all__ = [
    "DocumentIndex",
    "ModelMismatchError",
    "SearchHit",
    "check_index_destination",
    "is_document_index",
    "model_location",
]
