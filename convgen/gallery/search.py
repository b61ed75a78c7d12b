"""Nearest-neighbour search over a gallery's embeddings, behind one interface with three backends.

A gallery's SQLite database is the source of truth; a search index is a derived, rebuildable
copy of its ``(id, vector)`` rows that answers "which enrolled vectors are closest to this
probe?". Distances are **squared Euclidean** (convgen's distance, see `convgen.metric.evaluation`),
returned ascending; a row with fewer than ``k`` entries is padded with ``(inf, -1)``.

Backends (`open_index` picks one by name):

* ``"exact"`` (default): a contiguous float32 matrix, searched with one matrix product per
  batch of queries. Exact, no parameters, and as fast as memory bandwidth allows: an unbatched
  query reads the matrix once. Persisted as ``<db>.vectors.npy`` (memory-mapped on open),
  ``<db>.ids.npy`` and ``<db>.vectors.json``.
* ``"faiss"``: an HNSW graph (faiss-cpu) for galleries past ~10⁵ entries, where a query
  visits a few thousand vectors instead of all of them. Approximate; by default the graph
  holds float16 copies of the vectors, so distances are exact to about 1e-3 (relative).
  Persisted as ``<db>.faiss`` and ``<db>.faiss.json``.
* ``"milvus"``: a Milvus collection, for galleries that outgrow one machine. ``uri`` is a
  milvus-lite file (the default, ``<db>.milvus.db``) or a server such as
  ``http://host:19530``. Milvus persists itself.

Generations. The store numbers each committed state of its database; ``save(generation)``
records which state the persisted index reflects, and `SearchIndex.generation` reports it
back (``None`` for a new, corrupt, half-written or since-modified index). On open the store
compares the two and rebuilds the index (``clear`` + ``add``) when they differ, so an index
never has to be repaired, only recognised as stale. Every file is written atomically
(temporary file + rename), and a save first marks the index "unknown", so a crash between
two files leaves ``generation is None``, never a stale number over mixed files.

Indexes are not thread-safe: one writer at a time (the store serialises access).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import math
import re
from pathlib import Path

import numpy as np

from convgen.errors import ConfigError, DataError, ModelMismatchError
from convgen.io import atomic_path

KINDS = ("exact", "faiss", "milvus")
_FORMAT = 1  # version of the sidecar files; another version reads as "unknown" and is rebuilt
_PRIVATE = 0o600  # index files hold the gallery's embeddings: owner-only, like the gallery


# --------------------------------------------------------------------------- shared checks


def _check_ids(ids) -> np.ndarray:
    """``ids`` as a 1-D int64 array of non-negative values (-1 is the padding id)."""
    array = np.asarray(ids)
    if array.ndim != 1:
        raise DataError(f"ids must be 1-D (one id per vector), got shape {array.shape}")
    if array.size and not np.issubdtype(array.dtype, np.integer):
        raise DataError(f"ids must be integers, got dtype {array.dtype}")
    array = array.astype(np.int64, copy=False)
    if array.size and array.min() < 0:
        raise DataError("ids must be non-negative: -1 marks padding in search results")
    return array


def _check_vectors(vectors, dim: int, name: str) -> np.ndarray:
    """``vectors`` as a C-contiguous float32 ``(n, dim)`` array of finite values."""
    array = np.asarray(vectors)
    if array.ndim != 2:
        raise DataError(f"{name} must be 2-D (n, {dim}), got shape {array.shape}")
    if array.shape[1] != dim:
        raise ModelMismatchError(
            f"{name} have {array.shape[1]} dimensions but the index holds {dim}-dimensional embeddings; "
            "embed with the gallery's model"
        )
    if not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)):
        raise DataError(f"{name} must be real numbers, got dtype {array.dtype}")
    array = np.ascontiguousarray(array, dtype=np.float32)
    if not np.isfinite(array).all():
        raise DataError(f"{name} hold NaN or infinite values; fix the embeddings")
    return array


def _check_k(k) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 0:
        raise ValueError(f"k must be a non-negative integer, got {k!r}")
    return int(k)


def _padded(count: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    return np.full((count, k), np.inf, np.float32), np.full((count, k), -1, np.int64)


def _read_json(path: Path) -> dict | None:
    """A sidecar's content, or None when it is missing or unreadable (the index is then rebuilt)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("format") == _FORMAT else None


def _write_json(path: Path, data: dict) -> None:
    with atomic_path(path, mode=_PRIVATE) as tmp:
        tmp.write_text(json.dumps({"format": _FORMAT, **data}, indent=1) + "\n", encoding="utf-8")


def _stored_generation(meta: dict) -> int | None:
    value = meta.get("generation")
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _check_dim(meta: dict, dim: int, where: Path) -> None:
    stored = meta.get("dim")
    if isinstance(stored, int) and stored != dim:
        raise ModelMismatchError(
            f"{where.name} holds {stored}-dimensional embeddings but the gallery's model makes {dim}; "
            "open the gallery with the model it was enrolled with, or delete the index file to rebuild it"
        )


def _saved_state(index) -> tuple[dict | None, int | None]:
    """The sidecar of ``index``'s persisted files and the generation they reflect.

    ``(None, None)`` when there is no usable sidecar (missing, corrupt, another kind);
    a sidecar for another embedding size is a ModelMismatchError.
    """
    meta = _read_json(index.meta_path)
    if meta is None or meta.get("kind") != index.kind:
        return None, None
    _check_dim(meta, index.dim, index.meta_path)
    return meta, _stored_generation(meta)


def _options(kind: str, given: dict, defaults: dict) -> dict:
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        known = ", ".join(defaults) or "none"
        raise ConfigError(f"unknown option(s) {', '.join(unknown)} for the {kind} search backend; known: {known}")
    return {**defaults, **given}


def _require(module: str, install: str, kind: str) -> None:
    if importlib.util.find_spec(module) is None:
        raise ConfigError(f"the {kind} search backend needs the {module} package: pip install {install}")


# --------------------------------------------------------------------------- interface


class SearchIndex:
    """Nearest neighbours by squared Euclidean distance over (id, vector) entries.

    The public methods check their arguments and keep the generation bookkeeping; the
    backends implement ``_add``, ``_remove``, ``_search``, ``_clear``, ``_save`` and
    ``_close``. Ids are non-negative int64 (``-1`` is the padding id); vectors are float32.
    """

    kind: str = ""

    def __init__(self, path: Path, dim: int):
        self.path = Path(path)
        self.dim = int(dim)
        self._generation: int | None = None
        self._closed = False

    # -- the interface the store calls

    def add(self, ids, vectors) -> None:
        """Insert new entries; ``ids`` must be unique and not in the index yet."""
        self._check_open()
        ids = _check_ids(ids)
        vectors = _check_vectors(vectors, self.dim, "vectors")
        if len(ids) != len(vectors):
            raise DataError(f"{len(ids)} ids for {len(vectors)} vectors; pass one id per vector")
        if len(ids) == 0:
            return
        if len(np.unique(ids)) != len(ids):
            raise ValueError("ids passed to add() repeat; each entry needs its own id")
        self._changing()
        self._add(ids, vectors)

    def remove(self, ids) -> None:
        """Delete entries by id; ids not in the index are ignored."""
        self._check_open()
        ids = np.unique(_check_ids(ids))
        if len(ids):
            self._remove(ids)

    def search(self, queries, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` nearest entries of each query: ``(distances (q, k) float32, ids (q, k) int64)``.

        Distances are squared Euclidean, ascending; missing neighbours are ``(inf, -1)``.
        """
        self._check_open()
        queries = _check_vectors(queries, self.dim, "queries")
        k = _check_k(k)
        if len(queries) == 0 or k == 0:
            return _padded(len(queries), k)
        return self._search(queries, k)

    def __len__(self) -> int:
        raise NotImplementedError

    def save(self, generation: int) -> None:
        """Persist the index as reflecting the store's state number ``generation``."""
        self._check_open()
        if isinstance(generation, bool) or not isinstance(generation, (int, np.integer)):
            raise ValueError(f"generation must be an integer, got {generation!r}")
        self._save(int(generation))
        self._generation = int(generation)

    @property
    def generation(self) -> int | None:
        """The store generation this index reflects; None if new, corrupt or changed since the last save."""
        return self._generation

    def checksum(self) -> str | None:
        """A digest of the entries as held now (None: the backend keeps its own data, e.g. Milvus).

        The store records it in the database when it saves the index, and trusts a persisted
        index only when its digest matches the record of that generation: a cache file that was
        swapped or poisoned (well-formed, with the right generation) is rebuilt, not believed.
        """
        return None

    def clear(self) -> None:
        """Remove every entry (the first step of a rebuild)."""
        self._check_open()
        self._changing()
        self._clear()

    def close(self) -> None:
        """Release files and connections; does not save (call `save` first to keep changes)."""
        if not self._closed:
            self._closed = True
            self._close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"{len(self)} entries"
        return f"<{type(self).__name__} {self.path.name} dim={self.dim} {state} generation={self._generation}>"

    # -- helpers for the backends

    def _check_open(self) -> None:
        if self._closed:
            raise ValueError(f"the {self.kind} index of {self.path.name} is closed")

    def _changing(self) -> None:
        """Called before every change: the index no longer reflects the saved generation."""
        self._generation = None

    def _add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        raise NotImplementedError

    def _remove(self, ids: np.ndarray) -> None:
        raise NotImplementedError

    def _search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def _clear(self) -> None:
        raise NotImplementedError

    def _save(self, generation: int) -> None:
        raise NotImplementedError

    def _close(self) -> None:
        pass


def open_index(kind: str, path, dim: int, **options) -> SearchIndex:
    """Open (or create) the ``kind`` search index of the gallery database at ``path``.

    The index's files live beside ``path``; ``options`` are the backend's (see each class).
    A persisted index of another dimension raises `ModelMismatchError`; a corrupt one opens
    empty with ``generation None`` so that the store rebuilds it.
    """
    if kind not in KINDS:
        raise ConfigError(f"unknown search backend {kind!r}; known: {', '.join(KINDS)}")
    if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or dim < 1:
        raise ValueError(f"dim must be a positive integer, got {dim!r}")
    backend = {"exact": ExactIndex, "faiss": FaissIndex, "milvus": MilvusIndex}[kind]
    return backend(Path(path), int(dim), **options)


# --------------------------------------------------------------------------- exact


_BLOCK = 1024  # rows per block for the block-minimum threshold of the top-k selection


class ExactIndex(SearchIndex):
    """Brute force, done fast: a float32 matrix, its half squared norms, one GEMM per query batch.

    ``|x - q|² = 2·(½|x|² - x·q) + |q|²``, so ranking needs only ``½|x|² - x·q``: one matrix
    product over rows that stay in cache while the norms are subtracted. The top-k is found by
    a threshold (the k-th smallest of per-block minima bounds the k-th smallest score), which
    costs two cheap passes instead of a partial sort; the few candidates are then re-ranked
    with exact ``|x - q|²`` (float64), ties broken by id. Rows grow geometrically, and removal
    moves the last rows into the holes, so the matrix stays contiguous.

    Options: ``scratch_bytes`` (default 256 MiB) bounds the score buffer; queries are taken
    in passes of ``scratch_bytes / (4·n)``.
    """

    kind = "exact"

    def __init__(self, path: Path, dim: int, **options):
        super().__init__(path, dim)
        options = _options(self.kind, options, {"scratch_bytes": 256 << 20})
        self._scratch_elements = max(1, int(options["scratch_bytes"]) // 4)
        self._scratch: np.ndarray | None = None
        self.vectors_path = self.path.with_name(self.path.name + ".vectors.npy")
        self.ids_path = self.path.with_name(self.path.name + ".ids.npy")
        self.meta_path = self.path.with_name(self.path.name + ".vectors.json")
        self._reset()
        self._load()

    def _reset(self) -> None:
        self._vectors = np.empty((0, self.dim), np.float32)  # capacity rows; the first _n are live
        self._ids = np.empty(0, np.int64)
        self._half: np.ndarray | None = np.empty(0, np.float32)  # ½|x|², None until first needed
        self._half_max = 0.0  # an upper bound of ½|x|² (for the rounding margin)
        self._n = 0
        self._positions: dict[int, int] | None = {}  # id -> row; None until first needed
        self._dirty = True  # in-memory state differs from the files

    def _load(self) -> None:
        meta, generation = _saved_state(self)
        if generation is None:
            return
        try:
            vectors = np.load(self.vectors_path, mmap_mode="r", allow_pickle=False)
            ids = np.load(self.ids_path, allow_pickle=False)
        except (OSError, ValueError, EOFError):
            return
        count = meta.get("count")
        if (
            not isinstance(count, int)
            or vectors.dtype != np.float32
            or vectors.shape != (count, self.dim)
            or ids.dtype != np.int64
            or ids.shape != (count,)
            or not vectors.flags.c_contiguous
        ):
            return
        self._vectors, self._ids, self._n = vectors, ids, count
        self._half, self._positions = None, None  # computed on first use: opening stays O(1) in reads
        self._dirty = False
        self._generation = generation

    def __len__(self) -> int:
        return self._n

    # -- bookkeeping

    def _writable(self, rows: int) -> None:
        """Make room for ``rows`` rows in writable memory (the opened file is a read-only map)."""
        capacity = len(self._vectors)
        if rows <= capacity and self._vectors.flags.writeable:
            return
        if rows > capacity:
            capacity = max(rows, int(capacity * 1.5), 1024)  # geometric growth: amortised O(1) per row
        half = self._half_norms()
        vectors = np.empty((capacity, self.dim), np.float32)
        ids = np.empty(capacity, np.int64)
        new_half = np.empty(capacity, np.float32)
        vectors[: self._n] = self._vectors[: self._n]
        ids[: self._n] = self._ids[: self._n]
        new_half[: self._n] = half
        self._vectors, self._ids, self._half = vectors, ids, new_half

    def _half_norms(self) -> np.ndarray:
        if self._half is None:
            live = self._vectors[: self._n]
            half = np.empty(self._n, np.float32)
            for start in range(0, self._n, 1 << 16):  # chunked: no (n, D) temporary
                chunk = live[start : start + (1 << 16)]
                half[start : start + len(chunk)] = 0.5 * np.einsum("ij,ij->i", chunk, chunk)
            self._half = half
            self._half_max = float(half.max()) if self._n else 0.0
        return self._half[: self._n]

    def _position_map(self) -> dict[int, int]:
        if self._positions is None:
            self._positions = dict(zip(self._ids[: self._n].tolist(), range(self._n)))
        return self._positions

    # -- backend

    def _add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        positions = self._position_map()
        clash = [i for i in ids.tolist() if i in positions]
        if clash:
            raise ValueError(f"ids already in the index: {clash[:5]}; remove them first")
        start, stop = self._n, self._n + len(ids)
        self._writable(stop)
        half = 0.5 * np.einsum("ij,ij->i", vectors, vectors)
        self._vectors[start:stop] = vectors
        self._ids[start:stop] = ids
        self._half[start:stop] = half
        self._half_max = max(self._half_max, float(half.max()))
        positions.update(zip(ids.tolist(), range(start, stop)))
        self._n = stop
        self._dirty = True

    def _remove(self, ids: np.ndarray) -> None:
        positions = self._position_map()
        rows = np.array([positions.pop(i) for i in ids.tolist() if i in positions], np.int64)
        if not len(rows):
            return
        self._changing()
        self._writable(self._n)
        keep = self._n - len(rows)
        holes = np.sort(rows[rows < keep])  # rows to fill, below the new end
        dead = np.zeros(self._n - keep, bool)
        dead[rows[rows >= keep] - keep] = True
        movers = keep + np.flatnonzero(~dead)  # live rows past the new end, moved into the holes
        self._vectors[holes] = self._vectors[movers]
        self._ids[holes] = self._ids[movers]
        self._half[holes] = self._half[movers]
        positions.update(zip(self._ids[holes].tolist(), holes.tolist()))
        self._n = keep
        self._dirty = True

    def _clear(self) -> None:
        self._reset()

    def checksum(self) -> str:
        digest = hashlib.sha256(f"{self.kind}|{self.dim}|{self._n}|".encode())
        digest.update(np.ascontiguousarray(self._ids[: self._n]).data)
        for start in range(0, self._n, 1 << 16):  # chunked: a memory-mapped matrix is read once, not copied
            digest.update(np.ascontiguousarray(self._vectors[start : min(start + (1 << 16), self._n)]).data)
        return digest.hexdigest()

    def _search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        n = self._n
        distances, labels = _padded(len(queries), k)
        if n == 0:
            return distances, labels
        vectors, ids, half = self._vectors[:n], self._ids[:n], self._half_norms()
        per_pass = max(1, min(len(queries), self._scratch_elements // n))
        for start in range(0, len(queries), per_pass):
            block = queries[start : start + per_pass]
            scores = self._scores(vectors, half, block)
            # Twice the float32 rounding bound of a D-term dot product and norm (D·u each, u = eps/2),
            # so every entry that is really within the k nearest passes the threshold.
            q_norm = np.sqrt(np.einsum("ij,ij->i", block, block, dtype=np.float64))
            eps = 2 * self.dim * float(np.finfo(np.float32).eps)
            tolerance = eps * (self._half_max + math.sqrt(2 * self._half_max) * q_norm) + 1e-30
            for j, rows in enumerate(_candidates(scores, min(k, n), tolerance)):
                found_d, found_i = _rerank(vectors, ids, block[j], rows, k)
                distances[start + j, : len(found_d)] = found_d
                labels[start + j, : len(found_i)] = found_i
        return distances, labels

    def _scores(self, vectors: np.ndarray, half: np.ndarray, block: np.ndarray) -> np.ndarray:
        """``½|x|² - x·q`` as an ``(n, len(block))`` view of a reused buffer (rank-equivalent to distance)."""
        n, b = len(vectors), len(block)
        if self._scratch is None or self._scratch.size < n * b:
            self._scratch = None  # free the old buffer before allocating the new one
            self._scratch = np.empty(n * b, np.float32)
        scores = self._scratch[: n * b].reshape(n, b)
        step = max(_BLOCK, (1 << 18) // b // _BLOCK * _BLOCK)  # ~1 MiB of scores per product: stays in cache
        if b == 1:
            query = block[0]
            column = scores[:, 0]  # contiguous: one matrix-vector product per step
            for row in range(0, n, step):
                part = column[row : row + step]
                np.matmul(vectors[row : row + step], query, out=part)
                np.subtract(half[row : row + step], part, out=part)
            return scores
        transposed = np.ascontiguousarray(block.T)
        for row in range(0, n, step):
            part = scores[row : row + step]
            np.matmul(vectors[row : row + step], transposed, out=part)
            np.subtract(half[row : row + step, None], part, out=part)
        return scores

    def _save(self, generation: int) -> None:
        if self._dirty or not (self.vectors_path.exists() and self.ids_path.exists()):
            # Mark "unknown" first: a crash between the files below must not leave a valid-looking mix.
            _write_json(self.meta_path, {"kind": self.kind, "dim": self.dim, "count": None, "generation": None})
            for target, array in ((self.vectors_path, self._vectors[: self._n]), (self.ids_path, self._ids[: self._n])):
                with atomic_path(target, mode=_PRIVATE) as tmp, open(tmp, "wb") as handle:
                    np.save(handle, np.ascontiguousarray(array), allow_pickle=False)
            self._dirty = False
        _write_json(self.meta_path, {"kind": self.kind, "dim": self.dim, "count": self._n, "generation": generation})

    def _close(self) -> None:
        self._reset()
        self._scratch = None


def _candidates(scores: np.ndarray, k: int, tolerance: np.ndarray) -> list[np.ndarray]:
    """Per column of ``scores`` (n, b), the rows whose score is within rounding of its k smallest.

    The set is a superset of the true k nearest, including every entry tied with the k-th, so
    that the exact re-rank can break ties by id.
    """
    n, b = scores.shape
    want = min(n, k)
    if want == n:
        return [np.arange(n)] * b
    size = min(_BLOCK, n // (4 * want))  # at least 4·want blocks, so the bound below is tight
    if size >= 8:
        # Each of the `want` blocks with the smallest minima holds an entry <= the want-th
        # smallest minimum, so that minimum bounds the want-th smallest entry from above.
        blocks = n // size
        minima = scores[: blocks * size].reshape(blocks, size, b).min(axis=1)
        bound = np.partition(minima, want - 1, axis=0)[want - 1]
    else:  # a small gallery: the exact want-th smallest is cheap
        bound = np.partition(scores, want - 1, axis=0)[want - 1]
    threshold = (bound + tolerance).astype(np.float32)
    if b == 1:
        return [np.flatnonzero(scores[:, 0] <= threshold[0])]
    rows, cols = np.nonzero(scores <= threshold)
    order = np.argsort(cols, kind="stable")  # keeps rows ascending within a column
    return np.split(rows[order], np.cumsum(np.bincount(cols, minlength=b))[:-1])


def _rerank(vectors: np.ndarray, ids: np.ndarray, query: np.ndarray, rows: np.ndarray, k: int):
    """The k nearest of ``rows`` by exact squared distance (float64), ties broken by id."""
    query = query.astype(np.float64)
    distance = np.empty(len(rows))
    for start in range(0, len(rows), 1 << 15):  # many ties (duplicated vectors) stay memory-bounded
        diff = vectors[rows[start : start + (1 << 15)]].astype(np.float64) - query
        distance[start : start + len(diff)] = np.einsum("ij,ij->i", diff, diff)
    found = ids[rows]
    order = np.lexsort((found, distance))[:k]
    return distance[order].astype(np.float32), found[order]


# --------------------------------------------------------------------------- faiss


class FaissIndex(SearchIndex):
    """Approximate search with an HNSW graph (faiss ``IndexHNSWSQ`` or ``IndexHNSWFlat`` inside an ``IndexIDMap``).

    Why HNSW with tombstones: HNSW answers a query by visiting ~``ef_search`` · M vectors, so
    its latency barely grows with the gallery, and it takes incremental inserts; but it cannot
    delete a node. Removal therefore relabels the node ``-1`` in the id map (a tombstone) and
    searches filter tombstones out with an ``IDSelectorRange`` (the graph still routes through
    them, so recall does not suffer). Tombstones cost memory and search time, so once they make
    up ``rebuild_fraction`` of the graph the index is rebuilt from its own stored vectors
    (`compact`, O(n log n): seconds at 10⁵ entries, minutes at 10⁶). A re-enrolled id gets a
    new node; its old node stays a tombstone, so it can never come back. IVF-Flat would delete
    in place, but needs a training set up front and, at recall@1 ≥ 0.99, scans far more.

    Why float16 storage by default: a query's time goes into fetching the vectors of the nodes
    it visits from memory, not into arithmetic. Half-size vectors halve the fetched bytes
    (1.7x faster at the same ``ef_search`` and recall on 2·10⁵ face-like vectors) and the
    graph's memory. The cost is precision: float16 keeps 11 significant bits, so a returned
    squared distance is off by ~1e-4 for unit vectors (far below any threshold's margin) and
    near-ties may swap. ``storage="float32"`` keeps exact distances.

    Why ``ef_construction`` 160 (faiss's own default is 40): a better-connected graph reaches
    a given recall at a smaller ``ef_search``, so every search is faster, for inserts that
    take twice as long (~0.4 ms each on two cores). Together, on 10⁶ face-like vectors:
    recall@1 0.995 in 0.32 ms per query, against 0.64 ms with float32 and 80
    (`benchmarks/bench_gallery.py --model dlib-orl`).

    Options: ``m`` (graph degree, 32), ``ef_construction`` (160), ``ef_search`` (128; raise it
    for recall, lower it for speed; `benchmarks/bench_gallery.py` sweeps it), ``storage``
    (``float16`` or ``float32``), ``rebuild_fraction`` (0.25; None never rebuilds). ``m`` and
    ``storage`` shape a new or rebuilt graph (a persisted graph keeps its own);
    ``ef_construction`` applies to inserts from then on; ``ef_search`` may be changed at any
    time through ``index.options``.
    """

    kind = "faiss"
    _DEFAULTS = {"m": 32, "ef_construction": 160, "ef_search": 128, "storage": "float16", "rebuild_fraction": 0.25}
    STORAGES = ("float16", "float32")

    def __init__(self, path: Path, dim: int, **options):
        super().__init__(path, dim)
        self.options = _options(self.kind, options, self._DEFAULTS)
        for name in ("m", "ef_construction", "ef_search"):
            value = self.options[name]
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ConfigError(f"faiss option {name} must be a positive integer, got {value!r}")
        if self.options["storage"] not in self.STORAGES:
            raise ConfigError(f"faiss option storage must be one of {', '.join(self.STORAGES)}, got {self.options['storage']!r}")
        fraction = self.options["rebuild_fraction"]
        number = isinstance(fraction, (int, float)) and not isinstance(fraction, bool)
        if fraction is not None and not (number and 0 < fraction <= 1):
            raise ConfigError(f"faiss option rebuild_fraction must be in (0, 1] or None, got {fraction!r}")
        _require("faiss", "faiss-cpu", self.kind)
        import faiss

        self._faiss = faiss
        self.index_path = self.path.with_name(self.path.name + ".faiss")
        self.meta_path = self.path.with_name(self.path.name + ".faiss.json")
        self._selector = faiss.IDSelectorRange(0, np.iinfo(np.int64).max)  # labels >= 0: live nodes
        self._reset()
        self._load()

    def _new_index(self):
        faiss = self._faiss
        m = int(self.options["m"])
        if self.options["storage"] == "float32":
            graph = faiss.IndexHNSWFlat(self.dim, m)
        else:
            graph = faiss.IndexHNSWSQ(self.dim, faiss.ScalarQuantizer.QT_fp16, m)
        graph.hnsw.efConstruction = int(self.options["ef_construction"])
        return faiss.IndexIDMap(graph)

    def _reset(self) -> None:
        self._index = self._new_index()
        self._positions: dict[int, int] | None = {}  # id -> node; None until first needed
        self._dead = 0  # tombstoned nodes
        self._dirty = True

    def _load(self) -> None:
        meta, generation = _saved_state(self)
        if generation is None or not self.index_path.exists():
            return
        faiss = self._faiss
        try:
            index = faiss.read_index(str(self.index_path))
        except RuntimeError:  # faiss reports any unreadable file this way
            return
        graph = faiss.downcast_index(index.index) if isinstance(index, faiss.IndexIDMap) else None
        if not isinstance(graph, (faiss.IndexHNSWFlat, faiss.IndexHNSWSQ)) or index.d != self.dim or index.ntotal != meta.get("ntotal"):
            return
        self._index = index
        graph.hnsw.efConstruction = int(self.options["ef_construction"])
        self._dead = int((self._labels() < 0).sum())
        self._positions = None
        self._dirty = False
        self._generation = generation

    def _labels(self) -> np.ndarray:
        """The id map as a writable numpy view (node -> id, -1 for a tombstone)."""
        id_map = self._index.id_map
        if id_map.size() == 0:
            return np.empty(0, np.int64)
        return self._faiss.rev_swig_ptr(id_map.data(), id_map.size())

    def _position_map(self) -> dict[int, int]:
        if self._positions is None:
            labels = self._labels()
            live = np.flatnonzero(labels >= 0)
            self._positions = dict(zip(labels[live].tolist(), live.tolist()))
        return self._positions

    def __len__(self) -> int:
        return self._index.ntotal - self._dead

    def _add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        positions = self._position_map()
        clash = [i for i in ids.tolist() if i in positions]
        if clash:
            raise ValueError(f"ids already in the index: {clash[:5]}; remove them first")
        start = self._index.ntotal
        self._index.add_with_ids(vectors, ids)
        positions.update(zip(ids.tolist(), range(start, start + len(ids))))
        self._dirty = True

    def _remove(self, ids: np.ndarray) -> None:
        positions = self._position_map()
        nodes = [positions.pop(i) for i in ids.tolist() if i in positions]
        if not nodes:
            return
        self._changing()
        self._labels()[nodes] = -1
        self._dead += len(nodes)
        self._dirty = True
        fraction = self.options["rebuild_fraction"]
        if fraction is not None and self._dead > fraction * self._index.ntotal:
            self.compact()

    def compact(self) -> None:
        """Rebuild the graph from its live vectors, dropping every tombstone."""
        if self._dead == 0:
            return
        self._changing()
        labels = self._labels()
        live = np.flatnonzero(labels >= 0)
        graph = self._faiss.downcast_index(self._index.index)
        vectors = graph.storage.reconstruct_n(0, self._index.ntotal)[live]  # copies: the old index is freed below
        ids = labels[live].copy()
        self._reset()
        if len(ids):
            self._index.add_with_ids(vectors, ids)
            self._positions = dict(zip(ids.tolist(), range(len(ids))))

    def _search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        if len(self) == 0:
            return _padded(len(queries), k)
        faiss = self._faiss
        params = faiss.SearchParametersHNSW()
        params.efSearch = max(int(self.options["ef_search"]), k)
        if self._dead:
            params.sel = self._selector
        threads = faiss.omp_get_max_threads()
        if len(queries) == 1:  # nothing to share: don't wait at a barrier for an idle (or preempted) thread
            faiss.omp_set_num_threads(1)
        try:
            distances, labels = self._index.search(queries, k, params=params)
        finally:
            faiss.omp_set_num_threads(threads)
        missing = labels < 0
        distances[missing] = np.inf
        labels[missing] = -1
        return distances.astype(np.float32, copy=False), labels.astype(np.int64, copy=False)

    def _clear(self) -> None:
        self._reset()

    def checksum(self) -> str:
        digest = hashlib.sha256(f"{self.kind}|{self.dim}|".encode())
        digest.update(self._faiss.serialize_index(self._index).data)
        return digest.hexdigest()

    def _save(self, generation: int) -> None:
        meta = {"kind": self.kind, "dim": self.dim, "ntotal": self._index.ntotal, "live": len(self)}
        graph = self._faiss.downcast_index(self._index.index)
        storage = "float32" if isinstance(graph, self._faiss.IndexHNSWFlat) else "float16"
        meta["parameters"] = {"m": int(graph.hnsw.nb_neighbors(1)), "ef_construction": int(graph.hnsw.efConstruction), "storage": storage}
        if self._dirty or not self.index_path.exists():
            _write_json(self.meta_path, {**meta, "generation": None})  # "unknown" until both files agree
            with atomic_path(self.index_path, mode=_PRIVATE) as tmp:
                self._faiss.write_index(self._index, str(tmp))
            self._dirty = False
        _write_json(self.meta_path, {**meta, "generation": generation})

    def _close(self) -> None:
        self._index = None
        self._positions = None


# --------------------------------------------------------------------------- milvus


class MilvusIndex(SearchIndex):
    """A Milvus collection (fields ``id`` INT64 primary key, ``vector`` FLOAT_VECTOR, metric L2).

    Why: a Milvus cluster shards and replicates a collection over machines, so the gallery
    can outgrow one; milvus-lite runs the same API from a local file, for tests and laptops.
    Milvus's L2 metric is the squared Euclidean distance (it skips the square root), so its
    distances are returned as they are. Milvus persists every write itself; the generation
    lives in the collection's properties (``convgen.generation``), next to the data it
    describes, and is cleared before the first change after a save, so a crash mid-change
    leaves it unknown.

    Options: ``uri`` (default: ``<db>.milvus.db``, a milvus-lite file; or ``http://host:19530``),
    ``token``, ``collection`` (default: derived from the database file name; pass one per
    gallery on a shared server), ``index_type`` (default ``FLAT``, exact, for a local file,
    ``AUTOINDEX`` for a server), ``index_params``, ``search_params``, ``timeout`` (seconds).
    """

    kind = "milvus"
    _DEFAULTS = {
        "uri": None, "token": "", "collection": None, "index_type": None,
        "index_params": None, "search_params": None, "timeout": None,
    }  # fmt: skip
    _PROPERTY = "convgen.generation"
    _BATCH = 4096  # rows per insert/delete request, well under Milvus's message size limit
    _MAX_K = 16384  # Milvus's largest topk

    def __init__(self, path: Path, dim: int, **options):
        super().__init__(path, dim)
        options = _options(self.kind, options, self._DEFAULTS)
        self.uri = str(options["uri"] or self.path.with_name(self.path.name + ".milvus.db"))
        local = not re.match(r"^[a-z][a-z0-9+.-]*://", self.uri)
        _require("pymilvus", "pymilvus milvus-lite", self.kind)
        if local:
            _require("milvus_lite", "pymilvus milvus-lite", self.kind)
        from pymilvus import DataType, MilvusClient

        self._datatype = DataType
        self.collection = options["collection"] or "convgen_" + re.sub(r"\W", "_", self.path.name, flags=re.ASCII)
        self._index_type = options["index_type"] or ("FLAT" if local else "AUTOINDEX")
        self._index_params = dict(options["index_params"] or {})
        self._search_params = dict(options["search_params"] or {})
        self._timeout = options["timeout"]
        try:
            self._client = MilvusClient(uri=self.uri, token=options["token"], timeout=self._timeout)
        except Exception as error:  # pymilvus raises several kinds for an unreachable server
            raise ConfigError(f"cannot connect to Milvus at {self.uri}: {error}") from None
        if local and Path(self.uri).is_file():
            Path(self.uri).chmod(_PRIVATE)
        self._marked = False  # has the collection been marked "changed since the last save"?
        self._open_collection()

    def _open_collection(self) -> None:
        client = self._client
        if not client.has_collection(self.collection, timeout=self._timeout):
            self._create()
            return
        info = client.describe_collection(self.collection, timeout=self._timeout)
        fields = {field["name"]: field for field in info.get("fields", [])}
        vector, key = fields.get("vector"), fields.get("id")
        if not vector or not key or not key.get("is_primary") or key.get("type") != self._datatype.INT64:
            raise ConfigError(
                f"Milvus collection {self.collection!r} at {self.uri} was not made by convgen "
                "(it needs an INT64 primary key 'id' and a 'vector' field); pass collection=<another name>"
            )
        stored = int(vector.get("params", {}).get("dim", -1))
        if stored != self.dim:
            raise ModelMismatchError(
                f"Milvus collection {self.collection!r} holds {stored}-dimensional embeddings but the gallery's "
                f"model makes {self.dim}; open the gallery with the model it was enrolled with"
            )
        client.load_collection(self.collection, timeout=self._timeout)
        value = str((info.get("properties") or {}).get(self._PROPERTY, ""))
        self._generation = int(value) if re.fullmatch(r"-?\d+", value) else None
        self._marked = self._generation is None

    def _create(self) -> None:
        client, types = self._client, self._datatype
        schema = client.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("id", types.INT64, is_primary=True)
        schema.add_field("vector", types.FLOAT_VECTOR, dim=self.dim)
        index = client.prepare_index_params()
        index.add_index(field_name="vector", index_type=self._index_type, metric_type="L2", params=self._index_params)
        client.create_collection(
            self.collection, schema=schema, index_params=index, consistency_level="Strong", timeout=self._timeout
        )
        client.load_collection(self.collection, timeout=self._timeout)
        self._generation, self._marked = None, True

    def _set_generation(self, generation: int | None) -> None:
        value = "" if generation is None else str(generation)
        self._client.alter_collection_properties(self.collection, properties={self._PROPERTY: value}, timeout=self._timeout)

    def _changing(self) -> None:
        if not self._marked:  # once per save: the property is cleared before the data changes
            self._set_generation(None)
            self._marked = True
        super()._changing()

    def __len__(self) -> int:
        rows = self._client.query(self.collection, filter="", output_fields=["count(*)"], timeout=self._timeout)
        return int(rows[0]["count(*)"])

    def _add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        for start in range(0, len(ids), self._BATCH):  # Milvus would keep both rows of a repeated key
            chunk = ids[start : start + self._BATCH].tolist()
            existing = self._client.get(self.collection, ids=chunk, output_fields=["id"], timeout=self._timeout)
            if existing:
                raise ValueError(f"ids already in the index: {[row['id'] for row in existing][:5]}; remove them first")
        for start in range(0, len(ids), self._BATCH):
            rows = [
                {"id": i, "vector": v}
                for i, v in zip(ids[start : start + self._BATCH].tolist(), vectors[start : start + self._BATCH])
            ]
            self._client.insert(self.collection, rows, timeout=self._timeout)

    def _remove(self, ids: np.ndarray) -> None:
        self._changing()
        for start in range(0, len(ids), self._BATCH):
            self._client.delete(self.collection, ids=ids[start : start + self._BATCH].tolist(), timeout=self._timeout)

    def _search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        if k > self._MAX_K:
            raise ValueError(f"the milvus backend returns at most {self._MAX_K} neighbours per query, asked for {k}")
        distances, labels = _padded(len(queries), k)
        params = {"metric_type": "L2", "params": self._search_params}
        step = max(1, min(1024, (1 << 20) // k))
        for start in range(0, len(queries), step):
            block = queries[start : start + step]
            hits = self._client.search(
                self.collection, data=list(block), limit=k, search_params=params,
                output_fields=["id"], timeout=self._timeout,
            )  # fmt: skip
            for j, row in enumerate(hits):
                found = len(row.ids)
                distances[start + j, :found] = row.distances
                labels[start + j, :found] = row.ids
        return distances, labels

    def _clear(self) -> None:
        self._client.drop_collection(self.collection, timeout=self._timeout)
        self._create()

    def _save(self, generation: int) -> None:
        self._client.flush(self.collection, timeout=self._timeout)  # durable before it is vouched for
        self._set_generation(generation)
        self._marked = False

    def _close(self) -> None:
        self._client.close()
