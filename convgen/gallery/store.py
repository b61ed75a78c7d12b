"""The gallery: enrolled people and their embeddings, in one SQLite file.

SQLite is the source of truth: one file, WAL journal (readers never block the writer),
every enrolment, removal or rename one transaction, so a killed process leaves the
people that were committed and nothing half-enrolled. The gallery records the encoder's
fingerprint, the embedding size and the distance, so that embeddings from another model
are refused instead of silently compared. Search runs on an index kept beside the file
(`convgen.gallery.search`): exact by default, FAISS or Milvus for large galleries. A
``generation`` counter, bumped by every change, tells an index (or another process)
that it is stale. A ``changes`` table logs which index entries each generation removed
and added, so a process whose index is a few generations behind (a reader while another
process enrols) catches up on those entries instead of rebuilding from every row; a
gap in the log (a gallery from before it, or more than ``KEEP_CHANGES`` behind) means
a rebuild. Index files are saved under the database's write lock and only while they
still reflect it, so two processes never interleave them.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from convgen.errors import ConfigError, DataError, ModelMismatchError, PathError

FORMAT = "convgen.gallery/1"
DISTANCE = "squared-euclidean"
SCORINGS = ("closest", "mean")

SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE people (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, created REAL NOT NULL);
CREATE TABLE samples (
    id INTEGER PRIMARY KEY,
    person INTEGER NOT NULL REFERENCES people(id) ON DELETE CASCADE,
    embedding BLOB NOT NULL,
    source TEXT,
    created REAL NOT NULL
);
CREATE INDEX samples_by_person ON samples(person);
"""
# Which index entries (sample ids, or person ids for ``mean`` scoring) each generation
# removed and added; created on the first change of a gallery made before it existed.
CHANGES = "CREATE TABLE IF NOT EXISTS changes (generation INTEGER PRIMARY KEY, removed TEXT NOT NULL, added TEXT NOT NULL)"
KEEP_CHANGES = 10_000  # generations of the log kept; a reader further behind rebuilds


@dataclass(frozen=True)
class Person:
    name: str
    samples: int
    created: float


class Gallery:
    """Enrolled people, their embeddings, the model they came from and the threshold τ.

    Open with :meth:`open` or make with :meth:`create`; use as a context manager.
    Scoring decides a person's distance to a query: ``closest`` (the nearest of their
    samples: robust when samples differ, e.g. poses) or ``mean`` (the distance to the
    re-normalised mean of their embeddings: one entry per person, smaller and faster
    indexes).
    """

    def __init__(self, path: Path, connection: sqlite3.Connection):
        self.path = Path(path)
        self.db = connection
        self.meta = dict(self.db.execute("SELECT key, value FROM meta"))
        self.dim = int(self.meta["dim"])
        self._index = None
        self._index_generation = None
        self._index_dirty = False

    # -- opening -----------------------------------------------------------------------

    @classmethod
    def create(
        cls,
        path,
        *,
        fingerprint: str,
        encoder: dict,
        dim: int,
        weights: str | None = None,
        scoring: str = "closest",
        backend: str = "exact",
        backend_options: dict | None = None,
        spatial_size: list[int] | None = None,
        pipeline: dict | None = None,
        pipeline_overrides: dict | None = None,
    ) -> "Gallery":
        """Make a new gallery file (owner-only permissions); it appears whole or not at all."""
        path = Path(path)
        if path.exists():
            raise DataError(f"{path} already exists; open it, or choose another file for a new gallery")
        if scoring not in SCORINGS:
            raise ConfigError(f"scoring must be one of {', '.join(SCORINGS)}, got {scoring!r}")
        from convgen.gallery.search import KINDS, open_index

        if backend not in KINDS:
            raise ConfigError(f"unknown search backend {backend!r}; known: {', '.join(KINDS)}")
        if backend != "milvus":  # check the options now, not at the first search (Milvus would start a server)
            import tempfile

            with tempfile.TemporaryDirectory() as scratch:
                open_index(backend, Path(scratch) / "check.db", int(dim), **(backend_options or {})).close()
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.creating")
        fd = os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)  # galleries hold biometric data
        os.close(fd)
        try:
            db = sqlite3.connect(tmp)
            db.executescript(SCHEMA + CHANGES + ";")
            meta = {
                "format": FORMAT, "fingerprint": fingerprint, "encoder": json.dumps(encoder, sort_keys=True),
                "dim": str(int(dim)), "distance": DISTANCE, "scoring": scoring, "backend": backend,
                "backend_options": json.dumps(backend_options or {}), "weights": weights or "",
                "spatial_size": json.dumps(spatial_size), "threshold": "", "calibration": "{}",
                "pipeline": json.dumps(pipeline, sort_keys=True), "pipeline_overrides": json.dumps(pipeline_overrides or {}),
                "generation": "0", "created": str(time.time()),
            }  # fmt: skip
            db.executemany("INSERT INTO meta VALUES (?, ?)", meta.items())
            db.commit()
            db.execute("PRAGMA journal_mode=WAL")
            db.close()
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        return cls.open(path)

    @classmethod
    def open(cls, path) -> "Gallery":
        """Open an existing gallery; a file that is not one is a one-line DataError."""
        path = Path(path)
        if not path.exists():
            raise PathError(f"gallery not found: {path} (create one with `convgen gallery create`)")
        if path.is_dir():
            raise PathError(f"{path} is a directory, not a gallery file")
        try:
            db = sqlite3.connect(f"file:{path}?mode=rw", uri=True, timeout=60, isolation_level=None)
            db.execute("PRAGMA foreign_keys=ON")
            db.execute("PRAGMA busy_timeout=60000")
            rows = dict(db.execute("SELECT key, value FROM meta"))
        except sqlite3.DatabaseError as exc:
            raise DataError(f"{path} is not a convgen gallery ({exc}); give a file made by `convgen gallery create`") from None
        if rows.get("format") != FORMAT:
            db.close()
            raise DataError(f"{path} is not a convgen gallery (format {rows.get('format')!r}); give a file made by `convgen gallery create`")
        return cls(path, db)

    def close(self) -> None:
        """Save an index that followed changes incrementally, then close everything."""
        if self._index is not None:
            if self._index_dirty and self._index_generation is not None:
                self._save_index(self._index_generation)
            self._index.close()
        self.db.close()

    def __enter__(self) -> "Gallery":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- what it holds -------------------------------------------------------------------

    @property
    def fingerprint(self) -> str:
        return self.meta["fingerprint"]

    @property
    def encoder(self) -> dict:
        return json.loads(self.meta["encoder"])

    @property
    def pipeline(self) -> dict | None:
        """How a file becomes the encoder's input for this gallery (None: made before pipelines were recorded)."""
        return json.loads(self.meta.get("pipeline") or "null")

    @property
    def scoring(self) -> str:
        return self.meta["scoring"]

    @property
    def threshold(self) -> float | None:
        self._refresh_meta()
        return float(self.meta["threshold"]) if self.meta["threshold"] else None

    @property
    def calibration(self) -> dict:
        self._refresh_meta()
        return json.loads(self.meta["calibration"])

    @property
    def generation(self) -> int:
        return int(self.db.execute("SELECT value FROM meta WHERE key='generation'").fetchone()[0])

    def _refresh_meta(self) -> None:
        self.meta = dict(self.db.execute("SELECT key, value FROM meta"))

    def check_model(self, fingerprint: str) -> None:
        """Refuse embeddings from any model but the one the gallery was built with."""
        if fingerprint != self.fingerprint:
            raise ModelMismatchError(
                f"{self.path} was built with encoder {self.fingerprint[:12]}… but these embeddings come from "
                f"{fingerprint[:12]}…; use the gallery's weights ({self.meta['weights'] or 'recorded at creation'}) "
                "or create a new gallery for this encoder"
            )

    def people(self) -> list[Person]:
        rows = self.db.execute(
            "SELECT p.name, COUNT(s.id), p.created FROM people p LEFT JOIN samples s ON s.person = p.id "
            "GROUP BY p.id ORDER BY p.name"
        )
        return [Person(name, count, created) for name, count, created in rows]

    def __len__(self) -> int:
        return self.db.execute("SELECT COUNT(*) FROM people").fetchone()[0]

    def _person_id(self, name: str) -> int:
        row = self.db.execute("SELECT id FROM people WHERE name = ?", (name,)).fetchone()
        if row is None:
            raise DataError(f"{name!r} is not enrolled in {self.path} (see `convgen gallery list`)")
        return row[0]

    def embeddings_of(self, name: str) -> np.ndarray:
        pid = self._person_id(name)
        blobs = [b for (b,) in self.db.execute("SELECT embedding FROM samples WHERE person = ? ORDER BY id", (pid,))]
        return np.stack([np.frombuffer(b, dtype=np.float32) for b in blobs])

    # -- changes: one transaction each ------------------------------------------------

    def _check_embeddings(self, embeddings) -> np.ndarray:
        e = np.asarray(embeddings, dtype=np.float32)
        if e.ndim == 1:
            e = e[None]
        if e.ndim != 2 or e.shape[1] != self.dim or len(e) == 0:
            raise DataError(f"expected embeddings of shape (n, {self.dim}) for this gallery, got {tuple(e.shape)}")
        if not np.isfinite(e).all():
            raise DataError("embeddings hold NaN or infinite values; nothing was enrolled")
        return np.ascontiguousarray(e)

    def _write(self, statements) -> None:
        """Run ``statements(db)`` and bump the generation, in one immediate transaction.

        ``statements`` may return the change to the index entries, ``(removed ids,
        (added ids, added vectors))``; an index that reflected the database just before
        this transaction follows it incrementally (and is saved on `close`), so large
        galleries are not rebuilt after every enrolment.
        """
        self.db.execute("BEGIN IMMEDIATE")
        try:
            before = self.generation
            change = statements(self.db) or ((), None)
            self._log(before + 1, *change)
            self.db.execute("UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'generation'")
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self._follow(before, *change)

    def _log(self, generation: int, removed, added) -> None:
        """Record the index entries this generation removed and added (inside its transaction)."""
        added_ids = [] if added is None else [int(i) for i in added[0]]
        self.db.execute(CHANGES)
        self.db.execute("INSERT OR REPLACE INTO changes VALUES (?, ?, ?)",
                        (generation, json.dumps([int(i) for i in removed]), json.dumps(added_ids)))  # fmt: skip
        self.db.execute("DELETE FROM changes WHERE generation <= ?", (generation - KEEP_CHANGES,))

    def _follow(self, before: int, removed, added) -> None:
        index = self._current_index(before)
        if index is None:
            return  # stale already: the next search rebuilds it from the database
        if len(removed):
            index.remove(np.asarray(removed, dtype=np.int64))
        if added is not None and len(added[0]):
            index.add(np.asarray(added[0], dtype=np.int64), np.asarray(added[1], dtype=np.float32))
        self._index_generation = before + 1
        self._index_dirty = True

    def _current_index(self, generation: int):
        """The index if it reflects ``generation`` (opening the persisted one if needed), else None."""
        if self._index is None:
            from convgen.gallery.search import open_index

            options = json.loads(self.meta["backend_options"])
            self._index = open_index(self.meta["backend"], self.path, self.dim, **options)
            self._index_generation = self._index.generation
        return self._index if self._index_generation == generation else None

    def _entry_change(self, db, pid: int, new_ids: list[int], new_vectors: np.ndarray, replaced: bool):
        """The index change of adding samples to person ``pid``, by scoring."""
        if self.scoring == "closest":
            return (), (new_ids, new_vectors)
        blobs = [b for (b,) in db.execute("SELECT embedding FROM samples WHERE person = ?", (pid,))]
        mean = _mean_direction(np.stack([np.frombuffer(b, dtype=np.float32) for b in blobs]))
        return ([pid] if replaced else []), ([pid], mean[None])

    def enrol(self, name: str, embeddings, sources: list[str] | None = None, append: bool = False) -> None:
        """Enrol ``name`` from one or more embeddings (one transaction: all or nothing)."""
        if not isinstance(name, str) or not name.strip():
            raise DataError("a person needs a non-empty name")
        e = self._check_embeddings(embeddings)
        sources = list(sources or [None] * len(e))
        now = time.time()

        def statements(db):
            row = db.execute("SELECT id FROM people WHERE name = ?", (name,)).fetchone()
            if row is not None and not append:
                raise DataError(f"{name!r} is already enrolled; add samples with --append, or remove them first")
            pid = row[0] if row else db.execute("INSERT INTO people (name, created) VALUES (?, ?)", (name, now)).lastrowid
            ids = [
                db.execute("INSERT INTO samples (person, embedding, source, created) VALUES (?, ?, ?, ?)",
                           (pid, vector.tobytes(), source, now)).lastrowid
                for vector, source in zip(e, sources)
            ]  # fmt: skip
            return self._entry_change(db, pid, ids, e, replaced=row is not None)

        self._write(statements)

    def enrol_many(self, people: dict[str, np.ndarray]) -> None:
        """Enrol many people in one transaction (import, bulk loads)."""
        checked = {name: self._check_embeddings(e) for name, e in people.items()}
        now = time.time()

        def statements(db):
            added_ids, added_vectors = [], []
            for name, e in checked.items():
                if db.execute("SELECT 1 FROM people WHERE name = ?", (name,)).fetchone():
                    raise DataError(f"{name!r} is already enrolled; nothing was imported")
                pid = db.execute("INSERT INTO people (name, created) VALUES (?, ?)", (name, now)).lastrowid
                ids = [
                    db.execute("INSERT INTO samples (person, embedding, source, created) VALUES (?, ?, NULL, ?)",
                               (pid, vector.tobytes(), now)).lastrowid
                    for vector in e
                ]  # fmt: skip
                _, (entry_ids, entry_vectors) = self._entry_change(db, pid, ids, e, replaced=False)
                added_ids += list(entry_ids)
                added_vectors.append(entry_vectors)
            vectors = np.concatenate(added_vectors) if added_vectors else np.zeros((0, self.dim), np.float32)
            return (), (added_ids, vectors)

        self._write(statements)

    def remove(self, name: str) -> None:
        pid = self._person_id(name)

        def statements(db):
            if self.scoring == "closest":
                removed = [sid for (sid,) in db.execute("SELECT id FROM samples WHERE person = ?", (pid,))]
            else:
                removed = [pid]
            db.execute("DELETE FROM people WHERE id = ?", (pid,))
            return removed, None

        self._write(statements)

    def rename(self, old: str, new: str) -> None:
        pid = self._person_id(old)
        if not new.strip():
            raise DataError("a person needs a non-empty name")

        def statements(db):
            if db.execute("SELECT 1 FROM people WHERE name = ?", (new,)).fetchone():
                raise DataError(f"{new!r} is already enrolled; choose another name")
            db.execute("UPDATE people SET name = ? WHERE id = ?", (new, pid))

        self._write(statements)

    def set_threshold(self, threshold: float, calibration: dict) -> None:
        """Store τ and how it was chosen (mode, target, gallery size, DIR...)."""

        def statements(db):
            db.execute("UPDATE meta SET value = ? WHERE key = 'threshold'", (repr(float(threshold)),))
            db.execute("UPDATE meta SET value = ? WHERE key = 'calibration'", (json.dumps(calibration),))

        self._write(statements)
        self._refresh_meta()

    # -- search --------------------------------------------------------------------------

    def entries(self) -> tuple[np.ndarray, np.ndarray, list[str]]:
        """What the index holds: ``(entry ids, vectors, names)``; for ``closest`` one entry
        per sample, for ``mean`` one per person (the re-normalised mean)."""
        if self.scoring == "closest":
            rows = self.db.execute("SELECT s.id, s.embedding, p.name FROM samples s JOIN people p ON p.id = s.person ORDER BY s.id")
            ids, vectors, names = [], [], []
            for sid, blob, name in rows:
                ids.append(sid)
                vectors.append(np.frombuffer(blob, dtype=np.float32))
                names.append(name)
        else:
            ids, vectors, names = [], [], []
            for pid, name in self.db.execute("SELECT id, name FROM people ORDER BY id"):
                e = np.stack([np.frombuffer(b, dtype=np.float32) for (b,) in self.db.execute("SELECT embedding FROM samples WHERE person = ?", (pid,))])
                ids.append(pid)
                vectors.append(_mean_direction(e))
                names.append(name)
        matrix = np.stack(vectors).astype(np.float32) if vectors else np.zeros((0, self.dim), np.float32)
        return np.asarray(ids, dtype=np.int64), matrix, names

    def index(self):
        """The search index, brought up to date when another process changed the gallery:
        from the change log when it covers the gap, else rebuilt from every row (and saved)."""
        index = self._current_index(self.generation)
        if index is not None:
            return index
        index = self._index
        self.db.execute("BEGIN")  # one snapshot: the generation and the rows it describes
        try:
            generation = self.generation
            rebuild = not self._catch_up(index, generation)
            if rebuild:
                ids, vectors, _ = self.entries()
                index.clear()
                if len(ids):
                    index.add(ids, vectors)
        finally:
            self.db.execute("COMMIT")
        self._index_generation, self._index_dirty = generation, True
        if rebuild:
            self._save_index(generation)
        return index

    def _catch_up(self, index, generation: int) -> bool:
        """Apply the logged changes since the index's generation; False when the log has a gap."""
        since = self._index_generation
        if since is None or since > generation or self.meta["backend"] == "milvus":  # Milvus is shared: rebuild
            return False
        try:
            rows = self.db.execute("SELECT generation, removed, added FROM changes WHERE generation > ? AND generation <= ? "
                                   "ORDER BY generation", (since, generation)).fetchall()  # fmt: skip
        except sqlite3.OperationalError:  # a gallery from before the change log, never changed since
            return False
        if [row[0] for row in rows] != list(range(since + 1, generation + 1)):
            return False
        removed, added = set(), set()
        for _, gone, new in rows:
            removed.update(json.loads(gone))
            added.update(json.loads(new))
        if removed | added:  # drop every entry touched, then add back the ones that exist now
            index.remove(np.array(sorted(removed | added), dtype=np.int64))
        ids, vectors = self._entries_for(sorted(added))
        if len(ids):
            index.add(ids, vectors)
        return True

    def _entries_for(self, ids: list[int]) -> tuple[np.ndarray, np.ndarray]:
        """The current index entries among ``ids`` (sample ids, or person ids for ``mean``)."""
        found_ids, vectors = [], []
        for start in range(0, len(ids), 900):
            chunk = ids[start : start + 900]
            marks = ",".join("?" * len(chunk))
            if self.scoring == "closest":
                for sid, blob in self.db.execute(f"SELECT id, embedding FROM samples WHERE id IN ({marks})", chunk):
                    found_ids.append(sid)
                    vectors.append(np.frombuffer(blob, dtype=np.float32))
            else:
                for (pid,) in self.db.execute(f"SELECT id FROM people WHERE id IN ({marks})", chunk):
                    blobs = self.db.execute("SELECT embedding FROM samples WHERE person = ?", (pid,)).fetchall()
                    found_ids.append(pid)
                    vectors.append(_mean_direction(np.stack([np.frombuffer(b, dtype=np.float32) for (b,) in blobs])))
        matrix = np.stack(vectors).astype(np.float32) if vectors else np.zeros((0, self.dim), np.float32)
        return np.asarray(found_ids, dtype=np.int64), matrix

    def _save_index(self, generation: int) -> None:
        """Save the index under the write lock, and only if it still reflects the database:
        two processes saving at once would otherwise interleave their index files."""
        try:
            self.db.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError:
            return  # a read-only (or long-locked) gallery: the index is a cache, keep it in memory only
        try:
            if self.generation == generation:
                self._index.save(generation)
                self._index_dirty = False
        finally:
            self.db.execute("COMMIT")

    def search(self, queries, k: int = 5) -> list[list[tuple[str, float]]]:
        """Per query, the ``k`` nearest people with their distances, nearest first."""
        q = self._check_embeddings(queries)
        index = self.index()
        if len(index) == 0:
            raise DataError(f"{self.path} has nobody enrolled; enrol people first (`convgen gallery enrol`)")
        fetch = k if self.scoring == "mean" else max(4 * k, k + 8)
        while True:
            distances, ids = index.search(q, min(fetch, len(index)))
            names = self._names_of(ids)
            results = [self._by_person(d, i, k, names) for d, i in zip(distances, ids)]
            if all(len(r) >= k for r in results) or fetch >= len(index):
                return results
            fetch *= 4  # one person's many samples crowded the others out: look further

    def _names_of(self, ids: np.ndarray) -> dict[int, str]:
        """Names of the people behind index entries (samples, or people for ``mean``)."""
        wanted = sorted({int(i) for i in np.unique(ids) if i >= 0})
        query = (
            "SELECT s.id, p.name FROM samples s JOIN people p ON p.id = s.person WHERE s.id IN ({})"
            if self.scoring == "closest"
            else "SELECT id, name FROM people WHERE id IN ({})"
        )
        names = {}
        for start in range(0, len(wanted), 900):
            chunk = wanted[start : start + 900]
            names.update(self.db.execute(query.format(",".join("?" * len(chunk))), chunk))
        return names

    @staticmethod
    def _by_person(distances, ids, k, names) -> list[tuple[str, float]]:
        best: dict[str, float] = {}
        for d, i in zip(distances, ids):
            name = names.get(int(i))
            if name is None:
                continue  # padding, or an entry removed by another process since the search
            if name not in best:
                best[name] = float(d)
            if len(best) == k:
                break
        return list(best.items())

    def distance_to(self, query, name: str) -> float:
        """Exact distance of one query to one person, by the gallery's scoring."""
        q = self._check_embeddings(query)[0]
        e = self.embeddings_of(name)
        if self.scoring == "mean":
            e = _mean_direction(e)[None]
        return float(((e - q) ** 2).sum(1).min())


def _mean_direction(e: np.ndarray) -> np.ndarray:
    mean = e.mean(0)
    norm = np.linalg.norm(mean)
    return (mean / norm if norm > 0 else mean).astype(np.float32)
