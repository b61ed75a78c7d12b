"""Search backends: exact search against brute force; every backend's add/remove/search,
persistence and generation bookkeeping; FAISS and Milvus (milvus-lite) against exact search.

ANN contract tested here: on a few thousand normalised vectors, FAISS (HNSW) and Milvus agree
with exact search on the top-1 of at least 99% of queries (recall@1 >= 0.99); Milvus-lite's
FLAT index is exact, so it is expected (not required) to agree on all of them.
"""

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from convgen.errors import ConfigError, DataError, ModelMismatchError
from convgen.gallery import search
from convgen.gallery.search import backends, open_index

KINDS = tuple(e.name for e in backends().entries() if e.plugin == "convgen.default_plugins.search")  # the core's backends

DIM = 16


def unit(rng, n, dim=DIM) -> np.ndarray:
    x = rng.standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def brute_force(vectors, ids, queries, k):
    """Reference top-k: float64 squared distances, ties broken by id, padded with (inf, -1)."""
    distances = np.full((len(queries), k), np.inf)
    labels = np.full((len(queries), k), -1, np.int64)
    for row, q in enumerate(np.asarray(queries, np.float64)):
        d = ((np.asarray(vectors, np.float64) - q) ** 2).sum(1)
        order = np.lexsort((ids, d))[:k]
        distances[row, : len(order)], labels[row, : len(order)] = d[order], ids[order]
    return distances, labels


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def milvus_uri(tmp_path_factory):
    """One milvus-lite file for the module (it is slow to start); each test gets its own collection."""
    pytest.importorskip("pymilvus")
    pytest.importorskip("milvus_lite")
    return str(tmp_path_factory.mktemp("milvus") / "shared.milvus.db")


@pytest.fixture(scope="module")
def shared_milvus(milvus_uri, tmp_path_factory):
    index = open_index("milvus", tmp_path_factory.mktemp("db") / "g.db", DIM, uri=milvus_uri, collection="shared")
    yield index
    index.close()


@pytest.fixture(params=KINDS)
def kind(request):
    if request.param == "faiss":
        pytest.importorskip("faiss")
    return request.param


@pytest.fixture
def opener(kind, tmp_path, request):
    """``opener(path=..., dim=...)`` opens the backend under test; Milvus collections share one file."""
    def open_(path=None, dim=DIM, **options):
        path = path or tmp_path / "g.db"
        if kind == "milvus":
            uri = request.getfixturevalue("milvus_uri")
            name = "t" + "".join(c if c.isalnum() else "_" for c in request.node.name)[-40:]
            options = {"uri": uri, "collection": f"{name}_{path.stem}", **options}
        return open_index(kind, path, dim, **options)

    return open_


# --------------------------------------------------------------------------- exact vs brute force


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(0, 40),
    k=st.integers(1, 12),
    q=st.integers(1, 5),
    seed=st.integers(0, 2**32 - 1),
)
def test_exact_matches_brute_force_with_ties_and_padding(tmp_path_factory, n, k, q, seed):
    # Small integer coordinates: many exact ties (and duplicates) with exactly representable distances.
    rng = np.random.default_rng(seed)
    vectors = rng.integers(-2, 3, (n, 4)).astype(np.float32)
    ids = rng.permutation(10 * n + 1)[:n].astype(np.int64)
    queries = rng.integers(-2, 3, (q, 4)).astype(np.float32)
    index = open_index("exact", tmp_path_factory.mktemp("h") / "g.db", 4)
    index.add(ids, vectors)
    distances, labels = index.search(queries, k)
    want_d, want_i = brute_force(vectors, ids, queries, k)
    assert distances.dtype == np.float32 and labels.dtype == np.int64
    assert distances.shape == labels.shape == (q, k)
    np.testing.assert_array_equal(labels, want_i)
    np.testing.assert_array_equal(distances, want_d.astype(np.float32))


@pytest.mark.parametrize("queries", [1, 7])
@pytest.mark.parametrize("scratch", [256 << 20, 200_000])
def test_exact_large_gallery_uses_block_threshold(tmp_path, queries, scratch):
    # Big enough for the block-minimum threshold; duplicated rows make ties across blocks;
    # the small scratch forces several query passes.
    rng = np.random.default_rng(1)
    vectors = unit(rng, 50_000)
    vectors[40_000:40_010] = vectors[3]  # ten duplicates of row 3, far from it in the matrix
    ids = rng.permutation(50_000).astype(np.int64)
    probes = np.concatenate([vectors[[3]] + 1e-3, unit(rng, queries - 1)])
    index = open_index("exact", tmp_path / "g.db", DIM, scratch_bytes=scratch)
    index.add(ids, vectors)
    distances, labels = index.search(probes, 12)
    want_d, want_i = brute_force(vectors, ids, probes, 12)
    np.testing.assert_array_equal(labels, want_i)
    np.testing.assert_allclose(distances, want_d, rtol=1e-6, atol=1e-7)


def test_exact_add_grows_geometrically_and_remove_keeps_rows_contiguous(tmp_path):
    rng = np.random.default_rng(2)
    vectors = unit(rng, 3000)
    index = open_index("exact", tmp_path / "g.db", DIM)
    reallocations = 0
    for i in range(3000):
        before = index._vectors
        index.add([i], vectors[i : i + 1])
        reallocations += index._vectors is not before
    assert reallocations <= 10  # 1024 · 1.5^k: amortised O(1) per row, not a copy per add
    index.remove(np.arange(0, 3000, 2))
    assert len(index) == 1500
    assert sorted(index._ids[:1500].tolist()) == list(range(1, 3000, 2))
    _, labels = index.search(vectors[1:6], 1)
    assert labels[[0, 2, 4], 0].tolist() == [1, 3, 5]  # live rows find themselves
    assert (labels[[1, 3], 0] % 2 == 1).all()  # removed rows find some live (odd) id


def test_exact_reopens_memory_mapped(tmp_path):
    rng = np.random.default_rng(3)
    index = open_index("exact", tmp_path / "g.db", DIM)
    index.add(np.arange(100), unit(rng, 100))
    index.save(1)
    index.close()
    again = open_index("exact", tmp_path / "g.db", DIM)
    assert isinstance(again._vectors, np.memmap) and len(again) == 100
    again.add([100], unit(rng, 1))  # the read-only map is copied into growable memory first
    assert len(again) == 101 and not isinstance(again._vectors, np.memmap)


def test_interrupted_exact_save_reads_as_unknown(tmp_path, monkeypatch):
    rng = np.random.default_rng(4)
    index = open_index("exact", tmp_path / "g.db", DIM)
    index.add(np.arange(10), unit(rng, 10))
    index.save(1)
    index.add([10], unit(rng, 1))
    calls = []

    def crash_on_ids(handle, array, **kwargs):
        calls.append(array.dtype)
        if array.dtype == np.int64:  # the vectors file is already replaced; the ids file is not
            raise OSError("disk full")
        return real_save(handle, array, **kwargs)

    real_save = np.save
    monkeypatch.setattr(np, "save", crash_on_ids)
    with pytest.raises(OSError):
        index.save(2)
    monkeypatch.undo()
    assert calls == [np.float32, np.int64]
    assert open_index("exact", tmp_path / "g.db", DIM).generation is None  # never "1" over mixed files


# --------------------------------------------------------------------------- every backend


def test_add_remove_search_round_trip(opener):
    rng = np.random.default_rng(5)
    vectors = unit(rng, 400)
    ids = np.arange(1000, 1400, dtype=np.int64)
    index = opener()
    assert len(index) == 0 and index.generation is None
    d, i = index.search(vectors[:2], 3)  # empty: all padding
    assert np.isinf(d).all() and (i == -1).all()
    index.add(ids, vectors)
    assert len(index) == 400
    d, i = index.search(vectors[:50], 1)
    assert (i[:, 0] == ids[:50]).all() and np.allclose(d[:, 0], 0, atol=1e-5)
    index.remove(np.r_[ids[:50], 99_999])  # an unknown id is ignored
    assert len(index) == 350
    d, i = index.search(vectors[:50], 5)
    assert not np.isin(i, ids[:50]).any()
    assert (np.diff(d, axis=1) >= 0).all()
    index.add(ids[:5], unit(rng, 5) * -1)  # re-enrol removed ids with new vectors
    d, i = index.search(vectors[:5], 400)
    for row in range(5):  # the old vector of id ids[row] must not be what is found
        found = dict(zip(i[row].tolist(), d[row].tolist()))
        assert found.get(int(ids[row]), 4.0) > 1e-3
    d, i = index.search(vectors[:3], 500)  # k > entries: padded with (inf, -1)
    assert (i[:, 355:] == -1).all() and np.isinf(d[:, 355:]).all() and (i[:, :355] >= 0).all()
    with pytest.raises(ValueError, match="already in the index"):
        index.add(ids[60:61], vectors[60:61])
    with pytest.raises(ValueError, match="repeat"):
        index.add([1, 1], unit(rng, 2))
    index.clear()
    assert len(index) == 0 and index.generation is None
    index.close()


def test_persistence_and_generation(opener, tmp_path):
    rng = np.random.default_rng(6)
    vectors, queries = unit(rng, 300), unit(rng, 20)
    index = opener()
    index.add(np.arange(300), vectors)
    index.remove(np.arange(10))
    index.save(7)
    assert index.generation == 7
    before = index.search(queries, 5)
    index.close()

    index = opener()
    assert index.generation == 7 and len(index) == 290
    after = index.search(queries, 5)
    np.testing.assert_array_equal(after[1], before[1])
    np.testing.assert_allclose(after[0], before[0], rtol=1e-6)
    index.add([1000], unit(rng, 1))
    assert index.generation is None  # changed since the save
    index.save(8)
    index.save(9)  # nothing changed: only the generation is rewritten
    index.close()
    index = opener()
    assert index.generation == 9 and len(index) == 291
    index.add([1001], unit(rng, 1))  # changed, then closed without saving
    index.close()
    index = opener()
    # Files that were not rewritten still reflect 9; Milvus wrote the change, so it reads as unknown.
    assert (index.generation, len(index)) in ((9, 291), (None, 292))
    index.close()


def test_dim_mismatch(opener):
    rng = np.random.default_rng(7)
    index = opener()
    index.add(np.arange(5), unit(rng, 5))
    index.save(1)
    with pytest.raises(ModelMismatchError):
        index.add([9], unit(rng, 1, dim=DIM + 1))
    with pytest.raises(ModelMismatchError):
        index.search(unit(rng, 1, dim=DIM - 1), 1)
    index.close()
    with pytest.raises(ModelMismatchError, match=f"{DIM}-dimensional"):
        opener(dim=DIM * 2)


def test_bad_arguments(opener):
    index = opener()
    with pytest.raises(DataError, match="non-negative"):
        index.add([-1], np.zeros((1, DIM), np.float32))
    with pytest.raises(DataError, match="NaN"):
        index.add([1], np.full((1, DIM), np.nan, np.float32))
    with pytest.raises(DataError, match="one id per vector"):
        index.add([1, 2], np.zeros((1, DIM), np.float32))
    with pytest.raises(DataError, match="2-D"):
        index.search(np.zeros(DIM, np.float32), 1)
    with pytest.raises(ValueError, match="k must be"):
        index.search(np.zeros((1, DIM), np.float32), -1)
    assert index.search(np.zeros((2, DIM), np.float32), 0)[1].shape == (2, 0)
    index.close()
    with pytest.raises(ValueError, match="closed"):
        index.search(np.zeros((1, DIM), np.float32), 1)


@pytest.mark.parametrize("file_kind", ["sidecar", "data"])
@pytest.mark.parametrize("kind", ["exact", "faiss"])  # Milvus keeps no files: see the next test
def test_corrupt_files_read_as_unknown(kind, tmp_path, file_kind):
    if kind == "faiss":
        pytest.importorskip("faiss")
    rng = np.random.default_rng(8)
    index = open_index(kind, tmp_path / "g.db", DIM)
    index.add(np.arange(50), unit(rng, 50))
    index.save(3)
    index.close()
    sidecar = {"exact": "g.db.vectors.json", "faiss": "g.db.faiss.json"}[kind]
    data = {"exact": "g.db.vectors.npy", "faiss": "g.db.faiss"}[kind]
    target = tmp_path / (sidecar if file_kind == "sidecar" else data)
    target.write_bytes(target.read_bytes()[: len(target.read_bytes()) // 2])  # truncated
    index = open_index(kind, tmp_path / "g.db", DIM)
    assert index.generation is None and len(index) == 0  # the store rebuilds it from the database
    index.add(np.arange(50), unit(rng, 50))
    index.save(4)
    assert open_index(kind, tmp_path / "g.db", DIM).generation == 4


def test_milvus_unreadable_generation(shared_milvus):
    shared_milvus.clear()
    shared_milvus.add([1], np.ones((1, DIM), np.float32))
    shared_milvus.save(5)
    shared_milvus._client.alter_collection_properties("shared", properties={"convgen.generation": "garbage"})
    again = open_index("milvus", shared_milvus.path, DIM, uri=shared_milvus.uri, collection="shared")
    assert again.generation is None and len(again) == 1
    again.close()


@pytest.mark.parametrize("ann", ["faiss", "faiss-float32", "milvus"])
def test_ann_top1_agrees_with_exact(ann, tmp_path, request):
    if ann.startswith("faiss"):
        pytest.importorskip("faiss")
        index = open_index("faiss", tmp_path / "g.db", 32, storage="float32" if ann == "faiss-float32" else "float16")
    else:
        index = request.getfixturevalue("shared_milvus")
        index = open_index("milvus", tmp_path / "g.db", 32, uri=index.uri, collection="ann32")
    rng = np.random.default_rng(9)
    vectors = unit(rng, 4000, dim=32)
    ids = rng.permutation(10**6)[:4000].astype(np.int64)
    probes = vectors[rng.choice(4000, 300, replace=False)] + 0.05 * rng.standard_normal((300, 32)).astype(np.float32)
    queries = np.concatenate([probes / np.linalg.norm(probes, axis=1, keepdims=True), unit(rng, 100, dim=32)])
    exact = open_index("exact", tmp_path / "exact.db", 32)
    exact.add(ids, vectors)
    index.add(ids, vectors)
    want_d, want_i = exact.search(queries, 5)
    got_d, got_i = index.search(queries, 5)
    agree = got_i[:, 0] == want_i[:, 0]
    assert agree.mean() >= 0.99, f"recall@1 {agree.mean():.3f}"
    # Both report squared Euclidean distances (Milvus L2 and faiss L2 skip the square root);
    # faiss's default float16 storage keeps 11 significant bits of each component.
    tolerance = dict(rtol=2e-3, atol=2e-4) if ann == "faiss" else dict(rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(got_d[agree, 0], want_d[agree, 0], **tolerance)
    # Removed ids are never returned, whatever k.
    removed = want_i[:, 0]
    index.remove(removed)
    exact.remove(removed)
    got_d, got_i = index.search(queries, 50)
    assert not np.isin(got_i, removed).any()
    assert (got_i[:, 0] == exact.search(queries, 1)[1][:, 0]).mean() >= 0.99
    index.close()


def test_faiss_tombstones_then_rebuild(tmp_path):
    pytest.importorskip("faiss")
    rng = np.random.default_rng(10)
    vectors = unit(rng, 1000)
    index = open_index("faiss", tmp_path / "g.db", DIM, rebuild_fraction=0.3)
    index.add(np.arange(1000), vectors)
    index.remove(np.arange(200))  # 20% tombstones: kept, filtered at search time
    assert index._index.ntotal == 1000 and len(index) == 800
    _, labels = index.search(vectors[:300], 10)
    assert (labels >= 200).all()
    index.save(1)
    index.close()
    index = open_index("faiss", tmp_path / "g.db", DIM, rebuild_fraction=0.3)
    assert len(index) == 800 and index._dead == 200  # tombstones persist
    index.remove(np.arange(200, 400))  # 40% > 30%: rebuilt from the stored vectors
    assert index._index.ntotal == 600 and len(index) == 600 and index._dead == 0
    distances, labels = index.search(vectors[400:], 1)
    assert (labels[:, 0] == np.arange(400, 1000)).all() and np.allclose(distances[:, 0], 0, atol=1e-5)
    index.remove(np.arange(1000))
    assert len(index) == 0 and (index.search(vectors[:2], 2)[1] == -1).all()


def test_faiss_storage_is_recorded_and_a_persisted_graph_keeps_its_own(tmp_path):
    pytest.importorskip("faiss")
    rng = np.random.default_rng(11)
    vectors = unit(rng, 300)
    index = open_index("faiss", tmp_path / "g.db", DIM, storage="float32")
    index.add(np.arange(300), vectors)
    index.save(1)
    index.close()
    assert json.loads((tmp_path / "g.db.faiss.json").read_text())["parameters"]["storage"] == "float32"
    index = open_index("faiss", tmp_path / "g.db", DIM)  # default float16: the saved graph is still float32
    assert index.generation == 1 and isinstance(index._faiss.downcast_index(index._index.index), index._faiss.IndexHNSWFlat)
    distances, labels = index.search(vectors[:50], 1)
    assert (labels[:, 0] == np.arange(50)).all() and (distances[:, 0] == 0).all()  # float32: exact
    index.remove(np.arange(100))  # over rebuild_fraction: rebuilt, now with the options' storage
    assert isinstance(index._faiss.downcast_index(index._index.index), index._faiss.IndexHNSWSQ)
    distances, labels = index.search(vectors[100:], 1)
    assert (labels[:, 0] == np.arange(100, 300)).all() and np.allclose(distances[:, 0], 0, atol=1e-6)
    index.close()


def test_unknown_kind_and_option():
    with pytest.raises(ConfigError, match="exact, faiss, milvus"):
        open_index("annoy", "g.db", DIM)
    with pytest.raises(ConfigError, match="known: scratch_bytes"):
        open_index("exact", "g.db", DIM, nprobe=3)
    if search.importlib.util.find_spec("faiss"):
        with pytest.raises(ConfigError, match="positive integer"):
            open_index("faiss", "g.db", DIM, ef_search="many")
        with pytest.raises(ConfigError, match="rebuild_fraction"):
            open_index("faiss", "g.db", DIM, rebuild_fraction=2)
        with pytest.raises(ConfigError, match="storage must be one of float16, float32"):
            open_index("faiss", "g.db", DIM, storage="int8")


@pytest.mark.parametrize(("kind", "module", "hint"), [("faiss", "faiss", "pip install faiss-cpu"),
                                                      ("milvus", "pymilvus", "pip install pymilvus milvus-lite"),
                                                      ("milvus", "milvus_lite", "pip install pymilvus milvus-lite")])  # fmt: skip
def test_missing_dependency_says_what_to_install(kind, module, hint, monkeypatch, tmp_path):
    real = search.importlib.util.find_spec
    monkeypatch.setattr(search.importlib.util, "find_spec", lambda name: None if name == module else real(name))
    with pytest.raises(ConfigError, match=hint):
        open_index(kind, tmp_path / "g.db", DIM)


def test_sidecar_records_generation_and_dim(tmp_path):
    index = open_index("exact", tmp_path / "g.db", DIM)
    index.add([4], np.ones((1, DIM), np.float32))
    index.save(12)
    meta = json.loads((tmp_path / "g.db.vectors.json").read_text())
    assert meta["generation"] == 12 and meta["dim"] == DIM and meta["count"] == 1
    assert np.load(tmp_path / "g.db.ids.npy").tolist() == [4]


def test_core_backends_declare_what_the_store_needs_to_know():
    """Capabilities, not names: the store asks these (see convgen.gallery.sync) and never tests "milvus"."""
    from convgen.gallery.search import backend_class

    entries = {e.name: e for e in backends().entries()}
    assert set(KINDS) == {"exact", "faiss", "milvus"}
    assert {entries[name].plugin for name in KINDS} == {"convgen.default_plugins.search"}  # through the hook, like a plugin
    exact, faiss, milvus = (backend_class(name).capabilities for name in ("exact", "faiss", "milvus"))
    assert not exact.approximate and exact.files and not exact.shared and exact.cheap_to_open
    assert faiss.approximate and faiss.files and not faiss.shared
    assert milvus.shared and not milvus.files and not milvus.cheap_to_open
    with pytest.raises(ConfigError, match="unknown option.*urii.*known: uri"):  # checked by name, no server started
        backend_class("milvus").check_options(DIM, {"urii": "http://nowhere:19530"})
    backend_class("milvus").check_options(DIM, {"uri": "http://nowhere:19530"})


def test_a_backend_class_must_carry_its_registered_name(monkeypatch):
    """Sidecar files and messages use ``kind``: a plugin class registered under another name is refused, named."""
    from convgen.gallery.backends.exact import ExactIndex

    monkeypatch.setattr(ExactIndex, "kind", "brute")
    with pytest.raises(ConfigError, match="registered with a class whose kind is 'brute'; its plugin must set kind = 'exact'"):
        open_index("exact", "g.db", DIM)
