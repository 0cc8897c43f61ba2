"""A faiss inner-product index, described by a faiss factory string, that keeps the corpus ids; its MTEB backend."""

from __future__ import annotations

import json
import math
import re
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

SearchParameters = str | Mapping[str, float]
_INDEX_FILE, _IDS_FILE, _CONFIG_FILE = "index.faiss", "ids.json", "faiss_index_config.json"
_CONFIG_KEYS = {"dim", "factory_string", "search_parameters", "normalize", "ntotal"}
# faiss errors read "Error in <C++ signature> at <file>:<line>: <message>"; users need only the message.
_FAISS_ERROR_PREFIX = re.compile(r"^Error in .*? at \S+:\d+: (Error: '.*?' failed: )?", re.DOTALL)


def _import_faiss() -> Any:
    try:
        import faiss
    except ImportError:
        raise ModuleNotFoundError("FaissIndex needs faiss: pip install 'llara-st[faiss]'", name="faiss") from None
    return faiss


@contextmanager
def _faiss_errors(what: str) -> Iterator[None]:
    """Re-raise faiss's RuntimeError as a ValueError that says what was attempted and faiss's reason."""
    try:
        yield
    except RuntimeError as error:
        raise ValueError(f"{what}: {_FAISS_ERROR_PREFIX.sub('', str(error)).strip()}") from None


def _as_rows(embeddings: Any, name: str) -> np.ndarray:
    if hasattr(embeddings, "detach"):  # a torch tensor
        embeddings = embeddings.detach().float().cpu().numpy()
    array = np.asarray(embeddings)
    if array.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array (rows × dim), got shape {array.shape}")
    if not np.issubdtype(array.dtype, np.floating):
        raise TypeError(f"{name} must hold floats, got dtype {array.dtype}")
    return array


def default_nlist(num_vectors: int) -> int:
    """faiss's rule of thumb for ``IVF{nlist}``: about 4·√n lists, at least 1, with ≥ 39 points each."""
    return max(1, min(int(4 * math.sqrt(num_vectors)), num_vectors // 39))


class FaissIndex:
    """Maximum-inner-product search with any ``faiss.index_factory`` index (``index.index``, on the CPU), returning
    corpus ids and scores (cosine similarities for L2-normalised embeddings); thread-safe. Factory strings and
    search parameters (``"nprobe=32"`` or ``{"nprobe": 32}``): docs/faiss.md.

    Args:
        normalize: L2-normalise embeddings and queries first (for models that do not normalise).

    Example::

        >>> import numpy as np
        >>> from llara_st.evaluation import FaissIndex
        >>> corpus = np.eye(4, dtype=np.float32)
        >>> index = FaissIndex.build(corpus, ["a", "b", "c", "d"], "SQ8,RFlat", search_parameters="k_factor_rf=2")
        >>> scores, ids = index.search(np.array([[0.1, 0.9, 0.3, 0.0]]), k=2)
        >>> print(ids[0], scores[0].round(3))
        ['b', 'c'] [0.9 0.3]
    """

    def __init__(
        self,
        dim: int,
        factory_string: str = "Flat",
        *,
        search_parameters: SearchParameters | None = None,
        normalize: bool = False,
    ) -> None:
        if dim < 1:
            raise ValueError(f"dim must be positive, got {dim}")
        faiss = _import_faiss()
        with _faiss_errors(f"faiss cannot build an index from the factory string {factory_string!r} for dim {dim}"):
            self.index = faiss.index_factory(dim, factory_string, faiss.METRIC_INNER_PRODUCT)
        self.dim, self.factory_string, self.normalize = dim, factory_string, normalize
        self.ids: list[str] = []
        self._id_set: set[str] = set()
        self.read_only = False  # loaded with mmap=True: faiss aborts the process on an add to mapped codes
        self.search_parameters: dict[str, float] = {}
        self._lock = threading.RLock()
        if search_parameters is not None:
            self.set_search_parameters(search_parameters)

    def set_search_parameters(self, parameters: SearchParameters) -> None:
        """Set search parameters by their faiss names (``"nprobe=64,efSearch=128"`` or ``{"nprobe": 64}``)."""
        if not isinstance(parameters, str):
            parameters = ",".join(f"{name}={value}" for name, value in parameters.items())
        what = f"faiss cannot set the search parameters {parameters!r} on a {self.factory_string!r} index"
        with self._lock, _faiss_errors(what):
            _import_faiss().ParameterSpace().set_index_parameters(self.index, parameters)
            for name, _, value in (part.partition("=") for part in filter(None, parameters.split(","))):
                self.search_parameters[name] = float(value)  # faiss accepted them: keep them to save

    def __len__(self) -> int:
        return len(self.ids)

    def __repr__(self) -> str:
        return f"FaissIndex({self.factory_string!r}, dim={self.dim}, ntotal={len(self)})"

    def _prepare(self, embeddings: Any, name: str) -> np.ndarray:
        array = _as_rows(embeddings, name)
        if array.shape[1] != self.dim:
            raise ValueError(f"{name} have dimension {array.shape[1]}, the index expects {self.dim}")
        if not np.isfinite(array).all():
            raise ValueError(f"{name} contain NaN or infinite values")
        if self.normalize:
            array = array / np.maximum(np.linalg.norm(array, axis=1, keepdims=True), np.finfo(np.float32).tiny)
        return np.ascontiguousarray(array, dtype=np.float32)

    def train(self, embeddings: Any) -> None:
        """Train the index (IVF centroids, PQ codebooks, SQ ranges) on a sample of the corpus, if it needs it."""
        array = self._prepare(embeddings, "training embeddings")
        with self._lock, _faiss_errors(f"Training the {self.factory_string!r} index on {len(array)} vectors failed"):
            if not self.index.is_trained:
                self.index.train(array)

    def add(self, embeddings: Any, ids: Sequence[str]) -> None:
        """Add corpus embeddings (rows) with their string ids; ids must be new and unique."""
        ids, array = list(ids), self._prepare(embeddings, "embeddings")
        if len(ids) != len(array):
            raise ValueError(f"Got {len(array)} embeddings but {len(ids)} ids")
        if (bad := next((value for value in ids if not isinstance(value, str)), None)) is not None:
            raise TypeError(f"Corpus ids must be strings, got e.g. {bad!r} ({type(bad).__name__})")
        if len(set(ids)) != len(ids):
            raise ValueError("The ids contain duplicates; each corpus id must appear once")
        with self._lock:
            if clash := self._id_set.intersection(ids):
                raise ValueError(f"{len(clash)} ids are already in the index, e.g. {sorted(clash)[:3]}")
            if not self.index.is_trained:
                raise RuntimeError(f"The {self.factory_string!r} index must be trained before add(): call train()")
            if self.read_only:
                raise RuntimeError("This index was loaded with mmap=True, read-only: load it without mmap to add")
            self.index.add(array)
            self.ids.extend(ids)
            self._id_set.update(ids)

    @classmethod
    def build(cls, embeddings: Any, ids: Sequence[str], factory_string: str = "Flat", **kwargs: Any) -> FaissIndex:
        """Create, train if needed and fill an index in one call; ``kwargs`` go to :class:`FaissIndex`."""
        array = _as_rows(embeddings, "embeddings")
        index = cls(array.shape[1], factory_string, **kwargs)
        index.train(array)
        index.add(array, ids)
        return index

    def search_positions(self, queries: Any, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Like :meth:`search`, with row positions (insertion order) for ids; a missing hit has position ``-1``."""
        if k < 1:
            raise ValueError(f"k must be positive, got {k}")
        array = self._prepare(queries, "queries")
        with self._lock:
            if not self.ids:
                raise RuntimeError("The index is empty: add() embeddings before searching")
            scores, positions = self.index.search(array, min(k, len(self)))
        scores[positions < 0] = -np.inf
        return scores, positions

    def search(self, queries: Any, k: int) -> tuple[np.ndarray, list[list[str]]]:
        """``(scores, ids)`` of the ``k`` best corpus entries per query, best first; ``ids[i]`` is shorter than its
        scores row when the index found fewer (their scores are ``-inf``)."""
        scores, positions = self.search_positions(queries, k)
        return scores, [[self.ids[p] for p in row if p >= 0] for row in positions]

    def save(self, folder: str | Path) -> Path:
        """Write ``index.faiss`` (``faiss.write_index``), ``ids.json`` and the settings to ``folder``."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        config = {"dim": self.dim, "factory_string": self.factory_string, "search_parameters": self.search_parameters}
        with self._lock:
            _import_faiss().write_index(self.index, str(folder / _INDEX_FILE))
            (folder / _IDS_FILE).write_text(json.dumps(self.ids), encoding="utf8")
            config |= {"normalize": self.normalize, "ntotal": len(self)}
            (folder / _CONFIG_FILE).write_text(json.dumps(config, indent=2), encoding="utf8")
        return folder

    @classmethod
    def load(cls, folder: str | Path, *, mmap: bool = False) -> FaissIndex:
        """Read an index written by :meth:`save`; ``mmap=True`` maps the index file (read-only)."""
        faiss, folder = _import_faiss(), Path(folder)
        if missing := [name for name in (_INDEX_FILE, _IDS_FILE, _CONFIG_FILE) if not (folder / name).is_file()]:
            raise FileNotFoundError(f"{folder} is not a saved FaissIndex: {missing[0]} is missing")
        config, ids = (read_json(folder / name) for name in (_CONFIG_FILE, _IDS_FILE))
        if not isinstance(config, dict) or _CONFIG_KEYS - config.keys():
            raise ValueError(f"{folder / _CONFIG_FILE} must be a JSON object with the keys {sorted(_CONFIG_KEYS)}")
        if config.get("rescore_multiplier"):  # saved before rescoring became faiss's refinement
            raise ValueError(f"{folder} uses rescore_multiplier: rebuild it as '{config['factory_string']},RFlat'")
        if not isinstance(ids, list) or not all(isinstance(value, str) for value in ids):
            raise ValueError(f"{folder / _IDS_FILE} must hold a JSON list of string ids")
        if len(set(ids)) != len(ids):
            raise ValueError(f"{folder / _IDS_FILE} contains duplicate ids")
        # IO_FLAG_MMAP_IFC (faiss ≥ 1.11) maps flat codes (Flat, SQ, RFlat's fp32 copy) as well as IVF lists.
        flags = getattr(faiss, "IO_FLAG_MMAP_IFC", faiss.IO_FLAG_MMAP) | faiss.IO_FLAG_READ_ONLY if mmap else 0
        index = faiss.read_index(str(folder / _INDEX_FILE), flags)
        if index.ntotal != len(ids) or index.ntotal != config["ntotal"]:
            raise ValueError(
                f"{folder / _IDS_FILE} lists {len(ids)} ids and the config says {config['ntotal']}, but "
                f"{folder / _INDEX_FILE} holds {index.ntotal} vectors"
            )
        if index.d != config["dim"] or index.metric_type != faiss.METRIC_INNER_PRODUCT:
            raise ValueError(
                f"{folder / _INDEX_FILE} holds {index.d}-d vectors with metric {index.metric_type}, the config "
                f"says {config['dim']}-d inner product ({faiss.METRIC_INNER_PRODUCT})"
            )
        loaded = cls(config["dim"], config["factory_string"], normalize=config["normalize"])
        loaded.index, loaded.ids, loaded._id_set, loaded.read_only = index, ids, set(ids), mmap
        loaded.set_search_parameters(config["search_parameters"])
        return loaded


def read_json(path: Path) -> Any:
    """A JSON file's value; invalid JSON is a ValueError naming the file."""
    try:
        return json.loads(path.read_text(encoding="utf8"))
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not valid JSON: {error}") from None


class FaissSearchBackend:
    """MTEB search backend (``mteb.models.IndexEncoderSearchProtocol``) retrieving with a :class:`FaissIndex`
    (``index_kwargs`` go to it), e.g. through ``evaluate_beir(..., faiss_index="HNSW32")``; each task split builds,
    searches and clears it. Reranking tasks are refused. Why not MTEB's ``FaissSearchIndex``: docs/faiss.md."""

    def __init__(self, factory_string: str = "Flat", **index_kwargs: Any) -> None:
        self.factory_string = factory_string
        self.index_kwargs = index_kwargs
        self.index: FaissIndex | None = None

    def add_documents(self, embeddings: Any, idxs: list[str]) -> None:
        if self.index is None:
            self.index = FaissIndex.build(embeddings, list(idxs), self.factory_string, **self.index_kwargs)
        else:
            self.index.add(embeddings, idxs)

    def search(
        self,
        embeddings: Any,
        top_k: int,
        similarity_fn: Callable[[Any, Any], Any] | None = None,
        top_ranked: dict[str, list[str]] | None = None,
        query_idx_to_id: dict[int, str] | None = None,
    ) -> tuple[list[list[float]], list[list[int]]]:
        if top_ranked is not None:
            raise NotImplementedError("FaissSearchBackend searches the full corpus: evaluate reranking without it")
        if self.index is None:
            raise RuntimeError("No documents were indexed before search")
        scores, positions = self.index.search_positions(embeddings, top_k)
        # MTEB maps positions to corpus ids itself; a missing hit (-1) would map to the last document.
        kept = positions >= 0
        return (
            [row[mask].tolist() for row, mask in zip(scores, kept, strict=True)],
            [row[mask].tolist() for row, mask in zip(positions, kept, strict=True)],
        )

    def clear(self) -> None:
        self.index = None


__all__ = ["FaissIndex", "FaissSearchBackend", "SearchParameters", "default_nlist"]
