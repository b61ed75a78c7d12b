"""convgen-zstack as a user gets it: installed, found through its entry point, and used by
the core's file I/O, datasets and recipes. Every stack is made in the test."""

import json

import numpy as np
import pytest
import tifffile
import torch
from typer.testing import CliRunner

from convgen import io, registry
from convgen.errors import DataError

QUICK = ["iterations=2", "size=[8,16,16]", "style_size=[8,16,16]", "device=cpu"]


def convgen(*args):
    """The convgen CLI, run in this process: click's Result (exit_code, stdout, stderr)."""
    from convgen.cli import app

    return CliRunner().invoke(app, [str(a) for a in args])


# --8<-- [start:helper]
def save(path, data, axes):
    """A stack as microscopy software saves it: an OME-TIFF with named axes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    colour = "rgb" if axes.endswith("S") else "minisblack"
    tifffile.imwrite(path, data, ome=True, metadata={"axes": axes}, photometric=colour)
    return path
# --8<-- [end:helper]


def blobs(seed, shape=(6, 16, 16)):
    """A smooth random stack in [0, 1]: three Gaussian blobs."""
    rng = np.random.default_rng(seed)
    grid = np.meshgrid(*[np.linspace(0, 1, n) for n in shape], indexing="ij")
    stack = sum(np.exp(-sum((g - c) ** 2 for g, c in zip(grid, rng.random(3))) / 0.02)
                for _ in range(3))  # fmt: skip
    return (stack / stack.max()).astype(np.float32)


# --8<-- [start:entry-point]
def test_the_entry_point_registers_readers_writers_and_recipes():
    plugins = json.loads(convgen("plugins", "--json").stdout)
    zstack = next(item for item in plugins if item["name"] == "zstack")
    assert zstack["distribution"] == "convgen-zstack"
    components = zstack["components"]
    assert components["reader"] == components["writer"] == [".ome.tif", ".ome.tiff"]
    assert components["recipe"] == ["zstack-describe", "zstack-stylize"]
    readers = registry.get_registry("reader")  # plain TIFFs are not ours
    assert ".tif" not in readers or readers.entry(".tif").plugin != "zstack"
# --8<-- [end:entry-point]


# --8<-- [start:round-trip]
@pytest.mark.parametrize("suffix", [".ome.tif", ".ome.tiff"])
def test_a_stack_written_and_read_back_is_unchanged(tmp_path, suffix):
    stack = torch.rand(2, 5, 8, 9)
    io.write(tmp_path / f"stack{suffix}", stack)  # the suffix picks the writer
    again = io.read(tmp_path / f"stack{suffix}")
    assert again.dtype == torch.float32 and torch.equal(again, stack)
# --8<-- [end:round-trip]


@pytest.mark.parametrize(
    ("axes", "shape", "expected"),
    [("ZYX", (5, 8, 9), lambda d: d[None]), ("CZYX", (2, 5, 8, 9), lambda d: d),
     ("ZCYX", (5, 2, 8, 9), lambda d: d.transpose(1, 0, 2, 3)),
     ("TCZYX", (1, 2, 5, 8, 9), lambda d: d[0]),
     ("TZCYX", (1, 5, 3, 8, 9), lambda d: d[0].transpose(1, 0, 2, 3))],
)  # fmt: skip
def test_any_named_axis_order_becomes_channel_first(tmp_path, axes, shape, expected):
    data = np.random.default_rng(0).random(shape, dtype=np.float32)
    stack = io.read(save(tmp_path / "s.ome.tif", data, axes))
    assert np.array_equal(stack.numpy(), expected(data))


def test_integer_stacks_are_scaled_to_unit_range_and_rgb_samples_are_channels(tmp_path):
    values = np.array([0, 1000, 30000, 65535], dtype=np.uint16)
    grey = np.broadcast_to(values, (4, 2, 4))  # Z, Y, X
    stack = io.read(save(tmp_path / "grey.ome.tif", grey, "ZYX"))
    assert stack.shape == (1, 4, 2, 4)
    assert torch.allclose(stack[0, 0, 0], torch.from_numpy(values / 65535).float())

    rgb = np.zeros((3, 4, 5, 3), dtype=np.uint8)
    rgb[..., 1] = 255  # green
    stack = io.read(save(tmp_path / "rgb.ome.tif", rgb, "ZYXS"))
    assert stack.shape == (3, 3, 4, 5)
    assert stack[1].eq(1).all() and stack[0].eq(0).all() and stack[2].eq(0).all()


# --8<-- [start:errors]
def test_what_is_not_one_z_stack_is_a_data_error(tmp_path):
    cases = {
        "TZYX": (np.zeros((3, 4, 8, 8), np.float32), r"holds 3 time points \(T\)"),
        "YX": (np.zeros((8, 8), np.float32), "is a single plane"),
        "CYX": (np.zeros((2, 8, 8), np.float32), "is a single plane"),
    }
    for axes, (data, message) in cases.items():
        with pytest.raises(DataError, match=message):
            io.read(save(tmp_path / f"{axes}.ome.tif", data, axes))

    plain = tmp_path / "plain.ome.tif"  # a multi-page TIFF that names no axes
    tifffile.imwrite(plain, np.zeros((4, 8, 8), np.float32), ome=False,
                     photometric="minisblack")  # fmt: skip
    with pytest.raises(DataError, match="planes along an unnamed axis"):
        io.read(plain)
    (tmp_path / "broken.ome.tif").write_bytes(b"not a tiff at all")
    with pytest.raises(DataError, match="is not a readable OME-TIFF"):
        io.read(tmp_path / "broken.ome.tif")
    with pytest.raises(DataError, match=r"a z-stack is \(C, Z, Y, X\)"):
        io.write(tmp_path / "flat.ome.tif", torch.zeros(1, 8, 8))
    assert not (tmp_path / "flat.ome.tif").exists()
# --8<-- [end:errors]


# --8<-- [start:describe]
def test_describe_a_folder_of_stacks(tmp_path):
    stacks = tmp_path / "stacks"
    for cell, seeds in {"cell-a": [0, 1], "cell-b": [2]}.items():
        for seed in seeds:
            save(stacks / cell / f"{seed}.ome.tif", blobs(seed), "ZYX")
    root = f"dataset.root={stacks}"
    result = convgen("run", "zstack-describe", root, "-o", tmp_path / "a")
    assert result.exit_code == 0, result.stderr
    summary = json.loads((tmp_path / "a" / "summary.json").read_text())
    assert summary["per_identity"] == {"cell-a": 2, "cell-b": 1}
    assert summary["shape"] == [1, 6, 16, 16]

    (stacks / "cell-b" / "9.ome.tif").write_bytes(b"garbage")
    result = convgen("run", "zstack-describe", root, "-o", tmp_path / "b")
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == 5 and len(lines) == 1
    assert lines[0].startswith("error: ") and "9.ome.tif" in lines[0]
# --8<-- [end:describe]


# --8<-- [start:stylize]
def test_stylize_one_stack_with_another(tmp_path):
    content = save(tmp_path / "content.ome.tif", blobs(0, (10, 24, 24)), "ZYX")
    stripes = (np.indices((10, 24, 24)).sum(0) % 4 < 2).astype(np.uint8) * 255
    style = save(tmp_path / "style.ome.tif", stripes, "ZYX")
    result = convgen("run", "zstack-stylize", f"content={content}", f"style={style}",
                     *QUICK, "-o", tmp_path / "out")  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert io.read(tmp_path / "out" / "stylized.ome.tif").shape == (1, 8, 16, 16)
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["final"]["style"] < summary["start"]["style"]
# --8<-- [end:stylize]


def test_the_core_recipes_take_stacks_through_the_folder_dataset(tmp_path):
    for person in range(3):
        for seed in range(2):
            path = tmp_path / "stacks" / f"id{person}" / f"{seed}.ome.tif"
            save(path, blobs(10 * person + seed), "ZYX")
    dataset = ["dataset.name=folder", f"dataset.root={tmp_path / 'stacks'}"]
    encoder = ["encoder.channels=[4,8]", "encoder.strides=[1,2]", "encoder.embedding_dim=8"]
    result = convgen("run", "embed", *dataset, *encoder, "device=cpu", "-o", tmp_path / "embed")
    assert result.exit_code == 0, result.stderr
    summary = json.loads((tmp_path / "embed" / "summary.json").read_text())
    assert summary["samples"] == 6 and summary["identities"] == 3
    assert summary["embedding_dim"] == 8
