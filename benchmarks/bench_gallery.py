"""Gallery search at scale: exact search against memory bandwidth, FAISS HNSW against exact.

A synthetic gallery of ``--size`` L2-normalised float32 embeddings (default 10⁶ × 128), from
one of two models (``--model``):

- ``uniform`` (default): uniform on the sphere, the hardest case for an ANN index, since such
  data has no low-dimensional structure to exploit. Genuine probes are enrolled vectors plus
  isotropic noise, re-normalised, with median squared distance ``--genuine`` to their match
  (0.5, i.e. cosine 0.75; a second, easier set at 0.3 shows how much that matters).
- ``dlib-orl``: a Gaussian with the mean and covariance of real face embeddings (dlib's
  encoder on the ORL photos, measured by ``measure_embedding_statistics.py`` and shipped in
  ``benchmarks/data``), re-normalised. A genuine probe is its enrolled vector plus the
  difference between two photos of one person (twice the measured within-person covariance).

Impostor probes are fresh draws from the model (nobody enrolled).

Measured: the machine's memory read bandwidth; enrolment through `convgen.gallery.store.Gallery`
(one person per transaction, and in bulk) and the index rebuild it triggers; exact search
latency for one query (its floor is one read of the matrix at that bandwidth) and for a batch;
plain numpy for comparison; the FAISS HNSW build, and latency and recall@1 against exact search
over an ``efSearch`` sweep, choosing the smallest ``efSearch`` with recall@1 >= 0.99.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/bench_gallery.py [--size 1000000]

(Those two variables, set on some machines to work around old OpenBLAS bugs, pin numpy to a
slower kernel; unset them for a benchmark only, never in tests. The table says which ran.)
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from convgen.gallery.search import open_index


def synthetic(n: int, dim: int, seed: int) -> np.ndarray:
    """``n`` unit vectors, generated and normalised in chunks (no float64 or (n, D) temporaries)."""
    rng = np.random.default_rng(seed)
    out = np.empty((n, dim), np.float32)
    for start in range(0, n, 1 << 16):
        chunk = rng.standard_normal((min(1 << 16, n - start), dim), dtype=np.float32)
        chunk /= np.linalg.norm(chunk, axis=1, keepdims=True)
        out[start : start + len(chunk)] = chunk
    return out


def genuine_probes(gallery: np.ndarray, count: int, distance: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Noisy copies of ``count`` enrolled vectors at median squared distance ``distance``."""
    rng = np.random.default_rng(seed)
    rows = rng.choice(len(gallery), count, replace=False)
    # |x + σz|² ≈ 1 + Dσ²; after re-normalising, cos = 1/sqrt(1 + Dσ²) and d² = 2 - 2·cos.
    cos = 1 - distance / 2
    sigma = np.float32(np.sqrt((1 / cos**2 - 1) / gallery.shape[1]))
    probes = gallery[rows] + sigma * rng.standard_normal((count, gallery.shape[1]), dtype=np.float32)
    probes /= np.linalg.norm(probes, axis=1, keepdims=True)
    return probes.astype(np.float32, copy=False), rows


STATISTICS = Path(__file__).resolve().parent / "data" / "dlib_orl_statistics.safetensors"


def gaussian(n: int, mean: np.ndarray, cov: np.ndarray, seed: int, normalise: bool = True) -> np.ndarray:
    """``n`` draws from N(mean, cov), L2-normalised, as float32 (in chunks, like `synthetic`)."""
    rng = np.random.default_rng(seed)
    root = np.linalg.cholesky(cov + 1e-9 * np.eye(len(cov))).astype(np.float32).T
    out = np.empty((n, len(mean)), np.float32)
    for start in range(0, n, 1 << 16):
        chunk = rng.standard_normal((min(1 << 16, n - start), len(mean)), dtype=np.float32) @ root + mean
        out[start : start + len(chunk)] = chunk / np.linalg.norm(chunk, axis=1, keepdims=True) if normalise else chunk
    return out


def face_like(n: int, queries: int) -> tuple[np.ndarray, list[tuple[np.ndarray, np.ndarray]], np.ndarray]:
    """Gallery, genuine probes and impostor probes drawn with the moments of real face embeddings."""
    from safetensors.numpy import load_file

    stats = load_file(str(STATISTICS))
    mean = stats["mean"].astype(np.float32)
    gallery = gaussian(n, mean, stats["total"].astype(np.float64), seed=0)
    rows = np.random.default_rng(1).choice(n, queries, replace=False)
    probes = gallery[rows] + gaussian(queries, np.zeros_like(mean), 2 * stats["within"].astype(np.float64), seed=3, normalise=False)
    probes /= np.linalg.norm(probes, axis=1, keepdims=True)
    return gallery, [(probes.astype(np.float32), rows)], gaussian(queries, mean, stats["total"].astype(np.float64), seed=2)


def timed(fn, repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def read_bandwidth(matrix: np.ndarray, threads: int) -> float:
    """Bytes/s for summing ``matrix`` (larger than any cache) split over ``threads`` threads."""
    parts = np.array_split(matrix.reshape(-1), threads)

    def run():
        workers = [threading.Thread(target=np.add.reduce, args=(part,)) for part in parts]  # releases the GIL
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()

    run()
    return matrix.nbytes / min(timed(run, 5))


def blas_kernel() -> str:
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return "unknown (threadpoolctl not installed)"
    for info in threadpool_info():
        if info.get("user_api") == "blas" and "numpy" in info.get("filepath", ""):
            return f"{info.get('internal_api')} {info.get('version')} {info.get('architecture')}, {info.get('num_threads')} threads"
    return "unknown"


def measure_enrolment(work: Path, vectors: np.ndarray, singles: int) -> dict:
    """Enrolment through the store: one person per transaction, then the rest in bulk, then the rebuild."""
    try:
        from convgen.gallery.store import Gallery
    except ImportError:
        return {}
    result = {}
    gallery = Gallery.create(work / "people.db", fingerprint="bench", encoder={"name": "bench"}, dim=vectors.shape[1])
    with gallery:
        start = time.perf_counter()
        for i in range(singles):
            gallery.enrol(f"p{i}", vectors[i : i + 1])
        result["single"] = singles / (time.perf_counter() - start)
        bulk = {f"p{i}": vectors[i : i + 1] for i in range(singles, len(vectors))}
        start = time.perf_counter()
        gallery.enrol_many(bulk)
        result["bulk"] = len(bulk) / (time.perf_counter() - start)
        del bulk
        probe = vectors[:1]
        start = time.perf_counter()
        gallery.search(probe, 1)  # the index is stale: rebuilt from SQLite, then saved
        result["rebuild"] = time.perf_counter() - start
        start = time.perf_counter()
        gallery.search(probe, 1)
        result["search"] = time.perf_counter() - start
        gallery.enrol("one-more", vectors[1:2])
        start = time.perf_counter()
        gallery.search(probe, 1)
        result["after_one"] = time.perf_counter() - start
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=1_000_000, help="gallery entries (e.g. 100000 for a quick run)")
    parser.add_argument("--model", choices=["uniform", "dlib-orl"], default="uniform", help="how the synthetic embeddings are drawn (see above)")
    parser.add_argument("--dim", type=int, default=128, help="uniform model only (dlib-orl is 128-d)")
    parser.add_argument("--queries", type=int, default=200, help="genuine and impostor probes for recall")
    parser.add_argument("--batch", type=int, default=64, help="queries per batched exact search")
    parser.add_argument("--k", type=int, default=10, help="neighbours per query")
    parser.add_argument("--genuine", type=float, nargs="+", default=[0.5, 0.3],
                        help="uniform model: median squared distance of genuine probes to their match; the first set is timed")  # fmt: skip
    parser.add_argument("--m", type=int, help="HNSW graph degree (default: the faiss backend's)")
    parser.add_argument("--ef-construction", type=int, help="(default: the faiss backend's)")
    parser.add_argument("--storage", choices=["float16", "float32"], help="how the HNSW graph stores the vectors (default: the faiss backend's)")
    parser.add_argument("--ef", type=int, nargs="+", default=[16, 24, 32, 48, 64, 128, 256, 512, 1024, 2048])
    parser.add_argument("--enrol-singles", type=int, default=2000, help="one-transaction enrolments (rest in bulk)")
    parser.add_argument("--no-enrol", action="store_true", help="skip enrolment through the store")
    args = parser.parse_args()

    console = Console(width=max(Console().width, 140))
    n, dim = args.size, (128 if args.model == "dlib-orl" else args.dim)
    matrix_bytes = n * dim * 4
    note = lambda text: console.print(text, style="dim")  # noqa: E731
    rows: list[tuple[str, str, str, str]] = []
    sections: list[int] = []
    blocked = [name for name in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE") if name in os.environ]

    note(f"generating {n:,} × {dim} unit vectors ({matrix_bytes / 1e6:,.0f} MB), model {args.model}")
    if args.model == "uniform":
        gallery = synthetic(n, dim, seed=0)
        probe_sets = [genuine_probes(gallery, args.queries, level, seed=1 + i) for i, level in enumerate(args.genuine)]
        impostor = synthetic(args.queries, dim, seed=2)
        set_names = [f"d² {level:g}" for level in args.genuine]
    else:
        gallery, probe_sets, impostor = face_like(n, args.queries)
        set_names = ["face-like"]
    ids = np.arange(n, dtype=np.int64)
    genuine, truth_rows = probe_sets[0]

    # -- machine
    bandwidth = {t: read_bandwidth(gallery, t) for t in sorted({1, os.cpu_count() or 1})}
    best = max(bandwidth.values())
    floor = matrix_bytes / best
    rows.append(("memory read bandwidth", f"{best / 1e9:.1f} GB/s",
                 ", ".join(f"{t} thread{'s' * (t > 1)}: {b / 1e9:.1f} GB/s" for t, b in bandwidth.items()),
                 f"floor for one scan: {floor * 1e3:.1f} ms"))  # fmt: skip
    sections.append(len(rows))

    work = Path(tempfile.mkdtemp(prefix="bench_gallery_"))
    try:
        # -- enrolment
        if not args.no_enrol:
            note("enrolling through the store")
            enrol = measure_enrolment(work, gallery, min(args.enrol_singles, n))
            if enrol:
                rows.append(("enrol, one person per transaction", f"{enrol['single']:,.0f} /s", "Gallery.enrol, SQLite WAL", ""))
                rows.append(("enrol, bulk", f"{enrol['bulk']:,.0f} /s", "Gallery.enrol_many, one transaction", ""))
                rows.append(("first search after enrolment", f"{enrol['rebuild']:.2f} s",
                             f"index rebuilt from SQLite ({n:,} rows) and saved", ""))  # fmt: skip
                rows.append(("search, index current", f"{enrol['search'] * 1e3:.1f} ms", "Gallery.search, 1 query", ""))
                rows.append(("search after one more enrolment", f"{enrol['after_one']:.2f} s", "enrol + search: the index follows the change, no rebuild", ""))
            else:
                rows.append(("enrolment", "—", "convgen.gallery.store not available: see index add below", ""))
            shutil.rmtree(work)
            work.mkdir()

        # -- exact
        note("exact index")
        exact = open_index("exact", work / "bench.db", dim)
        start = time.perf_counter()
        for chunk in range(0, n, 100_000):
            exact.add(ids[chunk : chunk + 100_000], gallery[chunk : chunk + 100_000])
        add_rate = n / (time.perf_counter() - start)
        rows.append(("exact: index add", f"{add_rate:,.0f} /s", "batches of 100k", ""))
        start = time.perf_counter()
        exact.save(1)
        rows.append(("exact: save", f"{time.perf_counter() - start:.2f} s", f"{matrix_bytes / 1e6:,.0f} MB, atomic + fsync", ""))
        exact.search(genuine[:1], args.k)  # warm-up: norms, scratch buffer
        single = statistics.median(timed(lambda q=q: exact.search(q[None], args.k), 1)[0] for q in genuine[:25])
        scan = matrix_bytes / single
        mark = "met" if single <= 1.5 * floor else "MISSED"
        rows.append(("exact: 1 query", f"{single * 1e3:.1f} ms", f"scans {scan / 1e9:.1f} GB/s; {single / floor:.2f}× the bandwidth floor",
                     f"≤ 1.5× floor: {mark}"))  # fmt: skip
        batch = genuine[: args.batch]
        batched = min(timed(lambda: exact.search(batch, args.k), 3)) / len(batch)
        rows.append((f"exact: batch of {len(batch)}", f"{batched * 1e3:.2f} ms/query",
                     f"effective {matrix_bytes / batched / 1e9:.0f} GB/s; {single / batched:.1f}× the unbatched rate", ""))  # fmt: skip
        q = genuine[0]
        naive = statistics.median(timed(lambda: ((gallery - q) ** 2).sum(1).argmin(), 3))
        matvec = statistics.median(timed(lambda: gallery @ q, 5))
        rows.append(("numpy ((X - q)**2).sum(1).argmin()", f"{naive * 1e3:.1f} ms", f"exact index is {naive / single:.1f}× faster", ""))
        rows.append(("numpy X @ q (no top-k)", f"{matvec * 1e3:.1f} ms", f"exact index takes {single / matvec:.2f}× this", ""))
        truths = [exact.search(probes, 1)[1][:, 0] for probes, _ in probe_sets]
        _, truth_impostor = exact.search(impostor, 1)
        for (probes, sources), truth, name in zip(probe_sets, truths, set_names):
            rows.append((f"genuine probes ({name}): exact top-1 = source", f"{(truth == sources).mean():.3f}",
                         f"median d² to source {np.median(((probes - gallery[sources]) ** 2).sum(1)):.2f}", ""))  # fmt: skip
        sections.append(len(rows))

        # -- faiss
        given = {"m": args.m, "ef_construction": args.ef_construction, "storage": args.storage}
        ann = open_index("faiss", work / "bench.db", dim, **{name: value for name, value in given.items() if value is not None})
        graph = "M={m}, efConstruction={ef_construction}, {storage} storage".format(**ann.options)
        note(f"FAISS HNSW build ({graph})")
        start = time.perf_counter()
        for chunk in range(0, n, 100_000):
            ann.add(ids[chunk : chunk + 100_000], gallery[chunk : chunk + 100_000])
        build = time.perf_counter() - start
        rows.append(("faiss: HNSW build", f"{build:.1f} s", f"{n / build:,.0f} vectors/s, {graph}", ""))
        chosen: list[tuple[int, float, float] | None] = [None] * len(probe_sets)
        for ef in args.ef:
            ann.options["ef_search"] = ef
            recalls = [(ann.search(probes, 1)[1][:, 0] == truth).mean() for (probes, _), truth in zip(probe_sets, truths)]
            recall_impostor = (ann.search(impostor, 1)[1][:, 0] == truth_impostor[:, 0]).mean()
            latency = statistics.median(timed(lambda q=q: ann.search(q[None], args.k), 1)[0] for q in genuine)
            batched_ann = min(timed(lambda: ann.search(genuine, args.k), 3)) / len(genuine)
            for i, recall in enumerate(recalls):
                if recall >= 0.99 and chosen[i] is None:
                    chosen[i] = (ef, latency, recall)
            levels = ", ".join(f"{r:.3f} ({name})" for r, name in zip(recalls, set_names))
            rows.append((f"faiss: efSearch={ef}", f"{latency * 1e3:.3f} ms",
                         f"recall@1 {levels}, {recall_impostor:.3f} impostor; batched {batched_ann * 1e3:.3f} ms/query; "
                         f"{single / latency:.0f}× exact", "← chosen" if chosen[0] and chosen[0][0] == ef else ""))  # fmt: skip
            note(f"efSearch={ef}: recall@1 {levels}; {latency * 1e3:.3f} ms")
        sections.append(len(rows))
        for name, point in zip(set_names, chosen):
            what = f"ANN speed-up at recall@1 ≥ 0.99 ({name})"
            if point:
                ef, latency, recall = point
                mark = "met" if single / latency >= 100 else "MISSED"
                rows.append((what, f"{single / latency:.0f}×", f"efSearch={ef}: {latency * 1e3:.3f} ms vs exact {single * 1e3:.1f} ms, recall@1 {recall:.3f}",
                             f"≥ 100×: {mark}"))  # fmt: skip
            else:
                rows.append((what, "—", f"no efSearch in {args.ef} reached recall@1 0.99", "≥ 100×: MISSED"))
    finally:
        shutil.rmtree(work, ignore_errors=True)

    table = Table(title=f"Gallery search, {n:,} × {dim} float32 (L2-normalised, model {args.model}), k={args.k}, {os.cpu_count()} cores")
    for column in ("measure", "value", "detail", "target"):
        table.add_column(column, justify="right" if column == "value" else "left")
    for i, row in enumerate(rows):
        if i in sections:
            table.add_section()
        table.add_row(*row)
    table.caption = (
        f"numpy BLAS: {blas_kernel()}" + (f" (with {', '.join(blocked)} set: a slower kernel)" if blocked else "")
        + f". Latencies: median over probes (unbatched), best of 3 (batched). Recall@1: ANN top-1 = exact top-1 over {args.queries} "
        f"genuine probes per set (noisy enrolled vectors; latencies on the first set) and {args.queries} impostor probes (random, nobody enrolled)."
        + ("" if not args.no_enrol else " Enrolment skipped (--no-enrol).")
    )
    console.print(table)


if __name__ == "__main__":
    main()
