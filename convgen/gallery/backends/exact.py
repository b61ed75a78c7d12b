"""The ``exact`` search backend: brute force over a contiguous float32 matrix, done fast.

Persisted as ``<db>.vectors.npy`` (memory-mapped on open), ``<db>.ids.npy`` and
``<db>.vectors.json`` beside the gallery. Exact, no parameters, and as fast as memory
bandwidth allows: an unbatched query reads the matrix once.
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

import numpy as np

from convgen.gallery.search import PRIVATE, SearchIndex, padded, parse_options, saved_state, write_json
from convgen.io import atomic_path

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
    defaults = {"scratch_bytes": 256 << 20}

    def __init__(self, path: Path, dim: int, **options):
        super().__init__(path, dim)
        options = parse_options(self.kind, options, self.defaults)
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
        meta, generation = saved_state(self)
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
        distances, labels = padded(len(queries), k)
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
            write_json(self.meta_path, {"kind": self.kind, "dim": self.dim, "count": None, "generation": None})
            for target, array in ((self.vectors_path, self._vectors[: self._n]), (self.ids_path, self._ids[: self._n])):
                with atomic_path(target, mode=PRIVATE) as tmp, open(tmp, "wb") as handle:
                    np.save(handle, np.ascontiguousarray(array), allow_pickle=False)
            self._dirty = False
        write_json(self.meta_path, {"kind": self.kind, "dim": self.dim, "count": self._n, "generation": generation})

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
