"""Nearest-neighbour search over a gallery's embeddings: the interface every search backend implements.

A gallery's SQLite database is the source of truth; a search index is a derived, rebuildable
copy of its ``(id, vector)`` rows that answers "which enrolled vectors are closest to this
probe?". Distances are **squared Euclidean** (convgen's distance, see `convgen.metric.evaluation`),
returned ascending; a row with fewer than ``k`` entries is padded with ``(inf, -1)``.

Backends are a registry kind (``search_backend``), filled through the
``register_search_backends`` hook like any component, so a plugin ships one (pgvector,
Qdrant...) the way it ships a reader. The core's own, one module each under
`convgen.gallery.backends` and registered by ``convgen.default_plugins.search``:

* ``"exact"`` (default): a contiguous float32 matrix, one matrix product per batch of
  queries; exact, persisted beside the database (`convgen.gallery.backends.exact`).
* ``"faiss"``: an HNSW graph (faiss-cpu) for galleries past ~10⁵ entries; approximate
  (`convgen.gallery.backends.faiss`).
* ``"milvus"``: a Milvus collection, for galleries that outgrow one machine
  (`convgen.gallery.backends.milvus`).

A backend is a `SearchIndex` subclass that declares its `Capabilities` (the store reads
them, never the backend's name) and implements ``_add``, ``_remove``, ``_search``,
``_clear``, ``_save`` (and ``checksum``, ``_close``).

Generations. The store numbers each committed state of its database; ``save(generation)``
records which state the persisted index reflects, and `SearchIndex.generation` reports it
back (``None`` for a new, corrupt, half-written or since-modified index). On open the store
compares the two and rebuilds the index (``clear`` + ``add``) when they differ, so an index
never has to be repaired, only recognised as stale (`convgen.gallery.sync`). Every file is
written atomically (temporary file + rename), and a save first marks the index "unknown",
so a crash between two files leaves ``generation is None``, never a stale number over mixed files.

Indexes are not thread-safe: one writer at a time (the store serialises access).
"""

from __future__ import annotations

import importlib.util
import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from convgen.errors import ConfigError, DataError, ModelMismatchError
from convgen.io import atomic_path

FORMAT = 1  # version of the sidecar files; another version reads as "unknown" and is rebuilt
PRIVATE = 0o600  # index files hold the gallery's embeddings: owner-only, like the gallery


# --------------------------------------------------------------------------- capabilities


@dataclass(frozen=True)
class Capabilities:
    """What a backend is, as the store and the docs need to know it (instead of its name).

    - ``approximate``: a search may miss a true neighbour (an ANN graph); exact backends
      return the same answers as brute force, ties broken by id.
    - ``files``: the index lives in files beside the gallery, written by ``save`` (a cache
      the store checks by `SearchIndex.checksum`); False when it keeps its own data (a server).
    - ``shared``: other processes may change the same index (a server collection), so this
      process's idea of its generation can be out of date: after another process's change
      it is rebuilt from the database, never patched from the change log.
    - ``cheap_to_open``: opening a scratch index is quick and local, so the store checks a
      new gallery's options by opening one at creation (a server backend checks names only).
    """

    approximate: bool = False
    files: bool = True
    shared: bool = False
    cheap_to_open: bool = True


# --------------------------------------------------------------------------- shared checks


def check_ids(ids) -> np.ndarray:
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


def check_vectors(vectors, dim: int, name: str) -> np.ndarray:
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


def padded(count: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Empty results for ``count`` queries: ``(inf, -1)`` everywhere."""
    return np.full((count, k), np.inf, np.float32), np.full((count, k), -1, np.int64)


def read_json(path: Path) -> dict | None:
    """A sidecar's content, or None when it is missing or unreadable (the index is then rebuilt)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("format") == FORMAT else None


def write_json(path: Path, data: dict) -> None:
    """Write a sidecar atomically, owner-only."""
    with atomic_path(path, mode=PRIVATE) as tmp:
        tmp.write_text(json.dumps({"format": FORMAT, **data}, indent=1) + "\n", encoding="utf-8")


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


def saved_state(index) -> tuple[dict | None, int | None]:
    """The sidecar at ``index.meta_path`` and the generation its files reflect.

    ``(None, None)`` when there is no usable sidecar (missing, corrupt, another kind);
    a sidecar for another embedding size is a ModelMismatchError.
    """
    meta = read_json(index.meta_path)
    if meta is None or meta.get("kind") != index.kind:
        return None, None
    _check_dim(meta, index.dim, index.meta_path)
    return meta, _stored_generation(meta)


def parse_options(kind: str, given: dict, defaults: dict) -> dict:
    """``given`` over ``defaults``; an option not in ``defaults`` is a one-line ConfigError listing them."""
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        known = ", ".join(defaults) or "none"
        raise ConfigError(f"unknown option(s) {', '.join(unknown)} for the {kind} search backend; known: {known}")
    return {**defaults, **given}


def require(module: str, install: str, kind: str) -> None:
    """A ConfigError saying what to install when the optional ``module`` is missing."""
    if importlib.util.find_spec(module) is None:
        raise ConfigError(f"the {kind} search backend needs the {module} package: pip install {install}")


# --------------------------------------------------------------------------- interface


class SearchIndex:
    """Nearest neighbours by squared Euclidean distance over (id, vector) entries.

    The public methods check their arguments and keep the generation bookkeeping; a
    backend sets ``kind`` (its registered name), ``defaults`` (its options) and
    ``capabilities``, and implements ``_add``, ``_remove``, ``_search``, ``_clear``,
    ``_save``, ``__len__`` (and ``checksum``, ``_close``). Ids are non-negative int64
    (``-1`` is the padding id); vectors are float32.
    """

    kind: str = ""
    capabilities = Capabilities()
    #: option name -> default; `check_options` refuses any other name
    defaults: dict = {}

    @classmethod
    def check_options(cls, dim: int, options: dict) -> None:
        """Check a new gallery's options before it is made (a bad value must not wait for the first search)."""
        if not cls.capabilities.cheap_to_open:
            parse_options(cls.kind, options, cls.defaults)
            return
        with tempfile.TemporaryDirectory() as scratch:
            cls(Path(scratch) / "check.db", dim, **options).close()

    def __init__(self, path: Path, dim: int):
        self.path = Path(path)
        self.dim = int(dim)
        self._generation: int | None = None
        self._closed = False

    # -- the interface the store calls

    def add(self, ids, vectors) -> None:
        """Insert new entries; ``ids`` must be unique and not in the index yet."""
        self._check_open()
        ids = check_ids(ids)
        vectors = check_vectors(vectors, self.dim, "vectors")
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
        ids = np.unique(check_ids(ids))
        if len(ids):
            self._remove(ids)

    def search(self, queries, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` nearest entries of each query: ``(distances (q, k) float32, ids (q, k) int64)``.

        Distances are squared Euclidean, ascending; missing neighbours are ``(inf, -1)``.
        """
        self._check_open()
        queries = check_vectors(queries, self.dim, "queries")
        k = _check_k(k)
        if len(queries) == 0 or k == 0:
            return padded(len(queries), k)
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


def backends():
    """The search backend registry (name -> `SearchIndex` class), filled by ``register_search_backends``."""
    from convgen.registry import get_registry

    return get_registry("search_backend")


def backend_class(kind: str) -> type[SearchIndex]:
    """The backend registered as ``kind``; an unknown name is one line listing the known ones."""
    backend = backends().get(kind)
    if getattr(backend, "kind", None) != kind:  # sidecars and messages use it: a plugin's slip, named here
        raise ConfigError(f"search backend {kind!r} is registered with a class whose kind is {getattr(backend, 'kind', None)!r}; "
                          f"its plugin must set kind = {kind!r}")  # fmt: skip
    return backend


def open_index(kind: str, path, dim: int, **options) -> SearchIndex:
    """Open (or create) the ``kind`` search index of the gallery database at ``path``.

    The index's files live beside ``path``; ``options`` are the backend's (see each class).
    A persisted index of another dimension raises `ModelMismatchError`; a corrupt one opens
    empty with ``generation None`` so that the store rebuilds it.
    """
    backend = backend_class(kind)
    if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or dim < 1:
        raise ValueError(f"dim must be a positive integer, got {dim!r}")
    return backend(Path(path), int(dim), **options)
