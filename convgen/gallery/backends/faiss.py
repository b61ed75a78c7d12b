"""The ``faiss`` search backend: an HNSW graph (faiss-cpu) for galleries past ~10⁵ entries.

A query visits a few thousand vectors instead of all of them. Approximate; by default the
graph holds float16 copies of the vectors, so distances are exact to about 1e-3 (relative).
Persisted as ``<db>.faiss`` and ``<db>.faiss.json`` beside the gallery.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from convgen.errors import ConfigError
from convgen.gallery.search import PRIVATE, Capabilities, SearchIndex, padded, parse_options, require, saved_state, write_json
from convgen.io import atomic_path

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
    capabilities = Capabilities(approximate=True)
    defaults = {"m": 32, "ef_construction": 160, "ef_search": 128, "storage": "float16", "rebuild_fraction": 0.25}
    STORAGES = ("float16", "float32")

    def __init__(self, path: Path, dim: int, **options):
        super().__init__(path, dim)
        self.options = parse_options(self.kind, options, self.defaults)
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
        require("faiss", "faiss-cpu", self.kind)
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
        meta, generation = saved_state(self)
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
            return padded(len(queries), k)
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
            write_json(self.meta_path, {**meta, "generation": None})  # "unknown" until both files agree
            with atomic_path(self.index_path, mode=PRIVATE) as tmp:
                self._faiss.write_index(self._index, str(tmp))
            self._dirty = False
        write_json(self.meta_path, {**meta, "generation": generation})

    def _close(self) -> None:
        self._index = None
        self._positions = None
