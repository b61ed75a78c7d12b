"""Galleries: enrol / verify / identify round trips, calibration, durability, bad input, the CLI."""

import json
import os
import sqlite3
import stat
import subprocess
import sys

import numpy as np
import pytest

from conftest import assert_one_line_error, invoke
from convgen.data import SyntheticClusters
from convgen.errors import ConfigError, DataError, ModelMismatchError
from convgen.gallery import api
from convgen.gallery.search import Capabilities, SearchIndex
from convgen.gallery.store import Gallery
from convgen.weights import build_encoder, encoder_spec, save_encoder

DIM = 16


def unit(x):
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def people(n, samples, seed=0, spread=0.05):
    """Clustered unit embeddings: n identities × samples each."""
    rng = np.random.default_rng(seed)
    centres = unit(rng.normal(size=(n, DIM)))
    return {f"p{seed}_{i}": unit(c + spread * rng.normal(size=(samples, DIM))) for i, c in enumerate(centres)}


def new_gallery(path, **kwargs):
    return Gallery.create(path, fingerprint="fp-test", encoder={"name": "test"}, dim=DIM, **kwargs)


def test_enrol_identify_verify_round_trip(tmp_path):
    crowd = people(20, 3)
    with new_gallery(tmp_path / "g.db") as g:
        for name, e in crowd.items():
            g.enrol(name, e[:1])  # one-shot: a single sample each
        assert len(g) == 20 and [p.samples for p in g.people()] == [1] * 20
        probes = np.stack([e[1] for e in crowd.values()])
        results = api.identify(g, probes, k=3, threshold=0.5)
        assert [r["name"] for r in results] == list(crowd), "each person is found from another sample"
        assert all(len(r["candidates"]) == 3 for r in results)
        stranger = unit(np.random.default_rng(99).normal(size=(1, DIM)))
        assert api.identify(g, stranger, threshold=0.5)[0]["name"] is None, "a stranger is unknown"
        name, e = next(iter(crowd.items()))
        assert api.verify(g, e[2], name, threshold=0.5)["match"]
        other = list(crowd)[1]
        assert not api.verify(g, e[2], other, threshold=0.5)["match"]


def test_closest_and_mean_scoring(tmp_path):
    a = unit(np.array([[1, 0] + [0] * (DIM - 2), [0, 1] + [0] * (DIM - 2)], dtype=np.float32))
    query = a[:1]
    for scoring, expected in (("closest", 0.0), ("mean", float(((unit(a.mean(0)) - query[0]) ** 2).sum()))):
        with new_gallery(tmp_path / f"{scoring}.db", scoring=scoring) as g:
            g.enrol("a", a)
            assert g.distance_to(query, "a") == pytest.approx(expected, abs=1e-6)
            assert g.search(query, 1)[0][0][1] == pytest.approx(expected, abs=1e-6)


def test_list_rename_remove_append(tmp_path):
    crowd = people(3, 2)
    with new_gallery(tmp_path / "g.db") as g:
        for name, e in crowd.items():
            g.enrol(name, e[:1])
        first, second, third = list(crowd)
        with pytest.raises(DataError, match="already enrolled"):
            g.enrol(first, crowd[first][1:])
        g.enrol(first, crowd[first][1:], append=True)
        g.rename(second, "bob")
        g.remove(third)
        assert [(p.name, p.samples) for p in g.people()] == [("bob", 1), (first, 2)]
        assert api.identify(g, crowd[second][1:], threshold=1.0)[0]["name"] == "bob"
        assert api.identify(g, crowd[third][1:], threshold=4.0)[0]["name"] != third
        with pytest.raises(DataError, match="'nobody' is not enrolled"):
            g.remove("nobody")
        with pytest.raises(DataError, match="already enrolled"):
            g.rename("bob", first)


def test_export_import(tmp_path):
    crowd = people(5, 2)
    with new_gallery(tmp_path / "a.db") as a:
        for name, e in crowd.items():
            a.enrol(name, e)
        a.set_threshold(0.3, {"mode": "test"})
        api.export(a, tmp_path / "a.safetensors")
    with new_gallery(tmp_path / "b.db") as b:
        assert api.import_(b, tmp_path / "a.safetensors") == 5
        for name, e in crowd.items():
            np.testing.assert_array_equal(b.embeddings_of(name), e)
    with Gallery.create(tmp_path / "c.db", fingerprint="other", encoder={}, dim=DIM) as c:
        with pytest.raises(ModelMismatchError, match="another encoder"):
            api.import_(c, tmp_path / "a.safetensors")
        assert len(c) == 0


def test_calibrated_fpir_holds_for_new_strangers(tmp_path):
    with new_gallery(tmp_path / "g.db") as g:
        for name, e in people(100, 1, seed=1).items():
            g.enrol(name, e)
        calibration = people(100, 4, seed=2)
        labels = np.repeat(np.arange(100), 4)
        report = api.calibrate(g, np.concatenate(list(calibration.values())), labels, "1:N", 0.05)
        assert g.threshold == report["threshold"] and g.calibration["mode"] == "1:N"
        assert report["fpir"] <= 0.05 and report["gallery_people"] == 100 and 0 < report["dir"] <= 1
        strangers = np.concatenate(list(people(400, 1, seed=3).values()))
        accepted = np.mean([r["name"] is not None for r in api.identify(g, strangers)])
        assert abs(accepted - 0.05) < 3 * np.sqrt(0.05 * 0.95 / 400) + 0.02, accepted


def test_calibrated_far_for_verification(tmp_path):
    with new_gallery(tmp_path / "g.db") as g:
        calibration = people(200, 3, seed=4)
        report = api.calibrate(g, np.concatenate(list(calibration.values())), np.repeat(np.arange(200), 3), "1:1", 0.01)
        assert report["far"] <= 0.01 and report["tar"] > 0.9
        fresh = np.stack([e[0] for e in people(1000, 1, seed=5).values()])
        impostor = ((fresh[0::2] - fresh[1::2]) ** 2).sum(1)  # 500 pairs of independent strangers
        far = np.mean(impostor <= g.threshold)
        assert abs(far - 0.01) < 3 * np.sqrt(0.01 * 0.99 / 500) + 0.01, far


def test_bad_input_is_refused_and_nothing_changes(tmp_path):
    path = tmp_path / "g.db"
    with new_gallery(path) as g:
        with pytest.raises(DataError, match="nobody enrolled"):
            g.search(np.zeros((1, DIM), np.float32))
        with pytest.raises(DataError, match=r"shape \(n, 16\)"):
            g.enrol("a", np.zeros((1, DIM + 1), np.float32))
        with pytest.raises(DataError, match="NaN"):
            g.enrol("a", np.full((1, DIM), np.nan, np.float32))
        with pytest.raises(DataError, match="non-empty name"):
            g.enrol(" ", np.zeros((1, DIM), np.float32))
        g.enrol("a", people(1, 1)["p0_0"])
        with pytest.raises(ConfigError, match="no calibrated threshold"):
            api.identify(g, people(1, 1)["p0_0"])
        with pytest.raises(ModelMismatchError, match="another encoder|was built with encoder"):
            g.check_model("different")
        generation = g.generation
    before = path.read_bytes()
    with pytest.raises(DataError, match="already exists"):
        new_gallery(path)
    assert path.read_bytes() == before
    with Gallery.open(path) as g:
        assert g.generation == generation and len(g) == 1


def test_files_that_are_not_galleries(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(DataError, match="is not a convgen gallery"):
        Gallery.open(tmp_path / "notes.txt")
    sqlite3.connect(tmp_path / "other.db").execute("CREATE TABLE t (x)").connection.commit()
    with pytest.raises(DataError, match="is not a convgen gallery"):
        Gallery.open(tmp_path / "other.db")
    with pytest.raises(DataError, match="gallery not found"):
        Gallery.open(tmp_path / "missing.db")
    with pytest.raises(DataError, match="is a directory"):
        Gallery.open(tmp_path)
    new_gallery(tmp_path / "g.db").close()
    data = bytearray((tmp_path / "g.db").read_bytes())
    data[100:4000] = os.urandom(3900)
    (tmp_path / "g.db").write_bytes(bytes(data))
    with pytest.raises(DataError):
        Gallery.open(tmp_path / "g.db")


def test_galleries_are_owner_only(tmp_path):
    new_gallery(tmp_path / "g.db").close()
    assert stat.S_IMODE((tmp_path / "g.db").stat().st_mode) == 0o600


WORKER = """
import sys, numpy as np
from convgen.gallery.store import Gallery
path, prefix, count, samples = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
rng = np.random.default_rng(abs(hash(prefix)) % 2**32)
with Gallery.open(path) as g:
    for i in range(count):
        e = rng.normal(size=(samples, g.dim)).astype(np.float32)
        g.enrol(f"{prefix}{i}", e / np.linalg.norm(e, axis=1, keepdims=True))
        print(i, flush=True)
"""


def _worker(path, prefix, count, samples=3):
    return subprocess.Popen([sys.executable, "-c", WORKER, str(path), prefix, str(count), str(samples)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip


def test_a_killed_enrolment_leaves_exactly_the_committed_people(tmp_path):
    path = tmp_path / "g.db"
    new_gallery(path).close()
    proc = _worker(path, "k", 100000, samples=3)
    for _ in range(50):  # wait until some people are committed
        if proc.stdout.readline().strip() == "40":
            break
    proc.kill()
    proc.wait()
    assert sqlite3.connect(path).execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    with Gallery.open(path) as g:
        enrolled = g.people()
        assert len(enrolled) >= 41
        assert all(p.samples == 3 for p in enrolled), "nobody is half-enrolled"
        assert {p.name for p in enrolled} == {f"k{i}" for i in range(len(enrolled))}
        g.enrol("after", people(1, 1)["p0_0"])  # still writable
        assert g.search(people(1, 1)["p0_0"], 1)[0][0][0] == "after"


def test_two_writers_lose_nothing(tmp_path):
    path = tmp_path / "g.db"
    new_gallery(path).close()
    procs = [_worker(path, prefix, 60) for prefix in ("a", "b")]
    for proc in procs:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
    with Gallery.open(path) as g:
        names = {p.name for p in g.people()}
        assert names == {f"{p}{i}" for p in "ab" for i in range(60)}
        assert g.generation == 120


READER = """
import sys, time, numpy as np
from convgen.gallery.store import Gallery
path, final = sys.argv[1], int(sys.argv[2])
searched = missed = 0
seen = set()
with Gallery.open(path) as g:
    g.search(np.ones((1, g.dim), np.float32), 1)
    print("ready", flush=True)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        generation = g.generation
        row = g.db.execute("SELECT p.name, s.embedding FROM people p JOIN samples s ON s.person = p.id "
                           "ORDER BY s.id DESC LIMIT 1").fetchone()
        searched += 1
        missed += g.search(np.frombuffer(row[1], np.float32)[None], 1)[0][0][0] != row[0]
        seen.add(generation)
        if generation >= final:
            break
print(searched, missed, len(seen))
"""


def test_readers_see_every_person_a_concurrent_writer_committed(tmp_path):
    """Readers in other processes follow a writer through the change log: a person committed
    before a search starts is found by it (the small version of benchmarks/bench_gallery_load.py)."""
    path = tmp_path / "g.db"
    with new_gallery(path) as g:
        g.enrol_many(people(300, 1, seed=8))
    readers = [subprocess.Popen([sys.executable, "-c", READER, str(path), "121"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True) for _ in range(2)]  # fmt: skip
    for proc in readers:
        assert proc.stdout.readline().strip() == "ready", proc.stderr.read()
    writer = _worker(path, "w", 120)  # starts while both readers are searching
    _, err = writer.communicate(timeout=300)
    assert writer.returncode == 0, err
    for proc in readers:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
        searched, missed, generations = map(int, out.split())
        assert missed == 0, f"{missed} of {searched} searches missed a committed person"
        assert generations > 2, "the reader searched while the writer was enrolling"
    with Gallery.open(path) as g:
        assert len(g) == 420 and g.generation == 121
        probes = np.concatenate([g.embeddings_of(f"w{i}")[:1] for i in range(120)])
        assert [hits[0][0] for hits in g.search(probes, 1)] == [f"w{i}" for i in range(120)]


# -- the command line, on real files --------------------------------------------------


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("gallery-cli")
    spec = encoder_spec({"name": "resnet", "channels": [4, 8], "strides": [1, 2], "embedding_dim": 16}, spatial_dims=1, in_channels=1)
    import torch

    torch.manual_seed(0)
    save_encoder(root / "enc.safetensors", build_encoder(spec), spec)
    other = encoder_spec({"name": "vgg", "channels": [4], "convs": [1], "embedding_dim": 16}, spatial_dims=1, in_channels=1)
    save_encoder(root / "other.safetensors", build_encoder(other), other)
    data = SyntheticClusters(spatial_dims=1, size=32, identities=30, samples_per_identity=3, seed=0)
    for index, (x, label) in enumerate(data):
        folder = root / ("known" if label < 10 else "strangers") / data.classes[label]
        folder.mkdir(parents=True, exist_ok=True)
        np.save(folder / f"{index}.npy", x.numpy())
    return root


def test_cli_round_trip(files, tmp_path):
    db = tmp_path / "people.db"
    out = invoke("gallery", "create", db, "--weights", files / "enc.safetensors", "--json")
    assert out.exit_code == 0, out.stderr
    assert json.loads(out.stdout)["dim"] == 16
    known = sorted((files / "known").iterdir())
    for person in known:
        result = invoke("gallery", "enrol", db, person.name, sorted(person.iterdir())[0])
        assert result.exit_code == 0, result.stderr
    listing = json.loads(invoke("gallery", "list", db, "--json").stdout)
    assert [p["name"] for p in listing] == [p.name for p in known]

    assert_one_line_error(invoke("gallery", "identify", db, sorted(known[0].iterdir())[1]), 3, ["no calibrated threshold"])
    calibration = invoke("gallery", "calibrate", db, files / "strangers", "--fpir", "0.1", "--json")
    assert calibration.exit_code == 0, calibration.stderr
    report = json.loads(calibration.stdout)
    assert report["mode"] == "1:N" and report["non_mated_searches"] == 60 and report["fpir"] <= 0.1

    probe = sorted(known[0].iterdir())[1]
    found = json.loads(invoke("gallery", "identify", db, probe, "--json", "--threshold", "4").stdout)["results"][0]
    assert found["name"] == found["candidates"][0]["name"] and found["file"] == str(probe)
    assert invoke("gallery", "verify", db, found["name"], probe, "--threshold", "4").exit_code == 0
    assert invoke("gallery", "verify", db, found["name"], probe, "--threshold", "0").exit_code == 10

    assert invoke("gallery", "rename", db, known[0].name, "renamed").exit_code == 0
    assert invoke("gallery", "remove", db, "renamed").exit_code == 0
    assert invoke("gallery", "export", db, tmp_path / "x.safetensors").exit_code == 0
    db2 = tmp_path / "copy.db"
    invoke("gallery", "create", db2, "--weights", files / "enc.safetensors")
    imported = invoke("gallery", "import", db2, tmp_path / "x.safetensors", "--json")
    assert json.loads(imported.stdout) == {"imported": 9, "gallery": str(db2)}
    assert len(json.loads(invoke("gallery", "list", db2, "--json").stdout)) == 9


def test_cli_errors(files, tmp_path):
    db = tmp_path / "people.db"
    invoke("gallery", "create", db, "--weights", files / "enc.safetensors")
    sample = next((files / "known").rglob("*.npy"))
    before = db.read_bytes()
    assert_one_line_error(invoke("gallery", "enrol", db, "x", sample, "--weights", files / "other.safetensors"), 4, ["was built with encoder"])
    assert_one_line_error(invoke("gallery", "verify", db, "nobody", sample, "-t", "1"), 5, ["'nobody' is not enrolled"])
    assert_one_line_error(invoke("gallery", "identify", db, sample, "-t", "1"), 5, ["nobody enrolled"])
    assert_one_line_error(invoke("gallery", "list", files / "enc.safetensors"), 5, ["is not a convgen gallery"])
    assert_one_line_error(invoke("gallery", "create", db, "--weights", files / "enc.safetensors"), 5, ["already exists"])
    bad = tmp_path / "bad.npy"
    np.save(bad, np.zeros((1, 2, 8, 8), np.float32))
    assert_one_line_error(invoke("gallery", "enrol", db, "y", bad), 5, ["does not fit the gallery's encoder"])
    assert db.read_bytes() == before, "nothing was written"
    assert json.loads(invoke("gallery", "list", db, "--json").stdout) == []


def test_cli_backend_options(files, tmp_path):
    pytest.importorskip("faiss")
    db = tmp_path / "ann.db"
    result = invoke("gallery", "create", db, "-w", files / "enc.safetensors", "--backend", "faiss", "--backend-option", "ef_search=256")
    assert result.exit_code == 0, result.stderr
    with Gallery.open(db) as g:
        assert json.loads(g.meta["backend_options"]) == {"ef_search": 256}
    bad = tmp_path / "bad.db"
    result = invoke("gallery", "create", bad, "-w", files / "enc.safetensors", "--backend", "faiss", "--backend-option", "ef_serch=256")
    assert_one_line_error(result, 3, ["ef_serch"])
    assert not bad.exists()


@pytest.mark.parametrize("backend", ["faiss", "milvus"])
def test_ann_backends_answer_like_exact_search(tmp_path, backend):
    pytest.importorskip({"faiss": "faiss", "milvus": "pymilvus"}[backend])
    crowd = people(300, 2, seed=7)
    probes = np.stack([e[1] for e in crowd.values()])
    answers = {}
    for kind in ("exact", backend):
        with new_gallery(tmp_path / f"{kind}.db", backend=kind) as g:
            g.enrol_many({name: e[:1] for name, e in crowd.items()})
            g.remove(list(crowd)[0])
            answers[kind] = [r["name"] for r in api.identify(g, probes, threshold=0.5)]
        with Gallery.open(tmp_path / f"{kind}.db") as g:  # reopened: the persisted index is reused
            assert [r["name"] for r in api.identify(g, probes, threshold=0.5)] == answers[kind]
    assert answers[backend] == answers["exact"]
    assert answers["exact"][0] is None and answers["exact"][1:] == list(crowd)[1:]


@pytest.mark.parametrize("shared", [False, True])
def test_another_process_change_is_replayed_from_the_log_unless_the_backend_is_shared(tmp_path, monkeypatch, shared):
    """The store reads the backend's capabilities, not its name: an index that other processes
    change too (``shared``, e.g. a Milvus server) is rebuilt after their changes, never patched."""
    from convgen.gallery.backends.exact import ExactIndex

    monkeypatch.setattr(ExactIndex, "capabilities", Capabilities(shared=shared))
    crowd = people(12, 2, seed=5)
    names = list(crowd)
    clears = []
    real_clear = SearchIndex.clear
    monkeypatch.setattr(SearchIndex, "clear", lambda self: (clears.append(1), real_clear(self))[1])
    with new_gallery(tmp_path / "g.db") as reader:
        reader.enrol_many({n: crowd[n][:1] for n in names[:6]})
        reader.search(crowd[names[0]][1], 1)
        built = len(clears)
        with Gallery.open(tmp_path / "g.db") as writer:  # another process, as far as the reader can tell
            writer.enrol_many({n: crowd[n][:1] for n in names[6:]})
        found = [hits[0][0] for hits in reader.search(np.stack([crowd[n][1] for n in names]), 1)]
    assert found == names
    assert len(clears) - built == (1 if shared else 0)


@pytest.mark.parametrize("backend, scoring", [("exact", "closest"), ("exact", "mean"), ("faiss", "closest")])
def test_index_follows_changes_without_rebuilding(tmp_path, monkeypatch, backend, scoring):
    pytest.importorskip("faiss") if backend == "faiss" else None
    crowd = people(40, 2, seed=8)
    names = list(crowd)
    probes = np.stack([crowd[n][1] for n in names])

    def no_rebuild(self):
        raise AssertionError("the index was rebuilt from the database")

    with new_gallery(tmp_path / "g.db", backend=backend, scoring=scoring) as g:
        g.enrol_many({n: crowd[n][:1] for n in names[:20]})
        g.search(probes[:1], 1)  # the one full build
        monkeypatch.setattr(SearchIndex, "clear", no_rebuild)  # clear() starts every rebuild
        for n in names[20:]:
            g.enrol(n, crowd[n][:1])
        g.enrol(names[3], crowd[names[3]][1:], append=True)
        g.remove(names[0])
        g.rename(names[1], "renamed")
        found = [hits[0][0] for hits in g.search(probes, 1)]
    assert found[0] != names[0] and found[1] == "renamed" and found[2:] == names[2:]
    with Gallery.open(tmp_path / "g.db") as g:  # saved on close, current on reopen
        assert [hits[0][0] for hits in g.search(probes, 1)] == found


def test_identify_table_names_files_relative_to_their_common_folder():
    from rich.console import Console

    from convgen.gallery.api import identify_table

    hit = {"name": "ann", "distance": 0.1, "threshold": 0.2, "candidates": [{"name": "ann", "distance": 0.1}]}
    rows = [{**hit, "file": "/data/photos/unknown/a.png"}, {**hit, "file": "/data/photos/unknown/sub/b.png"}]
    console = Console(width=200, record=True)
    console.print(identify_table(rows, "t"))
    text = console.export_text()
    assert "unknown/a.png" in text and "unknown/sub/b.png" in text and "files under /data/photos" in text
    # Mixed relative and absolute paths have no common folder: shown as given.
    console = Console(width=200, record=True)
    console.print(identify_table([{**hit, "file": "a.png"}, {**hit, "file": "/x/b.png"}], "t"))
    assert "/x/b.png" in console.export_text()
