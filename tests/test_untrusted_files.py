"""Untrusted files: no pickle where a user's file is read, safetensors headers checked before
any allocation, recipes that cannot run code or write outside their run, owner-only galleries."""

import ast
import json
import stat
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import save_file

from convgen import config, weights
from convgen.errors import ConfigError, DataError

ROOT = Path(__file__).resolve().parent.parent
SOURCES = sorted([*ROOT.glob("convgen/**/*.py"), *ROOT.glob("plugins/*/src/**/*.py")])


# -- no code runs from a file ----------------------------------------------------------


def _calls(tree):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            owner = (getattr(func.value, "id", None) or "<expression>") if isinstance(func, ast.Attribute) else ""  # "" for a bare name
            yield node, owner, name


def _keyword(node, name):
    return next((k.value for k in node.keywords if k.arg == name), None)


def unsafe_reads(where: str, text: str) -> list[str]:
    """Pickle-like imports, eval/exec, torch.load without weights_only=True, np.load without
    allow_pickle=False and unsafe yaml loaders in one module's source."""
    tree = ast.parse(text)
    problems = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            modules = [a.name for a in node.names] + ([node.module] if isinstance(node, ast.ImportFrom) and node.module else [])
            if any(m.split(".")[0] in ("pickle", "cPickle", "dill", "joblib", "shelve", "marshal") for m in modules):
                problems.append(f"{where}:{node.lineno} imports a pickle-like module")
    for node, owner, name in _calls(tree):
        line = f"{where}:{node.lineno}"
        if owner == "" and name in ("eval", "exec", "__import__"):
            problems.append(f"{line} calls {name}()")
        if owner == "torch" and name == "load":
            flag = _keyword(node, "weights_only")
            if not (isinstance(flag, ast.Constant) and flag.value is True):
                problems.append(f"{line} torch.load without weights_only=True")
        if owner in ("np", "numpy") and name == "load":
            flag = _keyword(node, "allow_pickle")
            if not (isinstance(flag, ast.Constant) and flag.value is False):
                problems.append(f"{line} np.load without allow_pickle=False")
        if owner == "yaml" and name in ("load", "load_all", "unsafe_load", "full_load", "full_load_all"):
            problems.append(f"{line} yaml.{name} (use yaml.safe_load)")
    return problems


def test_no_pickle_eval_or_unsafe_loaders_in_the_code_that_reads_files():
    """A static sweep of convgen/ and every plugin, so that new code cannot bring them back."""
    assert len(SOURCES) > 50, "the sweep found the sources"
    problems = [p for path in SOURCES for p in unsafe_reads(str(path.relative_to(ROOT)), path.read_text(encoding="utf-8"))]
    assert not problems, "\n".join(problems)


def test_the_sweep_flags_each_unsafe_pattern():
    """Not vacuous: each pattern it looks for is flagged, and the safe spellings are not."""
    unsafe = ["import pickle", "from joblib import load", "torch.load(p)", "torch.load(p, weights_only=False)", "np.load(p)",
              "numpy.load(p, allow_pickle=True)", "yaml.load(t)", "yaml.unsafe_load(t)", "eval('1')", "exec('1')"]  # fmt: skip
    for line in unsafe:
        assert unsafe_reads("x", line), line
    safe = "torch.load(p, weights_only=True)\nnp.load(p, allow_pickle=False)\nyaml.safe_load(t)\nmodel.eval()\nself.net.eval()\n"
    assert unsafe_reads("x", safe) == []


@pytest.mark.parametrize(
    "tag",
    [
        "!!python/object/apply:os.system ['touch {marker}']",
        "!!python/object/new:subprocess.Popen [['touch', '{marker}']]",
        "!!python/name:os.system",
        "!!python/module:os",
    ],
)
def test_recipe_files_cannot_run_code(tmp_path, tag):
    marker = tmp_path / "ran"
    recipe = tmp_path / "evil.yaml"
    recipe.write_text("recipe: train\nepochs: " + tag.format(marker=marker) + "\n")
    with pytest.raises(ConfigError, match="cannot parse recipe file") as err:
        config.resolve(str(recipe))
    assert "\n" not in str(err.value) and not marker.exists()
    with pytest.raises(ConfigError, match="cannot parse the value of override"):
        config.resolve("train", ["epochs=" + tag.format(marker=marker)])
    assert not marker.exists()


# -- paths a recipe may write ----------------------------------------------------------


@pytest.mark.parametrize("value", ["stylized.png", "results/stylized.png", "a/b/c.nii.gz", "x..y.npy"])
def test_outputs_inside_the_run_folder_are_accepted(value):
    _, resolved = config.resolve("stylize", [f"output={value}"])
    assert resolved["output"] == value


@pytest.mark.parametrize("value", ["../x.png", "a/../../x.png", "/tmp/x.png", "~/x.png", "C:\\\\x.png", "..\\\\x.png", "''", "null"])
def test_outputs_that_leave_the_run_folder_are_refused(value):
    with pytest.raises(ConfigError, match="leaves the run's folder|must name the file to write"):
        config.resolve("stylize", [f"output={value}"])


# -- safetensors headers ---------------------------------------------------------------


def _forge(header: dict, data: bytes = b"\x00" * 16) -> bytes:
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + data


FORGERIES = {
    "size-mismatch": _forge({"w": {"dtype": "F32", "shape": [4, 4], "data_offsets": [0, 16]}}),
    "huge-shape": _forge({"w": {"dtype": "F32", "shape": [2**31, 2**31], "data_offsets": [0, 2**64]}}),
    "huge-shape-small-offsets": _forge({"w": {"dtype": "F64", "shape": [2**40], "data_offsets": [0, 16]}}),
    "negative-dim": _forge({"w": {"dtype": "F32", "shape": [-4], "data_offsets": [0, 16]}}),
    "float-dim": _forge({"w": {"dtype": "F32", "shape": [4.0], "data_offsets": [0, 16]}}),
    "unknown-dtype": _forge({"w": {"dtype": "object", "shape": [4], "data_offsets": [0, 16]}}),
    "offsets-reversed": _forge({"w": {"dtype": "F32", "shape": [0], "data_offsets": [16, 0]}}),
    "past-the-end": _forge({"w": {"dtype": "F32", "shape": [8], "data_offsets": [0, 32]}}),
    "overlap": _forge({"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}, "b": {"dtype": "U8", "shape": [8], "data_offsets": [8, 16]}}),
    "header-longer-than-file": struct.pack("<Q", 2**40) + b"{}",
    "header-not-json": struct.pack("<Q", 8) + b"{{{{{{{{" + b"\x00" * 16,
    "header-a-list": struct.pack("<Q", 2) + b"[]",
    "metadata-not-strings": _forge({"__metadata__": {"format": 1}}),
    "shorter-than-the-length": b"\x01\x02",
}


@pytest.fixture
def no_library_reads(monkeypatch):
    """Fail the test if safetensors itself is asked to read the file."""

    def refuse(*args, **kwargs):
        raise AssertionError("safetensors was asked to read a file convgen should have refused")

    monkeypatch.setattr(weights, "load_file", refuse)
    import safetensors

    monkeypatch.setattr(safetensors, "safe_open", refuse)


@pytest.mark.parametrize("name", list(FORGERIES))
def test_forged_safetensors_headers_are_refused_before_reading(tmp_path, name, no_library_reads):
    path = tmp_path / f"{name}.safetensors"
    path.write_bytes(FORGERIES[name])
    with pytest.raises(DataError, match="is not a readable safetensors weights file") as err:
        weights.read_weights(path)
    assert "\n" not in str(err.value)


def test_a_genuine_file_passes_the_check_unchanged(tmp_path):
    tensors = {"a": torch.arange(6, dtype=torch.float32).reshape(2, 3), "b": torch.ones(4, dtype=torch.int64), "c": torch.zeros(0)}
    save_file(tensors, str(tmp_path / "ok.safetensors"), metadata={"format": "x"})
    header = weights.check_safetensors(tmp_path / "ok.safetensors")
    assert header["__metadata__"] == {"format": "x"} and header["a"]["shape"] == [2, 3]
    state, spec = weights.read_weights(tmp_path / "ok.safetensors")
    assert spec is None and all(torch.equal(state[k], v) for k, v in tensors.items())


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_any_corruption_of_a_weights_file_reads_or_is_one_data_error(tmp_path, data):
    """Flip, cut or splice bytes anywhere in a real weights file: the result is a one-line
    DataError, never another exception (the fuzzing a hostile file would do), or, when the damage
    still leaves a well-formed file (a flipped byte in a tensor's name or data), tensors that fit
    in the file: a header never makes the reader allocate more than the file holds."""
    path = tmp_path / "w.safetensors"
    save_file({"w": torch.arange(12, dtype=torch.float32), "n": torch.ones(3, dtype=torch.int64)}, str(path), metadata={"k": "v"})
    raw = bytearray(path.read_bytes())
    action = data.draw(st.sampled_from(["flip", "cut", "splice"]))
    at = data.draw(st.integers(0, len(raw) - 1))
    if action == "flip":
        raw[at] ^= data.draw(st.integers(1, 255))
    elif action == "cut":
        raw = raw[:at]
    else:
        raw[at:at] = data.draw(st.binary(min_size=1, max_size=16))
    path.write_bytes(bytes(raw))
    try:
        state, _ = weights.read_weights(path)
    except DataError as err:
        assert "\n" not in str(err)
    else:
        assert len(state) <= 2 and all(isinstance(name, str) for name in state)
        assert sum(t.numel() * t.element_size() for t in state.values()) <= len(raw)


# -- owner-only galleries --------------------------------------------------------------


def test_everything_a_gallery_writes_is_owner_only(tmp_path):
    """The gallery, its WAL files, its search index sidecars and its exports hold biometric data."""
    from convgen.gallery import api
    from convgen.gallery.store import Gallery

    with Gallery.create(tmp_path / "g.db", fingerprint="f", encoder={}, dim=4) as g:
        g.enrol("ann", np.ones((1, 4), np.float32))
        g.search(np.ones((1, 4), np.float32), 1)
        api.export(g, tmp_path / "people.safetensors")
        written = sorted(tmp_path.iterdir())
        assert {p.name for p in written} >= {"g.db", "g.db-wal", "g.db.vectors.npy", "g.db.ids.npy", "people.safetensors"}
        modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in written}
    assert all(mode == 0o600 for mode in modes.values()), {k: oct(v) for k, v in modes.items()}


# -- untrusted metadata, bounded before use (issue 17) ----------------------------------


def _unit(rows: int, dim: int, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).normal(size=(rows, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_a_poisoned_index_cache_with_the_right_generation_is_rebuilt_not_believed(tmp_path):
    """Swap two rows of the persisted exact index, sidecar (and its generation) untouched: the
    checksum recorded in the database no longer matches, so the index is rebuilt from the rows."""
    from convgen.gallery.store import Gallery

    vectors = _unit(3, 16)
    with Gallery.create(tmp_path / "g.db", fingerprint="f", encoder={}, dim=16) as g:
        for name, v in zip("abc", vectors):
            g.enrol(name, v)
        assert g.search(vectors[0], 1)[0][0][0] == "a"
    cache = tmp_path / "g.db.vectors.npy"
    sidecar = (tmp_path / "g.db.vectors.json").read_text()
    poisoned = np.load(cache)
    poisoned[[0, 1]] = poisoned[[1, 0]]
    np.save(cache, poisoned)
    assert (tmp_path / "g.db.vectors.json").read_text() == sidecar  # well-formed, right generation
    with Gallery.open(tmp_path / "g.db") as g:
        index = g._index_sync().current(g.generation)
        assert index is None, "the poisoned cache must not be trusted"
        assert [hits[0][0] for hits in g.search(vectors, 1)] == ["a", "b", "c"]
    assert np.array_equal(np.load(cache), vectors), "the cache was rebuilt from the database"
    with Gallery.open(tmp_path / "g.db") as g:  # and the rebuilt cache is trusted again
        assert g._index_sync().current(g.generation) is not None


def test_backup_copies_a_live_gallery_consistently(tmp_path):
    """While another connection holds an open write transaction, the backup has exactly the
    committed people (including those still in the WAL), passes integrity_check, is owner-only,
    and never overwrites a file."""
    import sqlite3

    from convgen.errors import PathError
    from convgen.gallery.store import Gallery

    with Gallery.create(tmp_path / "g.db", fingerprint="f", encoder={}, dim=8) as g:
        for i, v in enumerate(_unit(5, 8)):
            g.enrol(f"p{i}", v)
        writer = sqlite3.connect(tmp_path / "g.db", isolation_level=None)
        writer.execute("BEGIN IMMEDIATE")
        writer.execute("INSERT INTO people (name, created) VALUES ('uncommitted', 0)")
        g.backup(tmp_path / "copy.db")
        writer.execute("ROLLBACK")
        writer.close()
        with pytest.raises(PathError, match="already exists"):
            g.backup(tmp_path / "copy.db")
    assert stat.S_IMODE((tmp_path / "copy.db").stat().st_mode) == 0o600
    with Gallery.open(tmp_path / "copy.db") as copy:
        assert [p.name for p in copy.people()] == [f"p{i}" for i in range(5)]
        assert copy.db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert np.allclose(copy.embeddings_of("p3"), _unit(5, 8)[3])


def test_big_endian_npy_reads_as_its_values(tmp_path):
    from convgen.io import load_npy

    values = np.arange(12, dtype=np.float32).reshape(1, 12)
    np.save(tmp_path / "be.npy", values.astype(">f4"))
    read = load_npy(tmp_path / "be.npy")
    assert read.dtype == np.float32 and read.dtype.isnative and np.array_equal(read, values)


def test_an_encoder_too_big_for_the_machine_is_refused_before_allocating(monkeypatch):
    monkeypatch.setattr(weights, "_physical_memory", lambda: 1 << 20)  # a 1 MiB machine
    spec = {"name": "resnet", "channels": [64, 64], "strides": [1, 2]}
    with pytest.raises(ConfigError, match="more than this machine can train"):
        weights.build_encoder(spec, spatial_dims=1, in_channels=1)


@pytest.mark.parametrize("text", ["[" * 100_000 + "]" * 100_000, '{"a": ' * 70 + "1" + "}" * 70])
def test_json_from_files_is_bounded_in_nesting(text):
    from convgen.io import loads_json

    with pytest.raises(DataError, match="nested"):
        loads_json(text, "header")
    assert loads_json('{"a": ' * 60 + "1" + "}" * 60, "header")  # real headers nest 3 deep
