"""The gallery: enrolled people and their embeddings, in one SQLite file.

SQLite is the source of truth: one file, WAL journal (readers never block the writer),
every enrolment, removal or rename one transaction, so a killed process leaves the
people that were committed and nothing half-enrolled. The gallery records the encoder's
fingerprint, the embedding size and the distance, so that embeddings from another model
are refused instead of silently compared. Search runs on an index kept beside the file
(`convgen.gallery.search`): exact by default, FAISS or Milvus for large galleries, or any
backend a plugin registers. A ``generation`` counter, bumped by every change, tells an
index (or another process) that it is stale; `convgen.gallery.sync` keeps the index in
step (change log, catch-up, rebuild, saving), and `convgen.gallery.scoring` says what its
entries are (``closest``: samples, ``mean``: people). The `Gallery` itself is storage and
orchestration.
"""

from __future__ import annotations

import json
import math
import os
import sqlite3
import time
from urllib.parse import quote
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from convgen.errors import ConfigError, DataError, ModelMismatchError, PathError, describe_sqlite_error
from convgen.gallery import sync
from convgen.gallery.scoring import SCORINGS
from convgen.gallery.sync import CHANGES
from convgen.io import loads_json, os_error

FORMAT = "convgen.gallery/1"
DISTANCE = "squared-euclidean"

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
        self.dim = self._check_meta()
        self.readonly = False  # set by open(readonly=True): changes are refused, the index is kept in memory only
        self._scoring = SCORINGS[self.meta["scoring"]](self.db, self.dim, self._vector)
        self._sync: sync.IndexSync | None = None  # opened on first use

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
        from convgen.gallery.search import backend_class

        backend_class(backend).check_options(int(dim), backend_options or {})  # now, not at the first search
        dims = encoder.get("spatial_dims") if isinstance(encoder, dict) else None
        for size in (spatial_size, (pipeline or {}).get("spatial_size")):
            check_spatial_size(size, dims)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.creating")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)  # galleries hold biometric data
            os.close(fd)
        except OSError as exc:
            raise os_error(exc, path, "create the gallery") from None
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
        except OSError as exc:
            raise os_error(exc, path, "create the gallery") from None
        except sqlite3.DatabaseError as exc:
            raise DataError(f"cannot create gallery {path}: {describe_sqlite_error(exc) or exc}") from None
        finally:
            tmp.unlink(missing_ok=True)
        return cls.open(path)

    @classmethod
    def open(cls, path, readonly: bool = False) -> "Gallery":
        """Open an existing gallery; a file that is not one is a one-line DataError.

        ``readonly`` (list, identify, verify, export, backup) opens it for reading only, so
        a gallery on a read-only file, folder or mount can still be searched; when SQLite
        cannot even make its shared-memory file there, the file is read as immutable.
        """
        path = Path(path)
        if not path.exists():
            raise PathError(f"gallery not found: {path} (create one with `convgen gallery create`)")
        if path.is_dir():
            raise PathError(f"{path} is a directory, not a gallery file")
        if not os.access(path, os.R_OK):
            raise DataError(f"cannot read gallery {path}: permission denied; check the file's permissions")
        # Read-only commands open like the others where they can (nothing left behind), then
        # read-only, then immutable (a read-only folder or mount, where no -shm file can be made).
        modes = ["rw", "ro", "ro&immutable=1"] if readonly else ["rw"]
        for i, mode in enumerate(modes):
            db = None
            try:
                db = sqlite3.connect(f"file:{quote(str(path))}?mode={mode}", uri=True, timeout=60, isolation_level=None)
                db.execute("PRAGMA foreign_keys=ON")
                db.execute("PRAGMA busy_timeout=60000")
                rows = dict(db.execute("SELECT key, value FROM meta"))
                break
            except sqlite3.DatabaseError as exc:
                if db is not None:
                    db.close()
                cause = _fault(exc, path)
                if "unable to open" in str(exc) and i + 1 < len(modes):
                    continue  # a read-only folder: no -shm file can be made; read the file as it is
                if cause is None or "damaged" in cause:
                    raise DataError(f"{path} is not a convgen gallery ({exc}); give a file made by `convgen gallery create`") from None
                raise DataError(f"cannot open gallery {path}: {cause}") from None
        if rows.get("format") != FORMAT:
            db.close()
            raise DataError(f"{path} is not a convgen gallery (format {rows.get('format')!r}); give a file made by `convgen gallery create`")
        try:
            gallery = cls(path, db)
        except BaseException:
            db.close()
            raise
        gallery.readonly = readonly
        return gallery

    def _damaged(self, what: str) -> DataError:
        return DataError(f"{self.path} is damaged: {what}; restore it from a backup (`convgen gallery backup` makes one)")

    def _check_meta(self) -> int:
        """Check the records a gallery is read by (a tampered value is one line, not a traceback); returns ``dim``."""
        meta = self.meta

        def record(key: str, check, what: str, required: bool = True):
            if key not in meta:
                if required:
                    raise self._damaged(f"its {key!r} record is missing")
                return None
            try:
                value = check(meta[key])
            except (ValueError, TypeError, OverflowError, DataError):
                value = None
            if value is None:
                raise self._damaged(f"its {key!r} record is {str(meta[key])[:40]!r}, not {what}")
            return value

        def json_of(kind):
            return lambda text: (lambda v: v if isinstance(v, kind) else None)(loads_json(text, "a record"))

        def positive_sizes(text):
            value = loads_json(text, "a record")
            if value is None:
                return "none"
            sizes = [value] if isinstance(value, int) else value
            ok = isinstance(sizes, list) and 1 <= len(sizes) <= 3 and all(type(v) is int and 1 <= v <= 65536 for v in sizes)
            return value if ok else None

        dim = record("dim", lambda t: int(t) if 1 <= int(t) <= 65536 else None, "an embedding size from 1 to 65536")
        record("threshold", lambda t: "none" if t == "" else (float(t) if math.isfinite(float(t)) and float(t) >= 0 else None),
               "empty or a finite distance ≥ 0")  # fmt: skip
        record("spatial_size", positive_sizes, "null or 1 to 3 sizes from 1 to 65536", required=False)
        record("scoring", lambda t: t if t in SCORINGS else None, f"one of {', '.join(SCORINGS)}")
        record("backend", lambda t: t if t.isprintable() and 0 < len(t) <= 100 and t == t.strip() else None,
               "a search backend's name")  # which plugin provides it is checked when the index is opened
        record("backend_options", json_of(dict), "a JSON mapping")
        record("encoder", json_of(dict), "a JSON mapping")
        record("calibration", json_of(dict), "a JSON mapping")
        record("fingerprint", lambda t: t if isinstance(t, str) and t else None, "an encoder fingerprint")
        record("generation", lambda t: int(t) if int(t) >= 0 else None, "a count ≥ 0")
        return dim

    def _vector(self, blob) -> np.ndarray:
        """One stored embedding; a blob of the wrong size or type is a damaged gallery, not a traceback."""
        if not isinstance(blob, bytes) or len(blob) != 4 * self.dim:
            size = len(blob) if isinstance(blob, (bytes, str)) else type(blob).__name__
            raise self._damaged(f"an embedding holds {size} bytes, not {4 * self.dim} ({self.dim} float32 values)")
        vector = np.frombuffer(blob, dtype=np.float32)
        if not np.isfinite(vector).all():
            raise self._damaged("an embedding holds NaN or infinite values")
        return vector

    def backup(self, dest) -> Path:
        """A consistent copy of this gallery at ``dest`` (SQLite's online backup), safe while
        other processes write; owner-only, written whole or not at all, never over a file."""
        dest = Path(dest)
        if dest.exists():
            raise PathError(f"{dest} already exists; give a new file for the backup")
        from convgen.io import atomic_path

        try:
            with atomic_path(dest, mode=0o600) as tmp:
                target = sqlite3.connect(tmp)
                try:
                    self.db.backup(target)
                    target.execute("PRAGMA journal_mode=DELETE")  # one self-contained file
                finally:
                    target.close()
                check = sqlite3.connect(tmp)
                try:
                    if check.execute("PRAGMA integrity_check").fetchone()[0] != "ok":
                        raise self._damaged("its pages fail SQLite's integrity check")
                finally:
                    check.close()
        except OSError as exc:
            raise os_error(exc, dest, "write the backup") from None
        except sqlite3.DatabaseError as exc:
            raise DataError(f"cannot back up {self.path} to {dest}: {describe_sqlite_error(exc) or exc}") from None
        return dest

    def close(self) -> None:
        """Save an index that followed changes incrementally, then close everything."""
        if self._sync is not None:
            self._sync.close()
        self.db.close()

    def __enter__(self) -> "Gallery":
        return self

    def __exit__(self, kind, error, tb) -> None:
        try:
            self.close()
        except sqlite3.DatabaseError:
            if error is None:
                raise
        if isinstance(error, sqlite3.DatabaseError) and _fault(error, self.path):  # a damaged page, a full disk...
            raise DataError(f"gallery {self.path}: {_fault(error, self.path)}") from None

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
        return sync.generation(self.db)

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
        return np.stack([self._vector(b) for b in blobs])

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
        if self.readonly:
            raise DataError(f"{self.path} was opened read-only; this command changes it")
        index = self._index_sync()  # before the change: a backend that cannot be opened refuses it, not half of it
        try:
            self.db.execute("BEGIN IMMEDIATE")
            try:
                before = self.generation
                change = statements(self.db) or ((), None)
                sync.log_change(self.db, before + 1, *change)
                self.db.execute("UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'generation'")
                self.db.execute("COMMIT")
            except BaseException:
                if self.db.in_transaction:
                    self.db.execute("ROLLBACK")
                raise
        except sqlite3.DatabaseError as exc:
            cause = _fault(exc, self.path)
            if cause is None:
                raise
            raise DataError(f"cannot change gallery {self.path}: {cause}; nothing was changed") from None
        index.follow(before, *change)

    def _index_sync(self) -> sync.IndexSync:
        """The index and its bookkeeping, opened (from the persisted index if there is one) on first use."""
        if self._sync is None:
            options = json.loads(self.meta["backend_options"])
            self._sync = sync.IndexSync(self.path, self.db, self.dim, self.meta["backend"], options, self._scoring, self.readonly)
        return self._sync

    def enrol(self, name: str, embeddings, sources: list[str] | None = None, append: bool = False) -> None:
        """Enrol ``name`` from one or more embeddings (one transaction: all or nothing)."""
        check_name(name)
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
            return self._scoring.change_of_enrolment(pid, ids, e, replaced=row is not None)

        self._write(statements)

    def enrol_many(self, people: dict[str, np.ndarray]) -> None:
        """Enrol many people in one transaction (import, bulk loads)."""
        checked = {check_name(name): self._check_embeddings(e) for name, e in people.items()}
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
                _, (entry_ids, entry_vectors) = self._scoring.change_of_enrolment(pid, ids, e, replaced=False)
                added_ids += list(entry_ids)
                added_vectors.append(entry_vectors)
            vectors = np.concatenate(added_vectors) if added_vectors else np.zeros((0, self.dim), np.float32)
            return (), (added_ids, vectors)

        self._write(statements)

    def remove(self, name: str) -> None:
        pid = self._person_id(name)

        def statements(db):
            removed = self._scoring.removed_with(pid)
            db.execute("DELETE FROM people WHERE id = ?", (pid,))
            return removed, None

        self._write(statements)

    def rename(self, old: str, new: str) -> None:
        pid = self._person_id(old)
        check_name(new)

        def statements(db):
            if db.execute("SELECT 1 FROM people WHERE name = ?", (new,)).fetchone():
                raise DataError(f"{new!r} is already enrolled; choose another name")
            db.execute("UPDATE people SET name = ? WHERE id = ?", (new, pid))

        self._write(statements)

    def set_threshold(self, threshold: float, calibration: dict) -> None:
        """Store τ and how it was chosen (mode, target, gallery size, DIR...)."""
        threshold = check_threshold(threshold)

        def statements(db):
            db.execute("UPDATE meta SET value = ? WHERE key = 'threshold'", (repr(float(threshold)),))
            db.execute("UPDATE meta SET value = ? WHERE key = 'calibration'", (json.dumps(calibration),))

        self._write(statements)
        self._refresh_meta()

    # -- search --------------------------------------------------------------------------

    def entries(self) -> tuple[np.ndarray, np.ndarray, list[str]]:
        """What the index holds: ``(entry ids, vectors, names)``; for ``closest`` one entry
        per sample, for ``mean`` one per person (the re-normalised mean)."""
        return self._scoring.entries()

    def index(self):
        """The search index, brought up to date when another process changed the gallery:
        from the change log when it covers the gap, else rebuilt from every row (and saved)."""
        return self._index_sync().up_to_date()

    def search(self, queries, k: int = 5) -> list[list[tuple[str, float]]]:
        """Per query, the ``k`` nearest people with their distances, nearest first."""
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ConfigError(f"the number of candidates (--top-k) must be a whole number ≥ 1, got {k!r}")
        q = self._check_embeddings(queries)
        index = self.index()
        if len(index) == 0:
            raise DataError(f"{self.path} has nobody enrolled; enrol people first (`convgen gallery enrol`)")
        fetch = self._scoring.fetch(k)
        while True:
            distances, ids = index.search(q, min(fetch, len(index)))
            names = self._scoring.names_of(ids)
            results = [self._by_person(d, i, k, names) for d, i in zip(distances, ids)]
            if all(len(r) >= k for r in results) or fetch >= len(index):
                return results
            fetch *= 4  # one person's many samples crowded the others out: look further

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
        e = self._scoring.person_vectors(self.embeddings_of(name))
        return float(((e - q) ** 2).sum(1).min())


def _fault(exc: Exception, path: Path) -> str | None:
    """What an SQLite error means for the gallery at ``path``: SQLite says "disk I/O error" or
    "unable to open" for a full disk and a read-only place alike; the file system tells them apart."""
    import shutil

    cause = describe_sqlite_error(exc)
    if cause is None or not any(m in str(exc).lower() for m in ("disk i/o", "unable to open", "readonly")):
        return cause
    folder = Path(path).resolve().parent
    try:
        if shutil.disk_usage(folder).free < 1 << 20:
            return "the disk is full; free some space"
    except OSError:
        pass
    if not os.access(folder, os.W_OK) or (Path(path).exists() and not os.access(path, os.W_OK)):
        return ("it is read-only (file, folder or mount: SQLite writes its journal beside the file); make it writable, "
                "or use a command that only reads (list, identify, verify, export, backup)")  # fmt: skip
    return cause


MAX_NAME = 256


def check_name(name) -> str:
    """A person's name: non-empty, printable (no newline or control character), at most 256
    characters, no surrounding spaces: it is shown in tables, JSON and logs one per line."""
    if not isinstance(name, str) or not name.strip():
        raise DataError("a person needs a non-empty name")
    if not name.isprintable() or name != name.strip() or len(name) > MAX_NAME:
        why = "is too long" if len(name) > MAX_NAME else "has surrounding spaces" if name.isprintable() else "holds a newline or control character"
        raise DataError(f"the name {name[:60]!r} {why}; a name is printable text of at most {MAX_NAME} characters")
    return name


def check_threshold(threshold) -> float:
    """τ: a finite squared distance ≥ 0 (NaN would accept or refuse everyone)."""
    try:
        value = float(threshold)
    except (TypeError, ValueError):
        value = math.nan
    if isinstance(threshold, bool) or not math.isfinite(value) or value < 0:
        raise ConfigError(f"the threshold τ must be a finite distance ≥ 0, got {threshold!r}")
    return value


def check_spatial_size(size, dims: int | None) -> None:
    """A resize target: positive sizes, one for every axis (or one for all), of a sane total."""
    if size is None:
        return
    sizes = [size] if isinstance(size, int) and not isinstance(size, bool) else size
    if not isinstance(sizes, (list, tuple)) or not sizes or not all(type(v) is int and 1 <= v <= 65536 for v in sizes):
        raise ConfigError(f"spatial size must be whole numbers from 1 to 65536, got {size!r}")
    if dims is not None and len(sizes) not in (1, dims):
        raise ConfigError(f"spatial size {list(sizes)} has {len(sizes)} axes but the encoder takes {dims}; give one size, or one per axis")
    if math.prod(sizes) ** (dims if len(sizes) == 1 and dims else 1) > 2**28:
        raise ConfigError(f"spatial size {list(sizes)} asks for samples of more than 2^28 elements; choose a smaller size")
