"""Keeping a gallery's search index in step with its database: generations and the change log.

Every committed change bumps the gallery's ``generation`` and logs, in the ``changes``
table, which index entries it removed and added. An index that reflected the database
just before a change follows it in memory (`IndexSync.follow`, saved on close); one that
is a few generations behind (a reader while another process enrols) replays the logged
entries; a gap in the log (a gallery from before it, more than ``KEEP_CHANGES`` behind,
or a ``shared`` backend that other processes change) means a rebuild from every row.
A persisted index is trusted only when the checksum the database recorded at its
generation matches, and is saved under the database's write lock and only while it still
reflects it, so two processes never interleave its files.
"""

from __future__ import annotations

import json
import sqlite3

import numpy as np

from convgen.errors import ConfigError

# Which index entries (sample ids, or person ids for ``mean`` scoring) each generation
# removed and added; created on the first change of a gallery made before it existed.
CHANGES = "CREATE TABLE IF NOT EXISTS changes (generation INTEGER PRIMARY KEY, removed TEXT NOT NULL, added TEXT NOT NULL)"
KEEP_CHANGES = 10_000  # generations of the log kept; a reader further behind rebuilds


def generation(db) -> int:
    """The database's generation: the number of changes committed to it."""
    return int(db.execute("SELECT value FROM meta WHERE key='generation'").fetchone()[0])


def log_change(db, generation: int, removed, added) -> None:
    """Record the index entries ``generation`` removed and added (inside its transaction)."""
    added_ids = [] if added is None else [int(i) for i in added[0]]
    db.execute(CHANGES)
    db.execute("INSERT OR REPLACE INTO changes VALUES (?, ?, ?)",
               (generation, json.dumps([int(i) for i in removed]), json.dumps(added_ids)))  # fmt: skip
    db.execute("DELETE FROM changes WHERE generation <= ?", (generation - KEEP_CHANGES,))


class IndexSync:
    """A gallery's search index and the generation of the database it reflects (None: unknown).

    ``scoring`` (`convgen.gallery.scoring.Scoring`) says what the entries are;
    ``readonly`` keeps a rebuilt index in memory only.
    """

    def __init__(self, path, db, dim: int, backend: str, options: dict, scoring, readonly: bool = False):
        from convgen.gallery.search import backends, open_index

        registry = backends()
        if backend not in registry:
            raise ConfigError(f"{path} searches with backend {backend!r}, which no installed plugin provides "
                              f"(known: {', '.join(registry)}); install the plugin that registers it")  # fmt: skip
        self.db, self.scoring, self.readonly = db, scoring, readonly
        self.index = open_index(backend, path, dim, **options)
        self.generation = self.index.generation
        self.dirty = False  # changed in memory since the last save
        if self.generation is not None and not self._trusted(self.generation):
            self.generation = None  # a swapped or poisoned cache: rebuilt from the database

    def current(self, at: int):
        """The index if it reflects generation ``at``, else None."""
        return self.index if self.generation == at else None

    def up_to_date(self):
        """The index, brought up to date when another process changed the gallery: from the
        change log when it covers the gap, else rebuilt from every row (and saved)."""
        index = self.current(generation(self.db))
        if index is not None:
            return index
        index = self.index
        self.db.execute("BEGIN")  # one snapshot: the generation and the rows it describes
        try:
            now = generation(self.db)
            rebuild = not self._catch_up(now)
            if rebuild:
                ids, vectors, _ = self.scoring.entries()
                index.clear()
                if len(ids):
                    index.add(ids, vectors)
        finally:
            self.db.execute("COMMIT")
        self.generation, self.dirty = now, True
        if rebuild:
            self.save(now)
        return index

    def follow(self, before: int, removed, added) -> None:
        """Apply this process's change (committed as generation ``before + 1``) to an index that reflected ``before``."""
        index = self.current(before)
        if index is None:
            return  # stale already: the next search rebuilds it from the database
        if len(removed):
            index.remove(np.asarray(removed, dtype=np.int64))
        if added is not None and len(added[0]):
            index.add(np.asarray(added[0], dtype=np.int64), np.asarray(added[1], dtype=np.float32))
        self.generation, self.dirty = before + 1, True

    def _trusted(self, at: int) -> bool:
        """Does the persisted index match the checksum the database recorded when it was saved at ``at``?"""
        checksum = self.index.checksum()
        if checksum is None:
            return True
        row = self.db.execute("SELECT value FROM meta WHERE key = 'index_checksum'").fetchone()
        return row is not None and row[0] == f"{at}:{checksum}"

    def _catch_up(self, now: int) -> bool:
        """Apply the logged changes since the index's generation; False when the log has a gap."""
        since = self.generation
        if since is None or since > now or self.index.capabilities.shared:  # others change a shared index: rebuild
            return False
        try:
            rows = self.db.execute("SELECT generation, removed, added FROM changes WHERE generation > ? AND generation <= ? "
                                   "ORDER BY generation", (since, now)).fetchall()  # fmt: skip
        except sqlite3.OperationalError:  # a gallery from before the change log, never changed since
            return False
        if [row[0] for row in rows] != list(range(since + 1, now + 1)):
            return False
        removed, added = set(), set()
        for _, gone, new in rows:
            removed.update(json.loads(gone))
            added.update(json.loads(new))
        if removed | added:  # drop every entry touched, then add back the ones that exist now
            self.index.remove(np.array(sorted(removed | added), dtype=np.int64))
        ids, vectors = self.scoring.entries_for(sorted(added))
        if len(ids):
            self.index.add(ids, vectors)
        return True

    def save(self, at: int) -> None:
        """Save the index under the write lock, and only if it still reflects the database:
        two processes saving at once would otherwise interleave their index files."""
        if self.readonly:
            return
        try:
            self.db.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError:
            return  # a read-only (or long-locked) gallery: the index is a cache, keep it in memory only
        try:
            if generation(self.db) == at:
                self.index.save(at)
                checksum = self.index.checksum()
                if checksum is not None:
                    self.db.execute("INSERT OR REPLACE INTO meta VALUES ('index_checksum', ?)", (f"{at}:{checksum}",))
                self.dirty = False
        finally:
            self.db.execute("COMMIT")

    def close(self) -> None:
        """Save an index that followed changes incrementally, then close it."""
        try:
            if self.dirty and self.generation is not None:
                self.save(self.generation)
        finally:
            self.index.close()
