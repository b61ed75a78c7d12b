"""Scoring: what a gallery's search index holds, and how a person's distance is read from it.

``closest``: one index entry per sample (its id is the sample's id); a person's distance
is that of their nearest sample, robust when samples differ (poses, leads). ``mean``: one
entry per person (the person's id), the re-normalised mean of their embeddings; smaller
and faster indexes. Each scoring answers the same questions for the store and its index
synchronisation, so neither branches on the scoring's name.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

_CHUNK = 900  # ids per ``IN (...)`` query, under SQLite's default limit of 999 variables


def mean_direction(e: np.ndarray) -> np.ndarray:
    """The re-normalised mean of unit embeddings ``(n, D)`` (a zero mean stays zero)."""
    mean = e.mean(0)
    norm = np.linalg.norm(mean)
    return (mean / norm if norm > 0 else mean).astype(np.float32)


def _matrix(vectors: list, dim: int) -> np.ndarray:
    return np.stack(vectors).astype(np.float32) if vectors else np.zeros((0, dim), np.float32)


def _chunks(ids: list[int]):
    for start in range(0, len(ids), _CHUNK):
        chunk = ids[start : start + _CHUNK]
        yield chunk, ",".join("?" * len(chunk))


class Scoring:
    """The index entries of one scoring over a gallery's ``db``; ``vector(blob)`` reads a stored embedding."""

    name = ""

    def __init__(self, db, dim: int, vector: Callable[[bytes], np.ndarray]):
        self.db, self.dim, self.vector = db, dim, vector

    def entries(self) -> tuple[np.ndarray, np.ndarray, list[str]]:
        """Every entry: ``(ids, vectors (n, D), names)``."""
        raise NotImplementedError

    def entries_for(self, ids: list[int]) -> tuple[np.ndarray, np.ndarray]:
        """The entries among ``ids`` that exist now: ``(ids, vectors)``."""
        raise NotImplementedError

    def names_of(self, ids: np.ndarray) -> dict[int, str]:
        """The names of the people behind entry ``ids`` (padding and vanished ids are left out)."""
        wanted = sorted({int(i) for i in np.unique(ids) if i >= 0})
        names = {}
        for chunk, marks in _chunks(wanted):
            names.update(self.db.execute(self._names_query.format(marks), chunk))
        return names

    def removed_with(self, pid: int) -> list[int]:
        """The entries that removing person ``pid`` deletes (read before the delete)."""
        raise NotImplementedError

    def change_of_enrolment(self, pid: int, new_ids: list[int], new_vectors: np.ndarray, replaced: bool):
        """The index change of adding samples ``new_ids`` to person ``pid``: ``(removed, (added ids, added vectors))``."""
        raise NotImplementedError

    def fetch(self, k: int) -> int:
        """How many entries to fetch for ``k`` people at first (more when samples crowd others out)."""
        return k

    def person_vectors(self, e: np.ndarray) -> np.ndarray:
        """What one person's embeddings ``e`` are compared with, as the index would hold them."""
        return e

    _names_query = ""


class Closest(Scoring):
    """One entry per sample: a person's distance is that of their nearest sample."""

    name = "closest"
    _names_query = "SELECT s.id, p.name FROM samples s JOIN people p ON p.id = s.person WHERE s.id IN ({})"

    def entries(self):
        rows = self.db.execute("SELECT s.id, s.embedding, p.name FROM samples s JOIN people p ON p.id = s.person ORDER BY s.id")
        ids, vectors, names = [], [], []
        for sid, blob, name in rows:
            ids.append(sid)
            vectors.append(self.vector(blob))
            names.append(name)
        return np.asarray(ids, dtype=np.int64), _matrix(vectors, self.dim), names

    def entries_for(self, ids):
        found, vectors = [], []
        for chunk, marks in _chunks(ids):
            for sid, blob in self.db.execute(f"SELECT id, embedding FROM samples WHERE id IN ({marks})", chunk):
                found.append(sid)
                vectors.append(self.vector(blob))
        return np.asarray(found, dtype=np.int64), _matrix(vectors, self.dim)

    def removed_with(self, pid):
        return [sid for (sid,) in self.db.execute("SELECT id FROM samples WHERE person = ?", (pid,))]

    def change_of_enrolment(self, pid, new_ids, new_vectors, replaced):
        return (), (new_ids, new_vectors)

    def fetch(self, k):
        return max(4 * k, k + 8)  # one person's samples may take several of the nearest places


class Mean(Scoring):
    """One entry per person: the re-normalised mean of their embeddings."""

    name = "mean"
    _names_query = "SELECT id, name FROM people WHERE id IN ({})"

    def _mean_of(self, pid: int) -> np.ndarray:
        blobs = self.db.execute("SELECT embedding FROM samples WHERE person = ?", (pid,)).fetchall()
        return mean_direction(np.stack([self.vector(b) for (b,) in blobs]))

    def entries(self):
        ids, vectors, names = [], [], []
        for pid, name in self.db.execute("SELECT id, name FROM people ORDER BY id").fetchall():
            ids.append(pid)
            vectors.append(self._mean_of(pid))
            names.append(name)
        return np.asarray(ids, dtype=np.int64), _matrix(vectors, self.dim), names

    def entries_for(self, ids):
        found, vectors = [], []
        for chunk, marks in _chunks(ids):
            for (pid,) in self.db.execute(f"SELECT id FROM people WHERE id IN ({marks})", chunk).fetchall():
                found.append(pid)
                vectors.append(self._mean_of(pid))
        return np.asarray(found, dtype=np.int64), _matrix(vectors, self.dim)

    def removed_with(self, pid):
        return [pid]

    def change_of_enrolment(self, pid, new_ids, new_vectors, replaced):
        return ([pid] if replaced else []), ([pid], self._mean_of(pid)[None])

    def person_vectors(self, e):
        return mean_direction(e)[None]


#: scoring name -> class
SCORINGS: dict[str, type[Scoring]] = {"closest": Closest, "mean": Mean}
