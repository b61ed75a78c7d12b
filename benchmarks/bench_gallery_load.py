"""A gallery under load: one writer enrolling while reader processes identify, on one SQLite file.

A synthetic gallery of ``--people`` persons (default 10⁵), one L2-normalised ``--dim``-d
embedding each (default 128), exact search. Then, at the same time:

* one **writer** process enrols new people (``w000000``, ``w000001``, ...), one person per
  transaction, as fast as it can, until every reader is done;
* ``--readers`` **reader** processes (default 8) each run ``--queries`` identifications
  (default 1,000) through `convgen.gallery.api.identify`. Nine in ten queries are noisy
  copies of a random bulk-enrolled person (the answer is known); one in ten is the person
  the writer committed most recently, read from the database just before the search, so
  a reader that misses people another process enrolled is caught.

Each process keeps its own connection and its own in-memory index, as separate programs
would. A reader's index falls behind with every enrolment; it catches up from the
gallery's change log (``rebuilds`` counts the times it had to re-read every row instead).

Reported: per reader and overall, identification latency p50 / p90 / p99 / max and the
queries it got wrong or missed; the writer's enrolments, rate and latency; then the
checks: no process raised, every person the writer enrolled is present exactly once
with one sample, the bulk people are all there, the database passes ``PRAGMA
integrity_check``, and a fresh process finds every writer-enrolled person by their own
embedding. Exits non-zero when a check fails.

    python benchmarks/bench_gallery_load.py [--people 100000] [--readers 8] [--queries 1000]

BLAS is limited to one thread per process (``--blas-threads``): nine processes share the
machine's cores, and oversubscribed BLAS threads would measure contention in the thread
pool rather than in the gallery. On a machine with fewer cores than processes the
latencies include waiting for a core; the table states the core count.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import sqlite3
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np

NOISE = 0.3  # median squared distance of a genuine probe to its match (cosine 0.85)
THRESHOLD = 1.0  # accept within this squared distance (strangers on the 128-d sphere sit near 2)


def unit_rows(rng, n: int, dim: int) -> np.ndarray:
    x = rng.standard_normal((n, dim), dtype=np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def bulk_vectors(n: int, dim: int, seed: int = 0) -> np.ndarray:
    out = np.empty((n, dim), np.float32)
    rng = np.random.default_rng(seed)
    for start in range(0, n, 1 << 15):
        out[start : start + (1 << 15)] = unit_rows(rng, min(1 << 15, n - start), dim)
    return out


def noisy(rng, vector: np.ndarray) -> np.ndarray:
    sigma = np.sqrt((1 / (1 - NOISE / 2) ** 2 - 1) / len(vector))
    probe = vector + sigma * rng.standard_normal(len(vector)).astype(np.float32)
    return (probe / np.linalg.norm(probe)).astype(np.float32)[None]


def build(path: Path, people: int, dim: int) -> np.ndarray:
    from convgen.gallery.store import Gallery

    vectors = bulk_vectors(people, dim)
    start = time.perf_counter()
    with Gallery.create(path, fingerprint="bench", encoder={"name": "synthetic"}, dim=dim) as g:
        g.enrol_many({f"p{i:06d}": vectors[i : i + 1] for i in range(people)})
        built = time.perf_counter()
        g.search(vectors[:1], 1)  # build and save the index once, so the processes open it instead of rebuilding
    print(f"gallery of {people:,} people: bulk enrolment {built - start:.1f} s, index build + save {time.perf_counter() - built:.1f} s", flush=True)
    return vectors


def reader(index: int, path: str, queries: int, dim: int, people: int, go, results):
    """Run ``queries`` identifications; report latencies, wrong answers, misses, rebuilds, errors."""
    try:
        from convgen.gallery import api
        from convgen.gallery.store import Gallery

        rebuilds = [0]
        entries = Gallery.entries

        def counting_entries(self):
            rebuilds[0] += 1
            return entries(self)

        Gallery.entries = counting_entries
        vectors = bulk_vectors(people, dim)
        rng = np.random.default_rng(1000 + index)
        latencies, wrong, missed, fresh_probes = [], 0, 0, 0
        with Gallery.open(path) as g:
            g.index()  # open the saved index before the clock starts, as a running service would have
            go.wait()
            for q in range(queries):
                row = None
                if q % 10 == 9:  # the newest person the writer committed, read just before the search
                    row = g.db.execute("SELECT p.name, s.embedding FROM people p JOIN samples s ON s.person = p.id "
                                       "WHERE p.name LIKE 'w%' ORDER BY p.id DESC LIMIT 1").fetchone()  # fmt: skip
                if row is not None:
                    expected, probe = row[0], np.frombuffer(row[1], np.float32)[None]
                    fresh_probes += 1
                else:
                    target = int(rng.integers(people))
                    expected, probe = f"p{target:06d}", noisy(rng, vectors[target])
                start = time.perf_counter()
                answer = api.identify(g, probe, k=5, threshold=THRESHOLD)[0]
                latencies.append(time.perf_counter() - start)
                if answer["name"] != expected:
                    if row is not None:
                        missed += 1
                    else:
                        wrong += 1
        results.put({"reader": index, "latencies": latencies, "wrong": wrong, "missed": missed, "fresh_probes": fresh_probes,
                     "rebuilds": rebuilds[0], "error": None})  # fmt: skip
    except BaseException:  # noqa: BLE001 - reported, and counted as a failure
        results.put({"reader": index, "latencies": [], "wrong": 0, "missed": 0, "fresh_probes": 0, "rebuilds": 0,
                     "error": traceback.format_exc()})  # fmt: skip


def writer(path: str, dim: int, go, stop, results):
    """Enrol ``w000000``, ``w000001``, ... one per transaction until ``stop``; report what was committed."""
    try:
        from convgen.gallery.store import Gallery

        rng = np.random.default_rng(7)
        latencies, committed = [], []
        with Gallery.open(path) as g:
            g.index()
            go.wait()
            began = time.perf_counter()
            while not stop.is_set():
                name = f"w{len(committed):06d}"
                vector = unit_rows(rng, 1, dim)
                start = time.perf_counter()
                g.enrol(name, vector)
                latencies.append(time.perf_counter() - start)
                committed.append(name)
            seconds = time.perf_counter() - began
        results.put({"writer": True, "committed": committed, "latencies": latencies, "seconds": seconds, "error": None})
    except BaseException:  # noqa: BLE001
        results.put({"writer": True, "committed": [], "latencies": [], "seconds": 0.0, "error": traceback.format_exc()})


def ms(values, q):
    return f"{np.percentile(values, q) * 1e3:.1f}" if len(values) else "-"


def check(path: Path, people: int, committed: list[str], dim: int) -> list[str]:
    """What must hold after the load; returns the failures."""
    from convgen.gallery.store import Gallery

    failures = []
    db = sqlite3.connect(path)
    if db.execute("PRAGMA integrity_check").fetchone()[0] != "ok":
        failures.append("integrity_check failed")
    rows = dict(db.execute("SELECT p.name, COUNT(s.id) FROM people p LEFT JOIN samples s ON s.person = p.id WHERE p.name LIKE 'w%' GROUP BY p.id"))
    duplicates = db.execute("SELECT COUNT(*) - COUNT(DISTINCT name) FROM people").fetchone()[0]
    bulk = db.execute("SELECT COUNT(*) FROM people WHERE name LIKE 'p%'").fetchone()[0]
    db.close()
    if set(rows) != set(committed):
        failures.append(f"writer people: {len(set(committed) - set(rows))} lost, {len(set(rows) - set(committed))} unexpected")
    if any(count != 1 for count in rows.values()):
        failures.append("a writer person does not have exactly one sample")
    if duplicates:
        failures.append(f"{duplicates} duplicated names")
    if bulk != people:
        failures.append(f"{people - bulk} bulk people lost")
    with Gallery.open(path) as g:  # a fresh process's view: every committed person is found by their own embedding
        names = [n for n in committed]
        for start in range(0, len(names), 512):
            chunk = names[start : start + 512]
            probes = np.concatenate([g.embeddings_of(n) for n in chunk])
            found = [hits[0][0] for hits in g.search(probes, 1)]
            misses = [n for n, f in zip(chunk, found) if f != n]
            if misses:
                failures.append(f"search misses {len(misses)} writer people, e.g. {misses[:3]}")
                break
    return failures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--people", type=int, default=100_000)
    parser.add_argument("--readers", type=int, default=8)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--blas-threads", type=int, default=1)
    parser.add_argument("--folder", type=Path, default=None, help="Where the gallery goes [default: a temporary folder].")
    args = parser.parse_args()
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(args.blas_threads)  # inherited by the spawned processes

    folder = args.folder or Path(tempfile.mkdtemp(prefix="convgen-load-"))
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "load.db"
    build(path, args.people, args.dim)

    ctx = mp.get_context("spawn")
    go, stop, results = ctx.Event(), ctx.Event(), ctx.Queue()
    readers = [ctx.Process(target=reader, args=(i, str(path), args.queries, args.dim, args.people, go, results)) for i in range(args.readers)]
    write = ctx.Process(target=writer, args=(str(path), args.dim, go, stop, results))
    for proc in [*readers, write]:
        proc.start()
    time.sleep(2.0)  # let every process import and open the gallery before the clock starts
    began = time.perf_counter()
    go.set()
    reports = [results.get() for _ in readers]
    elapsed = time.perf_counter() - began
    stop.set()
    written = results.get()
    for proc in [*readers, write]:
        proc.join()

    rows = []
    everything = []
    for r in sorted(reports, key=lambda r: r["reader"]):
        everything += r["latencies"]
        rows.append([f"reader {r['reader']}", len(r["latencies"]), *(ms(r["latencies"], q) for q in (50, 90, 99, 100)), r["wrong"],
                     f"{r['missed']}/{r['fresh_probes']}", r["rebuilds"], "yes" if r["error"] else "no"])  # fmt: skip
    rows.append(["**all readers**", len(everything), *(ms(everything, q) for q in (50, 90, 99, 100)), sum(r["wrong"] for r in reports),
                 f"{sum(r['missed'] for r in reports)}/{sum(r['fresh_probes'] for r in reports)}", sum(r["rebuilds"] for r in reports),
                 "yes" if any(r["error"] for r in reports) else "no"])  # fmt: skip
    w = written["latencies"]
    rows.append(["writer (enrol)", len(w), *(ms(w, q) for q in (50, 90, 99, 100)), "", "", "", "yes" if written["error"] else "no"])
    print(f"\n{args.readers} readers × {args.queries} identifications while 1 writer enrols; {args.people:,} people × {args.dim}-d, "
          f"exact search; {os.cpu_count()} cores; BLAS threads per process: {args.blas_threads}\n")  # fmt: skip
    header = ["process", "queries", "p50 ms", "p90 ms", "p99 ms", "max ms", "wrong", "missed new", "rebuilds", "error"]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join(str(c) for c in row) + " |")
    rate = len(written["committed"]) / written["seconds"] if written["seconds"] else 0.0
    print(f"\nwall time {elapsed:.1f} s; reader throughput {len(everything) / elapsed:.1f} identifications/s; "
          f"writer {len(written['committed'])} enrolments at {rate:.1f}/s during the load", flush=True)  # fmt: skip

    failures = [f"reader {r['reader']} raised:\n{r['error']}" for r in reports if r["error"]]
    if written["error"]:
        failures.append(f"the writer raised:\n{written['error']}")
    failures += check(path, args.people, written["committed"], args.dim)
    missed = sum(r["missed"] for r in reports)
    if missed:
        failures.append(f"{missed} searches missed a person committed before they started")
    if failures:
        print("FAILED\n" + "\n".join(failures))
        return 1
    print(f"checks: no errors; all {len(written['committed'])} writer people present exactly once (one sample each) and found "
                  f"by a fresh search; {args.people:,} bulk people intact; integrity_check ok")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
