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
