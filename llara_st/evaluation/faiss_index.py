"""A faiss inner-product index, described by a faiss factory string, that keeps the corpus ids; its MTEB backend."""

from __future__ import annotations

import json
import logging
import math
import re
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

SearchParameters = str | Mapping[str, float]
_INDEX_FILE = "index.faiss"
_IDS_FILE = "ids.json"
_CONFIG_FILE = "faiss_index_config.json"
_EMBEDDINGS_FILE = "embeddings.npy"
_ADD_CHUNK_ROWS = 65_536
_RESCORE_CHUNK_FLOATS = 2**26  # bound the gathered candidate vectors to 256 MB per query chunk
# faiss errors read "Error in <C++ signature> at <file>:<line>: <message>"; users need only the message.
_FAISS_ERROR_PREFIX = re.compile(r"^Error in .*? at \S+:\d+: (Error: '.*?' failed: )?", re.DOTALL)


def _import_faiss() -> Any:
    try:
        import faiss
    except ImportError:
        raise ModuleNotFoundError(
            "FaissIndex needs faiss: `pip install faiss-cpu` (or faiss-gpu for CUDA), or `pip install llara-st[faiss]`",
            name="faiss",
        ) from None
    return faiss


def _faiss_message(error: Exception) -> str:
    return _FAISS_ERROR_PREFIX.sub("", str(error)).strip()


def faiss_gpu_count() -> int:
    """Number of GPUs faiss can use (0 with faiss-cpu)."""
    faiss = _import_faiss()
    return faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0


def default_nlist(num_vectors: int) -> int:
    """faiss's rule of thumb for ``IVF{nlist}``: about 4·√n lists, at least 1 and at most n / 39 (≥ 39 points each)."""
    return max(1, min(int(4 * math.sqrt(num_vectors)), num_vectors // 39))


def _as_float32_rows(embeddings: Any, name: str) -> np.ndarray:
    if hasattr(embeddings, "detach"):  # a torch tensor
        embeddings = embeddings.detach().float().cpu().numpy()
    array = np.asarray(embeddings)
    if array.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array (rows × dim), got shape {array.shape}")
    if not np.issubdtype(array.dtype, np.floating):
        raise TypeError(f"{name} must hold floats, got dtype {array.dtype}")
    return np.ascontiguousarray(array, dtype=np.float32)


class FaissIndex:
    """Maximum-inner-product search with any faiss index, returning corpus ids and scores.

    The index is described by a ``faiss.index_factory`` string (faiss's own vocabulary), for example:

    - ``"Flat"``: exact search, ``n × dim × 4`` bytes; ground truth and corpora up to a few million vectors.
    - ``"IVF4096,Flat"``: inverted file with 4096 k-means lists; searches ``nprobe`` lists (needs training).
    - ``"HNSW32"``: HNSW graph over exact vectors; searches with breadth ``efSearch``; no training.
    - ``"SQ8"``: 8-bit scalar quantisation, 4× smaller than fp32 (trained on value ranges).
    - ``"IVF4096,PQ64x8"``: IVF with product quantisation, 64 bytes per vector (needs training).
    - ``"SQ8,RFlat"``: SQ8 codes, then faiss's exact refinement of ``k_factor_rf × k`` candidates (search parameter
      ``k_factor_rf``) from an fp32 copy held inside the index, in RAM.

    Search parameters use faiss's names (``nprobe``, ``efSearch``, ``ht``, ...) and are applied through
    ``faiss.ParameterSpace``. A quantised index (SQ, PQ) gives approximate scores; with ``rescore_multiplier``
    the index also keeps the full-precision embeddings, retrieves ``rescore_multiplier × k`` candidates and
    rescores them exactly, as sentence-transformers' ``semantic_search_faiss`` does for quantised corpora. It
    ranks as faiss's ``RFlat`` refinement does, but keeps the fp32 copy beside the index (``embeddings.npy``), so
    that :meth:`load` can memory-map it (``mmap=True``) and only the candidates' rows are read.

    Scores are inner products, i.e. cosine similarities for L2-normalised embeddings such as LLaRA's
    (Li et al., 2023, arXiv:2312.15503); pass ``normalize=True`` for models that do not normalise. Calls are
    serialised by a lock (faiss parallelises each search itself), so one index can be shared across threads.

    Args:
        dim: Embedding dimension.
        factory_string: The ``faiss.index_factory`` description (the metric is always inner product).
        search_parameters: faiss search parameters, ``"nprobe=32,efSearch=128"`` or ``{"nprobe": 32}``.
        normalize: L2-normalise embeddings and queries before use.
        rescore_multiplier: Keep the full-precision embeddings and rescore this many times ``k`` candidates
            (``None``: no rescoring, nothing kept).
        use_gpu: Put the index on all GPUs (faiss-gpu). Untested here: this project's machines have no GPU.

    Example::

        >>> import numpy as np
        >>> from llara_st.evaluation import FaissIndex
        >>> corpus = np.eye(4, dtype=np.float32)
        >>> index = FaissIndex.build(corpus, ["a", "b", "c", "d"], "SQ8", rescore_multiplier=2)
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
        rescore_multiplier: float | None = None,
        use_gpu: bool = False,
    ) -> None:
        if dim < 1:
            raise ValueError(f"dim must be positive, got {dim}")
        if rescore_multiplier is not None and not rescore_multiplier >= 1:
            raise ValueError(f"rescore_multiplier must be at least 1 (or None), got {rescore_multiplier}")
        faiss = _import_faiss()
        try:
            cpu_index = faiss.index_factory(dim, factory_string, faiss.METRIC_INNER_PRODUCT)
        except RuntimeError as error:
            raise ValueError(
                f"faiss cannot build an index from the factory string {factory_string!r} for dim {dim}: "
                f"{_faiss_message(error)}"
            ) from None
        self.dim = dim
        self.factory_string = factory_string
        self.normalize = normalize
        self._rescore_multiplier = rescore_multiplier
        self.use_gpu = use_gpu
        self.ids: list[str] = []
        self.search_parameters: dict[str, float] = {}
        self._id_set: set[str] = set()
        self._embedding_chunks: list[np.ndarray] = []  # full-precision rows, kept only for rescoring
        self._lock = threading.RLock()
        self._index = self._place(cpu_index)
        if search_parameters is not None:
            self.set_search_parameters(search_parameters)

    def _place(self, cpu_index: Any) -> Any:
        if not self.use_gpu:
            return cpu_index
        # Untested path (no GPU here): shard the vectors over all GPUs instead of replicating them.
        faiss = _import_faiss()
        if not faiss_gpu_count():
            raise RuntimeError("use_gpu=True, but faiss sees no GPU (install faiss-gpu and check CUDA)")
        options = faiss.GpuMultipleClonerOptions()
        options.shard = True
        try:
            return faiss.index_cpu_to_all_gpus(cpu_index, co=options)
        except RuntimeError as error:
            raise ValueError(f"faiss cannot put {self.factory_string!r} on GPU: {_faiss_message(error)}") from None

    def set_search_parameters(self, parameters: SearchParameters) -> None:
        """Set search parameters by their faiss names, e.g. ``"nprobe=64,efSearch=128"`` or ``{"nprobe": 64}``."""
        faiss = _import_faiss()
        space = faiss.GpuParameterSpace() if self.use_gpu else faiss.ParameterSpace()
        if not isinstance(parameters, str):
            parameters = ",".join(f"{name}={value}" for name, value in parameters.items())
        with self._lock:
            try:
                space.set_index_parameters(self._index, parameters)
            except RuntimeError as error:
                raise ValueError(
                    f"faiss cannot set the search parameters {parameters!r} on a {self.factory_string!r} index: "
                    f"{_faiss_message(error)}"
                ) from None
            for part in filter(None, parameters.split(",")):  # faiss accepted "name=value,...": keep them to save
                name, _, value = part.partition("=")
                self.search_parameters[name] = float(value)

    @property
    def rescore_multiplier(self) -> float | None:
        """Candidates rescored per hit (fixed at construction: the index keeps embeddings only when it is set)."""
        return self._rescore_multiplier

    @property
    def ntotal(self) -> int:
        return len(self.ids)

    @property
    def is_trained(self) -> bool:
        return bool(self._index.is_trained)

    def __len__(self) -> int:
        return self.ntotal

    def __repr__(self) -> str:
        return f"FaissIndex({self.factory_string!r}, dim={self.dim}, ntotal={self.ntotal})"

    def _prepare(self, embeddings: Any, name: str) -> np.ndarray:
        array = _as_float32_rows(embeddings, name)
        if array.shape[1] != self.dim:
            raise ValueError(f"{name} have dimension {array.shape[1]}, the index expects {self.dim}")
        if not np.isfinite(array).all():
            raise ValueError(f"{name} contain NaN or infinite values")
        if self.normalize:
            array = array / np.maximum(np.linalg.norm(array, axis=1, keepdims=True), np.finfo(np.float32).tiny)
        return array

    def train(self, embeddings: Any) -> None:
        """Train the index (IVF centroids, PQ codebooks, SQ ranges) on a sample of the corpus; a no-op when it
        needs no training (``Flat``, ``HNSW``) or is already trained. faiss's k-means itself uses at most 256
        points per centroid."""
        array = self._prepare(embeddings, "training embeddings")
        with self._lock:
            if self._index.is_trained:
                return
            try:
                self._index.train(array)
            except RuntimeError as error:
                message = f"Training the {self.factory_string!r} index on {len(array)} vectors failed"
                raise ValueError(f"{message}: {_faiss_message(error)}") from None

    def add(self, embeddings: Any, ids: Sequence[str]) -> None:
        """Add corpus embeddings (rows) with their string ids; ids must be new and unique."""
        ids = list(ids)
        array = self._prepare(embeddings, "embeddings")
        if len(ids) != len(array):
            raise ValueError(f"Got {len(array)} embeddings but {len(ids)} ids")
        bad = [value for value in ids if not isinstance(value, str)]
        if bad:
            raise TypeError(f"Corpus ids must be strings, got e.g. {bad[0]!r} ({type(bad[0]).__name__})")
        new_ids = set(ids)
        if len(new_ids) != len(ids):
            raise ValueError("The ids contain duplicates; each corpus id must appear once")
        with self._lock:
            clash = new_ids & self._id_set
            if clash:
                raise ValueError(f"{len(clash)} ids are already in the index, e.g. {sorted(clash)[:3]}")
            if not self._index.is_trained:
                raise RuntimeError(
                    f"The {self.factory_string!r} index must be trained before add(): call train() or use build()"
                )
            for start in range(0, len(array), _ADD_CHUNK_ROWS):
                self._index.add(array[start : start + _ADD_CHUNK_ROWS])
            if self.rescore_multiplier is not None:  # a copy: the caller's array (or tensor) may change later
                self._embedding_chunks.append(array.copy())
            self.ids.extend(ids)
            self._id_set |= new_ids

    @classmethod
    def build(cls, embeddings: Any, ids: Sequence[str], factory_string: str = "Flat", **kwargs: Any) -> FaissIndex:
        """Create, train if needed and fill an index in one call; ``kwargs`` go to :class:`FaissIndex`."""
        array = _as_float32_rows(embeddings, "embeddings")
        index = cls(array.shape[1], factory_string, **kwargs)
        index.train(array)
        index.add(array, ids)
        return index

    @property
    def embeddings(self) -> np.ndarray | None:
        """The full-precision (normalised if ``normalize``) embeddings kept for rescoring, or ``None``."""
        with self._lock:
            if self.rescore_multiplier is None:
                return None
            if len(self._embedding_chunks) != 1:
                empty = np.empty((0, self.dim), dtype=np.float32)
                self._embedding_chunks = [np.concatenate([empty, *self._embedding_chunks])]
            return self._embedding_chunks[0]

    def search_positions(self, queries: Any, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Scores and row positions (in insertion order) of the ``k`` best corpus entries per query.

        Missing hits (fewer than ``k`` found, e.g. IVF with a small ``nprobe``) have position ``-1`` and score
        ``-inf``.
        """
        if k < 1:
            raise ValueError(f"k must be positive, got {k}")
        array = self._prepare(queries, "queries")
        with self._lock:
            if self.ntotal == 0:
                raise RuntimeError("The index is empty: add() embeddings before searching")
            k = min(k, self.ntotal)
            if self.rescore_multiplier is None:
                scores, positions = self._index.search(array, k)
            else:
                candidates = min(self.ntotal, math.ceil(k * self.rescore_multiplier))
                _, positions = self._index.search(array, candidates)
                scores = self._rescore(array, positions)
        scores[positions < 0] = -np.inf
        if self.rescore_multiplier is not None:
            order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
            scores, positions = np.take_along_axis(scores, order, 1), np.take_along_axis(positions, order, 1)
        return scores, positions

    def _rescore(self, queries: np.ndarray, positions: np.ndarray) -> np.ndarray:
        corpus = self.embeddings
        scores = np.empty(positions.shape, dtype=np.float32)
        rows_per_chunk = max(1, _RESCORE_CHUNK_FLOATS // (positions.shape[1] * self.dim))
        for start in range(0, len(queries), rows_per_chunk):
            block = slice(start, start + rows_per_chunk)
            candidates = corpus[np.maximum(positions[block], 0)]  # (queries, candidates, dim); -1 masked later
            scores[block] = np.einsum("qd,qcd->qc", queries[block], candidates)
        return scores

    def search(self, queries: Any, k: int) -> tuple[np.ndarray, list[list[str]]]:
        """The ``k`` best corpus entries per query: ``(scores, ids)``.

        ``scores`` is a ``(num_queries, min(k, ntotal))`` float32 array sorted best first; ``ids[i]`` lists the
        corpus ids of row ``i``'s hits (shorter than the row when the index found fewer, whose scores are
        ``-inf``), so ``zip(ids[i], scores[i])`` pairs them.
        """
        scores, positions = self.search_positions(queries, k)
        return scores, [[self.ids[p] for p in row if p >= 0] for row in positions]

    def save(self, folder: str | Path) -> Path:
        """Write ``index.faiss``, ``ids.json``, the settings and (when rescoring) ``embeddings.npy`` to ``folder``."""
        faiss = _import_faiss()
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        with self._lock:
            cpu_index = faiss.index_gpu_to_cpu(self._index) if self.use_gpu else self._index
            faiss.write_index(cpu_index, str(folder / _INDEX_FILE))
            (folder / _IDS_FILE).write_text(json.dumps(self.ids), encoding="utf8")
            if self.rescore_multiplier is not None:
                np.save(folder / _EMBEDDINGS_FILE, self.embeddings, allow_pickle=False)
            config = {
                "dim": self.dim,
                "factory_string": self.factory_string,
                "search_parameters": self.search_parameters,
                "normalize": self.normalize,
                "rescore_multiplier": self.rescore_multiplier,
                "ntotal": self.ntotal,
            }
            (folder / _CONFIG_FILE).write_text(json.dumps(config, indent=2), encoding="utf8")
        return folder

    @classmethod
    def load(cls, folder: str | Path, *, use_gpu: bool = False, mmap: bool = False) -> FaissIndex:
        """Read an index written by :meth:`save`, refusing files that do not belong together.

        Args:
            folder: The folder.
            use_gpu: As in the constructor.
            mmap: Memory-map the index file (IVF indexes) and the rescoring embeddings instead of reading them.
        """
        faiss = _import_faiss()
        folder = Path(folder)
        for name in (_INDEX_FILE, _IDS_FILE, _CONFIG_FILE):
            if not (folder / name).is_file():
                raise FileNotFoundError(f"{folder} is not a saved FaissIndex: {name} is missing")
        config, ids = (_read_json(folder / name) for name in (_CONFIG_FILE, _IDS_FILE))
        keys = {"dim", "factory_string", "search_parameters", "normalize", "rescore_multiplier", "ntotal"}
        if not isinstance(config, dict) or keys - config.keys():
            raise ValueError(f"{folder / _CONFIG_FILE} must be a JSON object with the keys {sorted(keys)}")
        if not isinstance(ids, list) or not all(isinstance(value, str) for value in ids):
            raise ValueError(f"{folder / _IDS_FILE} must hold a JSON list of string ids")
        if len(set(ids)) != len(ids):
            raise ValueError(f"{folder / _IDS_FILE} contains duplicate ids")
        flags = faiss.IO_FLAG_MMAP | faiss.IO_FLAG_READ_ONLY if mmap else 0
        cpu_index = faiss.read_index(str(folder / _INDEX_FILE), flags)
        if cpu_index.ntotal != len(ids) or cpu_index.ntotal != config["ntotal"]:
            raise ValueError(
                f"{folder / _IDS_FILE} lists {len(ids)} ids and the config says {config['ntotal']}, but "
                f"{folder / _INDEX_FILE} holds {cpu_index.ntotal} vectors"
            )
        if cpu_index.d != config["dim"] or cpu_index.metric_type != faiss.METRIC_INNER_PRODUCT:
            raise ValueError(
                f"{folder / _INDEX_FILE} holds {cpu_index.d}-d vectors with metric {cpu_index.metric_type}, the "
                f"config says {config['dim']}-d inner product ({faiss.METRIC_INNER_PRODUCT})"
            )
        index = cls(
            config["dim"],
            config["factory_string"],
            normalize=config["normalize"],
            rescore_multiplier=config["rescore_multiplier"],
        )
        if index.rescore_multiplier is not None:
            embeddings = np.load(folder / _EMBEDDINGS_FILE, mmap_mode="r" if mmap else None, allow_pickle=False)
            if embeddings.shape != (len(ids), index.dim):
                raise ValueError(
                    f"{folder / _EMBEDDINGS_FILE} has shape {embeddings.shape}, expected {(len(ids), index.dim)}"
                )
            index._embedding_chunks = [embeddings]
        index.use_gpu = use_gpu
        index._index = index._place(cpu_index)
        index.set_search_parameters(config["search_parameters"])
        index.ids = ids
        index._id_set = set(ids)
        return index


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf8"))
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not valid JSON: {error}") from None


class FaissSearchBackend:
    """MTEB search backend (``mteb.models.IndexEncoderSearchProtocol``) that retrieves with a :class:`FaissIndex`.

    Pass it to ``mteb.models.SearchEncoderWrapper(encoder, index_backend=FaissSearchBackend("HNSW32"))``, or use
    ``evaluate_beir(..., faiss_index="HNSW32")``. Each task split builds the index from the corpus embeddings
    MTEB computes, searches, and clears it. Full-corpus retrieval only: reranking tasks are refused.

    It implements MTEB's backend protocol rather than subclassing MTEB's ``FaissSearchIndex``, whose interface
    does not take a factory string: it creates the index as ``index_type(dim)`` from a flat index class chosen by
    the model's similarity, never trains it, searches the raw faiss index (no search parameters, no rescoring,
    no ``-1`` handling), reranks by reconstructing vectors (approximate for SQ/PQ, unsupported by IVF), and its
    constructor needs the MTEB encoder and mteb itself, which :class:`FaissIndex` must not.

    Args:
        factory_string: The ``faiss.index_factory`` description (see :class:`FaissIndex`).
        **index_kwargs: Passed to :meth:`FaissIndex.build` (``search_parameters``, ``normalize``,
            ``rescore_multiplier``, ``use_gpu``).
    """

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
            raise NotImplementedError(
                "FaissSearchBackend retrieves from the full corpus; evaluate reranking tasks without faiss"
            )
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


__all__ = ["FaissIndex", "FaissSearchBackend", "SearchParameters", "default_nlist", "faiss_gpu_count"]
