"""Generated bad input through the command-line entry point (docs/reliability.md, "Generated input").

Hypothesis drives random recipe overrides and random or damaged file bytes through
``convgen`` (in-process, typer's CliRunner) and checks the promise for every example: the
command succeeds, or it exits non-zero with one ``error: ...`` line on stderr and no
traceback, and a refused command leaves its folder as it was (no new or changed file). The
example counts are small so that the file runs in well under a minute; the CI profile
replays the same examples on every run, ``HYPOTHESIS_PROFILE=explore`` searches new ones.
"""

from __future__ import annotations

import io
import json
import math
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from convgen.testing import invoke, tiny_encoder_weights

ROOT = Path(__file__).resolve().parent.parent
def examples(n: int) -> settings:
    """``n`` examples (times ``CONVGEN_FUZZ_SCALE``, for a longer search while developing)."""
    n *= int(os.environ.get("CONVGEN_FUZZ_SCALE", "1"))
    return settings(max_examples=n, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
TRIED: dict[str, list[int]] = {}  # test -> [examples, refused]; printed with -s, quoted in the docs

# Values as a user would type them after `key=`: YAML scalars, lists, mappings, and the
# classes issue 17 found (null, nan, negative, huge, nested, words where numbers belong).
NUMBERS = st.one_of(
    st.integers(-5, 5), st.sampled_from([2**31, 10**12, 65537, 16385, -(10**9)]),
    st.floats(allow_nan=True, allow_infinity=True, width=32),
)  # fmt: skip
WORDS = st.sampled_from([
    "null", "~", "true", "[]", "{}", "''", ".nan", "-.inf", ".inf", "[a, b]", "[1, -2]", "[0]", "[[1, 2]]", "{a: 1}",
    "[1.5, 2]", "abc", "cuda", "cuda:7", "cpu", "auto", "'x: y'", "[" * 40 + "]" * 40, "{a: " * 30 + "1" + "}" * 30,
    "!!python/object/apply:os.system ['true']", "&a [*a]", "'", "[1, 2", "-", "1e400", "0x10", "1_000", "1e-3",
    "1" + "0" * 400, "-" + "9" * 30,
])  # fmt: skip
VALUES = st.one_of(NUMBERS.map(lambda v: "nan" if isinstance(v, float) and math.isnan(v) else str(v)), WORDS, st.text(max_size=6))
SENSIBLE = st.sampled_from(["1", "2", "3", "8", "16", "[4, 8]", "[2, 2]", "[8]", "[1, 2]", "avg", "max", "vgg", "resnet", "0.5"])


def _keys(defaults: dict, prefix: str = "") -> list[str]:
    keys = []
    for key, value in defaults.items():
        path = f"{prefix}{key}"
        keys.append(path)
        if isinstance(value, dict):
            keys += _keys(value, path + ".")
    return keys


def _snapshot(folder: Path) -> dict[str, bytes | None]:
    return {str(p.relative_to(folder)): (None if p.is_dir() else p.read_bytes()) for p in sorted(folder.rglob("*"))}


def _refused_cleanly(result, name: str) -> bool:
    """True when refused (one ``error:`` line, no traceback); False when it succeeded; else fail."""
    crashed = result.exception is not None and not isinstance(result.exception, SystemExit)
    assert not crashed, f"traceback: {result.exception!r}"
    assert "Traceback" not in result.output
    entry = TRIED.setdefault(name, [0, 0])
    entry[0] += 1
    if result.exit_code == 0:
        return False
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert result.exit_code in (1, 3, 4, 5, 6), (result.exit_code, lines[0])
    entry[1] += 1
    return True


@pytest.fixture(scope="module", autouse=True)
def report():
    yield
    for name, (tried, refused) in TRIED.items():
        print(f"\n{name}: {tried} examples, {refused} refused in one line, {tried - refused} accepted, 0 tracebacks")


@examples(80)
@given(data=st.data())
def test_random_overrides_resolve_or_are_one_line(data, tmp_path, monkeypatch):
    """Any overrides, for any installed recipe (core and plugins): a resolved config, or one line; never a file."""
    from convgen.registry import get_registry

    monkeypatch.chdir(tmp_path)
    recipe = data.draw(st.sampled_from(sorted(get_registry("recipe"))), label="recipe")
    keys = _keys(get_registry("recipe").get(recipe).defaults) + ["encoder.channels", "encoder.embedding_dim", "nope", "a.b.c"]
    overrides = data.draw(st.lists(st.tuples(st.sampled_from(keys), VALUES), min_size=1, max_size=3), label="overrides")
    before = _snapshot(tmp_path)
    result = invoke("run", recipe, *(f"{k}={v}" for k, v in overrides), "--print-config")
    if not _refused_cleanly(result, "overrides (--print-config)"):
        assert isinstance(yaml.safe_load(result.stdout), dict)
    assert _snapshot(tmp_path) == before


@examples(12)
@given(overrides=st.lists(st.tuples(st.sampled_from(
    ["encoder.channels", "encoder.embedding_dim", "encoder.convs", "encoder.kernel_size", "encoder.pool", "encoder.head_grid",
     "input_size", "in_channels", "encoder.name", "spatial_dims"]), st.one_of(VALUES, SENSIBLE, SENSIBLE)),
    min_size=1, max_size=3))  # fmt: skip
@example(overrides=[("encoder.channels", "[2, 2]"), ("encoder.pool", "avg")])  # one that runs, on every CI run
@example(overrides=[("encoder.embedding_dim", "16"), ("input_size", "48")])
def test_random_overrides_run_or_leave_nothing(overrides, tmp_path_factory):
    """The inspect recipe run for real: it succeeds, or refuses in one line and leaves no output folder."""
    root = tmp_path_factory.mktemp("run")
    out = root / "out"
    base = ["spatial_dims=1", "input_size=32", "encoder.channels=[4, 8]", "encoder.convs=[1, 1]", "encoder.embedding_dim=8"]
    result = invoke("run", "inspect", *base, *(f"{k}={v}" for k, v in overrides), "-o", out)
    if _refused_cleanly(result, "overrides (inspect, run)"):
        assert not out.exists(), "a refused run leaves no output folder"
    else:
        assert (out / "config.yaml").is_file()


# -- random and damaged file bytes --------------------------------------------------------


class Seeds(tuple):
    """``(folder, {name: bytes})``, shown by name only in a failure report."""

    def __new__(cls, root, files):
        return super().__new__(cls, (root, files))

    def __repr__(self) -> str:
        return f"Seeds({self[0].name}: {', '.join(self[1])})"


@pytest.fixture(scope="module")
def seeds(tmp_path_factory):
    """A gallery and one valid file of each kind the fuzzer damages."""
    import soundfile as sf
    from PIL import Image

    from convgen.gallery import api
    from convgen.gallery.store import Gallery

    root = tmp_path_factory.mktemp("fuzz-seeds")
    weights = tiny_encoder_weights(root / "enc.safetensors", spatial_dims=1)
    np.save(root / "sample.npy", np.random.default_rng(0).normal(size=(1, 32)).astype(np.float32))
    encoder = api.Encoder(weights)
    with Gallery.create(root / "people.db", fingerprint=encoder.fingerprint, encoder=encoder.spec, dim=16, weights=encoder.weights) as g:
        g.enrol("ann", encoder.embed_files([root / "sample.npy"]))
        api.export(g, root / "export.safetensors")
    png = io.BytesIO()
    Image.fromarray((np.random.default_rng(1).random((12, 10)) * 255).astype(np.uint8)).save(png, "PNG")
    import nibabel as nib

    nib.save(nib.Nifti1Image(np.random.default_rng(2).random((6, 5, 4)).astype(np.float32), np.eye(4)), root / "volume.nii")
    wav = io.BytesIO()
    sf.write(wav, np.sin(np.arange(800) / 5).astype(np.float32) * 0.3, 8000, format="WAV", subtype="PCM_16")
    files = {
        "sample.npy": (root / "sample.npy").read_bytes(),
        "photo.png": png.getvalue(),
        "take.wav": wav.getvalue(),
        "volume.nii": (root / "volume.nii").read_bytes(),
        "100.hea": (ROOT / "plugins/ecg/src/convgen_ecg/samples/mitdb/100.hea").read_bytes(),
        "enc.safetensors": weights.read_bytes(),
        "export.safetensors": (root / "export.safetensors").read_bytes(),
        "people.db": (root / "people.db").read_bytes(),
        "recipe.yaml": b"recipe: inspect\nspatial_dims: 1\ninput_size: 32\nencoder: {name: vgg, channels: [4], convs: [1]}\n",
    }
    return Seeds(root, files)


def _command(name: str, file: Path, here: Path, seeds: Path) -> list:
    """The command that reads ``file`` the way a user would hand it over."""
    if name == "enc.safetensors":
        return ["gallery", "create", here / "new.db", "-w", file]
    if name == "export.safetensors":
        return ["gallery", "import", here / "people.db", file]
    if name == "people.db":
        return ["gallery", "identify", file, seeds / "sample.npy", "-t", "1"]
    if name == "recipe.yaml":
        return ["run", file, "--print-config"]
    return ["gallery", "identify", here / "people.db", file, "-t", "1"]


@st.composite
def damaged(draw, names):
    """A seed file's name and its bytes flipped, cut, spliced or replaced by random bytes."""
    name = draw(st.sampled_from(names))
    how = draw(st.sampled_from(["flip", "cut", "splice", "random"]))
    return name, how, draw(st.binary(max_size=64)), draw(st.floats(0, 1)), draw(st.lists(st.integers(0, 255), max_size=8))


@examples(80)
@given(data=st.data())
def test_random_file_bytes_read_or_are_one_line(data, seeds, tmp_path_factory):
    """A damaged sample (array, photo, recording, volume, ECG header), weights file, export, gallery or
    recipe: it works, or one line and nothing changed."""
    root, files = seeds
    name, how, blob, where, flips = data.draw(damaged(sorted(files)), label="damage")
    raw = bytearray(files[name])
    at = int(where * len(raw))
    if how == "flip":
        for i, value in enumerate(flips):
            raw[(at + 97 * i) % len(raw)] = value
    elif how == "cut":
        raw = raw[:at]
    elif how == "splice":
        raw[at : at + len(blob)] = blob
    else:
        raw = bytearray(blob)
    here = tmp_path_factory.mktemp("file")
    shutil.copy(root / "people.db", here / "people.db")
    file = here / name if name != "people.db" else here / "damaged.db"
    file.write_bytes(bytes(raw))
    before = _snapshot(here)
    result = invoke(*_command(name, file, here, root))
    if _refused_cleanly(result, "file bytes"):
        assert _snapshot(here) == before, "a refused command changes nothing"
    elif name == "recipe.yaml":
        assert isinstance(yaml.safe_load(result.stdout), dict)
    elif name not in ("enc.safetensors", "export.safetensors"):
        json.dumps(result.stdout)  # an answer was printed; what it is depends on the damage
