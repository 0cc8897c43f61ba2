"""A faiss inner-product index over corpus embeddings that keeps the corpus ids, and its MTEB search backend."""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

logger = logging.getLogger(__name__)

IndexKind = Literal["flat", "ivf", "ivfpq", "hnsw"]
_KINDS: tuple[str, ...] = ("flat", "ivf", "ivfpq", "hnsw")
_INDEX_FILE = "index.faiss"
_IDS_FILE = "ids.json"
_CONFIG_FILE = "faiss_index_config.json"
# faiss k-means uses at most 256 points per centroid; more training data only costs time.
_MAX_TRAINING_POINTS_PER_LIST = 256
_ADD_CHUNK_ROWS = 65_536


def _import_faiss() -> Any:
    try:
        import faiss
    except ImportError:
        raise ImportError(
            "FaissIndex needs faiss: `pip install faiss-cpu` (or faiss-gpu for CUDA), or `pip install llara-st[faiss]`"
        ) from None
    return faiss


def faiss_gpu_count() -> int:
    """Number of GPUs faiss can use (0 with faiss-cpu)."""
    faiss = _import_faiss()
    return faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0


def default_nlist(num_vectors: int) -> int:
    """faiss's rule of thumb: about 4·√n inverted lists, at least 1 and at most n / 39 (≥ 39 points per list)."""
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
    """Maximum-inner-product search over corpus embeddings with faiss, returning corpus ids and scores.

    The index kind trades exactness for memory and speed:

    - ``"flat"``: exact inner product (``IndexFlatIP``); ``n × dim × 4`` bytes. For corpora up to a few million
      small vectors, and as ground truth.
    - ``"ivf"``: inverted file with ``nlist`` k-means lists, exact vectors (``IVF{nlist},Flat``); searches
      ``nprobe`` lists; same memory as flat, far less compute.
    - ``"ivfpq"``: IVF with product quantisation (``IVF{nlist},PQ{pq_m}x{pq_bits}``): ``pq_m`` bytes per vector
      (8-bit codes), e.g. 64 bytes for a 4096-d LLaRA embedding instead of 16 KiB; approximate scores.
    - ``"hnsw"``: HNSW graph over exact vectors (``HNSW{hnsw_m}``); no training, flat memory plus the graph.

    Scores are inner products, i.e. cosine similarities for L2-normalised embeddings such as LLaRA's
    (Li et al., 2023, arXiv:2312.15503); pass ``normalize=True`` for models that do not normalise. With
    faiss-gpu installed, ``use_gpu=None`` (the default) puts flat and IVF indexes on all GPUs (HNSW stays on
    the CPU: faiss has no GPU HNSW); ``use_gpu=True`` insists and fails without a GPU.

    Args:
        dim: Embedding dimension.
        kind: ``"flat"``, ``"ivf"``, ``"ivfpq"`` or ``"hnsw"``.
        nlist: IVF lists (default when trained: about ``4·√n``).
        nprobe: IVF lists searched per query (recall/speed knob, changeable later via :attr:`nprobe`).
        pq_m: PQ sub-quantisers (bytes per vector at 8 bits); must divide ``dim``.
        pq_bits: Bits per PQ code (8 is standard).
        hnsw_m: HNSW graph degree.
        ef_search: HNSW search breadth.
        normalize: L2-normalise embeddings and queries before use.
        use_gpu: True, False, or None for "if faiss-gpu sees a GPU".

    Example::

        from llara_st.evaluation import FaissIndex

        index = FaissIndex.build(corpus_embeddings, corpus_ids, kind="ivf", nprobe=32)
        scores, ids = index.search(query_embeddings, k=10)
        index.save("runs/scifact-index")
        index = FaissIndex.load("runs/scifact-index")
    """

    def __init__(
        self,
        dim: int,
        kind: IndexKind = "flat",
        *,
        nlist: int | None = None,
        nprobe: int = 16,
        pq_m: int = 64,
        pq_bits: int = 8,
        hnsw_m: int = 32,
        ef_search: int = 128,
        normalize: bool = False,
        use_gpu: bool | None = None,
    ) -> None:
        if kind not in _KINDS:
            raise ValueError(f"Unknown faiss index kind {kind!r}; choose one of {_KINDS}")
        if dim < 1:
            raise ValueError(f"dim must be positive, got {dim}")
        if kind == "ivfpq" and dim % pq_m:
            raise ValueError(f"pq_m={pq_m} must divide the embedding dimension {dim}")
        for name, value in (("nprobe", nprobe), ("pq_m", pq_m), ("pq_bits", pq_bits), ("hnsw_m", hnsw_m)):
            if value < 1:
                raise ValueError(f"{name} must be positive, got {value}")
        if nlist is not None and nlist < 1:
            raise ValueError(f"nlist must be positive, got {nlist}")
        self.dim = dim
        self.kind: IndexKind = kind
        self.nlist = nlist
        self.pq_m = pq_m
        self.pq_bits = pq_bits
        self.hnsw_m = hnsw_m
        self.normalize = normalize
        self._nprobe = nprobe
        self._ef_search = ef_search
        self.ids: list[str] = []
        self._id_set: set[str] = set()
        self._use_gpu = self._resolve_gpu(use_gpu)
        self._index: Any = None
        if kind in ("flat", "hnsw"):
            self._index = self._create()

    # ------------------------------------------------------------------ construction

    def _resolve_gpu(self, use_gpu: bool | None) -> bool:
        gpus = faiss_gpu_count()
        if use_gpu and not gpus:
            raise RuntimeError("use_gpu=True, but faiss sees no GPU (install faiss-gpu and check CUDA)")
        if use_gpu and self.kind == "hnsw":
            raise ValueError("faiss has no GPU HNSW index; use kind='flat', 'ivf' or 'ivfpq' on GPU")
        if use_gpu is None:
            return bool(gpus) and self.kind != "hnsw"
        return use_gpu

    @property
    def factory_string(self) -> str:
        """The ``faiss.index_factory`` description of this index."""
        if self.kind == "flat":
            return "Flat"
        if self.kind == "hnsw":
            return f"HNSW{self.hnsw_m}"
        if self.nlist is None:
            raise RuntimeError("nlist is unknown until the index is trained (or pass nlist=)")
        if self.kind == "ivf":
            return f"IVF{self.nlist},Flat"
        return f"IVF{self.nlist},PQ{self.pq_m}x{self.pq_bits}"

    def _create(self) -> Any:
        faiss = _import_faiss()
        index = faiss.index_factory(self.dim, self.factory_string, faiss.METRIC_INNER_PRODUCT)
        if self._use_gpu:
            index = self._to_gpu(index)
        self._apply_search_parameters(index)
        return index

    def _to_gpu(self, cpu_index: Any) -> Any:
        # Guarded path: exercised only where faiss-gpu and CUDA are present (not in this project's CI).
        faiss = _import_faiss()
        options = faiss.GpuMultipleClonerOptions()
        options.shard = True  # split the vectors over the GPUs instead of replicating them
        options.useFloat16 = self.kind == "ivfpq"  # GPU IVFPQ needs fp16 lookup tables beyond 48 bytes/code
        return faiss.index_cpu_to_all_gpus(cpu_index, co=options)

    def _cpu_index(self) -> Any:
        faiss = _import_faiss()
        return faiss.index_gpu_to_cpu(self._index) if self._use_gpu else self._index

    def _apply_search_parameters(self, index: Any) -> None:
        faiss = _import_faiss()
        if self.kind == "flat":
            return
        space = faiss.GpuParameterSpace() if self._use_gpu else faiss.ParameterSpace()
        if self.kind == "hnsw":
            space.set_index_parameter(index, "efSearch", self._ef_search)
        else:
            space.set_index_parameter(index, "nprobe", self._nprobe)

    @property
    def nprobe(self) -> int:
        return self._nprobe

    @nprobe.setter
    def nprobe(self, value: int) -> None:
        if value < 1:
            raise ValueError(f"nprobe must be positive, got {value}")
        self._nprobe = value
        if self._index is not None:
            self._apply_search_parameters(self._index)

    @property
    def ef_search(self) -> int:
        return self._ef_search

    @ef_search.setter
    def ef_search(self, value: int) -> None:
        if value < 1:
            raise ValueError(f"ef_search must be positive, got {value}")
        self._ef_search = value
        if self._index is not None:
            self._apply_search_parameters(self._index)

    @property
    def ntotal(self) -> int:
        return len(self.ids)

    @property
    def is_trained(self) -> bool:
        return self._index is not None and bool(self._index.is_trained)

    def __len__(self) -> int:
        return self.ntotal

    def __repr__(self) -> str:
        return f"FaissIndex(kind={self.kind!r}, dim={self.dim}, ntotal={self.ntotal}, gpu={self._use_gpu})"

    def _prepare(self, embeddings: Any, name: str) -> np.ndarray:
        array = _as_float32_rows(embeddings, name)
        if array.shape[1] != self.dim:
            raise ValueError(f"{name} have dimension {array.shape[1]}, the index expects {self.dim}")
        if not np.isfinite(array).all():
            raise ValueError(f"{name} contain NaN or infinite values")
        if self.normalize:
            norms = np.linalg.norm(array, axis=1, keepdims=True)
            array = array / np.maximum(norms, np.finfo(np.float32).tiny)
        return array

    def train(self, embeddings: Any, *, max_training_points: int | None = None, seed: int = 0) -> None:
        """Train the IVF quantiser (and PQ codebooks) on a sample of the corpus embeddings (no-op for flat/HNSW).

        Args:
            embeddings: Training vectors, typically a random sample of the corpus (at least ``39 · nlist``).
            max_training_points: Sample at most this many rows (default ``256 · nlist``, faiss's own cap).
            seed: Sampling seed.
        """
        if self.kind in ("flat", "hnsw"):
            return
        if self.ntotal:
            raise RuntimeError("The index already holds vectors; train before adding (retraining would drop them)")
        array = _as_float32_rows(embeddings, "training embeddings")
        if self.nlist is None:
            self.nlist = default_nlist(len(array))
            logger.info("Chose nlist=%d for %d training vectors", self.nlist, len(array))
        if len(array) < self.nlist:
            raise ValueError(f"IVF with nlist={self.nlist} needs at least that many training vectors, got {len(array)}")
        if self.kind == "ivfpq" and len(array) < 2**self.pq_bits:
            raise ValueError(f"PQ with {self.pq_bits}-bit codes needs at least {2**self.pq_bits} training vectors")
        limit = max_training_points or _MAX_TRAINING_POINTS_PER_LIST * self.nlist
        if len(array) > limit:
            rows = np.random.default_rng(seed).choice(len(array), size=limit, replace=False)
            array = array[np.sort(rows)]
        array = self._prepare(array, "training embeddings")
        self._index = self._create()
        self._index.train(array)

    def add(self, embeddings: Any, ids: Sequence[str]) -> None:
        """Add corpus embeddings (rows) with their string ids; ids must be new and unique."""
        ids = list(ids)
        array = _as_float32_rows(embeddings, "embeddings")
        if len(ids) != len(array):
            raise ValueError(f"Got {len(array)} embeddings but {len(ids)} ids")
        bad = [value for value in ids[:1000] if not isinstance(value, str)]
        if bad:
            raise TypeError(f"Corpus ids must be strings, got e.g. {bad[0]!r} ({type(bad[0]).__name__})")
        new_ids = set(ids)
        if len(new_ids) != len(ids):
            raise ValueError("The ids contain duplicates; each corpus id must appear once")
        clash = new_ids & self._id_set
        if clash:
            raise ValueError(f"{len(clash)} ids are already in the index, e.g. {sorted(clash)[:3]}")
        if not self.is_trained:
            if self.kind in ("ivf", "ivfpq"):
                raise RuntimeError(f"A {self.kind} index must be trained before add(): call train() or use build()")
        for start in range(0, len(array), _ADD_CHUNK_ROWS):
            self._index.add(self._prepare(array[start : start + _ADD_CHUNK_ROWS], "embeddings"))
        self.ids.extend(ids)
        self._id_set |= new_ids

    @classmethod
    def build(cls, embeddings: Any, ids: Sequence[str], kind: IndexKind = "flat", **kwargs: Any) -> FaissIndex:
        """Create, train (IVF kinds) and fill an index in one call.

        Args:
            embeddings: Corpus embeddings, ``(n, dim)``.
            ids: Corpus ids, one per row.
            kind: See the class docstring.
            **kwargs: Passed to :class:`FaissIndex` (``nlist``, ``nprobe``, ``pq_m``, ``use_gpu``, ...).
        """
        array = _as_float32_rows(embeddings, "embeddings")
        index = cls(array.shape[1], kind, **kwargs)
        index.train(array)
        index.add(array, ids)
        return index

    # ------------------------------------------------------------------ search

    def search_positions(self, queries: Any, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Scores and row positions (in insertion order) of the ``k`` best corpus entries per query.

        Missing hits (fewer than ``k`` found, e.g. IVF with a small ``nprobe``) have position ``-1`` and score
        ``-inf``.
        """
        if self.ntotal == 0:
            raise RuntimeError("The index is empty: add() embeddings before searching")
        if k < 1:
            raise ValueError(f"k must be positive, got {k}")
        array = self._prepare(queries, "queries")
        scores, positions = self._index.search(array, min(k, self.ntotal))
        scores[positions < 0] = -np.inf
        return scores, positions

    def search(self, queries: Any, k: int) -> tuple[np.ndarray, list[list[str]]]:
        """The ``k`` best corpus entries per query: ``(scores, ids)``.

        ``scores`` is a ``(num_queries, min(k, ntotal))`` float32 array sorted best first; ``ids[i]`` lists the
        corpus ids of row ``i``'s hits (shorter than the row when the index found fewer, whose scores are
        ``-inf``), so ``zip(ids[i], scores[i])`` pairs them.
        """
        scores, positions = self.search_positions(queries, k)
        ids = [[self.ids[p] for p in row if p >= 0] for row in positions]
        return scores, ids

    # ------------------------------------------------------------------ persistence

    def save(self, folder: str | Path) -> Path:
        """Write ``index.faiss``, ``ids.json`` and the settings to ``folder`` (a GPU index is saved from a CPU copy)."""
        if self._index is None:
            raise RuntimeError("Nothing to save: the index has not been trained or filled")
        faiss = _import_faiss()
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        faiss.write_index(self._cpu_index(), str(folder / _INDEX_FILE))
        (folder / _IDS_FILE).write_text(json.dumps(self.ids), encoding="utf8")
        config = {
            "dim": self.dim,
            "kind": self.kind,
            "nlist": self.nlist,
            "nprobe": self._nprobe,
            "pq_m": self.pq_m,
            "pq_bits": self.pq_bits,
            "hnsw_m": self.hnsw_m,
            "ef_search": self._ef_search,
            "normalize": self.normalize,
            "ntotal": self.ntotal,
            "factory_string": self.factory_string,
        }
        (folder / _CONFIG_FILE).write_text(json.dumps(config, indent=2), encoding="utf8")
        return folder

    @classmethod
    def load(cls, folder: str | Path, *, use_gpu: bool | None = None, mmap: bool = False) -> FaissIndex:
        """Read an index written by :meth:`save`.

        Args:
            folder: The folder.
            use_gpu: As in the constructor.
            mmap: Memory-map the index file read-only instead of reading it into RAM (IVF indexes).
        """
        faiss = _import_faiss()
        folder = Path(folder)
        for name in (_INDEX_FILE, _IDS_FILE, _CONFIG_FILE):
            if not (folder / name).is_file():
                raise FileNotFoundError(f"{folder} is not a saved FaissIndex: {name} is missing")
        config = json.loads((folder / _CONFIG_FILE).read_text(encoding="utf8"))
        ids = json.loads((folder / _IDS_FILE).read_text(encoding="utf8"))
        flags = faiss.IO_FLAG_MMAP | faiss.IO_FLAG_READ_ONLY if mmap else 0
        cpu_index = faiss.read_index(str(folder / _INDEX_FILE), flags)
        if cpu_index.ntotal != len(ids) or cpu_index.d != config["dim"]:
            raise ValueError(
                f"{folder}: the index holds {cpu_index.ntotal} vectors of dim {cpu_index.d}, but ids.json lists "
                f"{len(ids)} ids and the config says dim {config['dim']}"
            )
        index = cls(
            config["dim"],
            config["kind"],
            nlist=config["nlist"],
            nprobe=config["nprobe"],
            pq_m=config["pq_m"],
            pq_bits=config["pq_bits"],
            hnsw_m=config["hnsw_m"],
            ef_search=config["ef_search"],
            normalize=config["normalize"],
            use_gpu=use_gpu,
        )
        index._index = index._to_gpu(cpu_index) if index._use_gpu else cpu_index
        index._apply_search_parameters(index._index)
        index.ids = list(ids)
        index._id_set = set(ids)
        return index


class FaissSearchBackend:
    """MTEB search backend (``mteb.models.IndexEncoderSearchProtocol``) that retrieves with a :class:`FaissIndex`.

    Pass it to ``mteb.models.SearchEncoderWrapper(encoder, index_backend=FaissSearchBackend(kind="ivf"))``, or
    use ``evaluate_beir(..., faiss_index="ivf")``. Each task split builds the index from the corpus
    embeddings MTEB computes, searches, and clears it. Full-corpus retrieval only: reranking tasks (which
    give candidate lists) are refused.

    Args:
        kind: Index kind (see :class:`FaissIndex`).
        **index_kwargs: Passed to :meth:`FaissIndex.build` (``nlist``, ``nprobe``, ``normalize``, ``use_gpu``, ...).
    """

    def __init__(self, kind: IndexKind = "flat", **index_kwargs: Any) -> None:
        if kind not in _KINDS:
            raise ValueError(f"Unknown faiss index kind {kind!r}; choose one of {_KINDS}")
        self.kind: IndexKind = kind
        self.index_kwargs = index_kwargs
        self.index: FaissIndex | None = None

    def add_documents(self, embeddings: Any, idxs: list[str]) -> None:
        if self.index is None:
            self.index = FaissIndex.build(embeddings, list(idxs), self.kind, **self.index_kwargs)
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


__all__ = ["FaissIndex", "FaissSearchBackend", "IndexKind", "default_nlist", "faiss_gpu_count"]
