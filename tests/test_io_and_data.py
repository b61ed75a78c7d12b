import numpy as np
import pytest
import torch

from convgen import io, registry
from convgen.data import FolderOfClasses, SyntheticClusters
from convgen.errors import DataError


def test_npy_round_trip_and_atomic_write(tmp_path):
    sample = torch.randn(2, 5, 6)
    path = io.write(tmp_path / "a.npy", sample)
    assert torch.equal(io.read(path), sample)
    assert [p.name for p in tmp_path.iterdir()] == ["a.npy"]


def test_failed_atomic_write_keeps_the_old_file(tmp_path):
    target = tmp_path / "keep.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with io.atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("interrupted")
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["keep.txt"]


def test_bad_files_are_data_errors(tmp_path):
    with pytest.raises(DataError, match=r"no plugin can read 'x.foo' \(file type '.foo'\); known file types: .*\.npy"):
        io.read(tmp_path / "x.foo")
    with pytest.raises(DataError, match="file not found"):
        io.read(tmp_path / "missing.npy")
    with pytest.raises(DataError, match="is a directory"):
        io.read(tmp_path)
    (tmp_path / "junk.npy").write_bytes(b"not numpy")
    with pytest.raises(DataError, match="not a readable .npy array"):
        io.read(tmp_path / "junk.npy")
    np.save(tmp_path / "objects.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(DataError, match="not a readable .npy array"):
        io.read(tmp_path / "objects.npy")  # pickled objects are refused, never unpickled
    np.save(tmp_path / "nan.npy", np.array([[1.0, np.nan]]))
    with pytest.raises(DataError, match="NaN or infinite"):
        io.read(tmp_path / "nan.npy")
    np.save(tmp_path / "flat.npy", np.zeros(5))
    with pytest.raises(DataError, match=r"channel-first \(C, \*spatial\).*got shape \(5,\)"):
        io.read(tmp_path / "flat.npy")


@pytest.mark.parametrize("dims", [1, 2, 3])
def test_synthetic_clusters_are_seeded_and_shaped(dims):
    a = SyntheticClusters(spatial_dims=dims, size=8, identities=3, samples_per_identity=4, channels=2, seed=1)
    b = SyntheticClusters(spatial_dims=dims, size=8, identities=3, samples_per_identity=4, channels=2, seed=1)
    assert len(a) == 12 and a.classes == ["id000", "id001", "id002"] and a.labels == [0] * 4 + [1] * 4 + [2] * 4
    assert a[0][0].shape == (2,) + (8,) * dims
    assert torch.equal(a.samples, b.samples)
    other = SyntheticClusters(spatial_dims=dims, size=8, identities=3, samples_per_identity=4, channels=2, seed=1,
                              identity_offset=100)  # fmt: skip
    assert other.classes == ["id100", "id101", "id102"] and not torch.equal(other.samples, a.samples)
    with pytest.raises(DataError, match="motif_size"):
        SyntheticClusters(spatial_dims=dims, size=4, motif_size=5)


def test_folder_of_classes_reads_through_the_reader_hook(tmp_path):
    for person, count in (("ann", 2), ("bob", 1)):
        (tmp_path / person).mkdir()
        for i in range(count):
            np.save(tmp_path / person / f"{i}.npy", np.full((1, 4, 6), float(i), dtype=np.float32))
    (tmp_path / "empty").mkdir()
    (tmp_path / "ann" / "notes.md").write_text("ignored: no reader for it")
    data = FolderOfClasses(tmp_path)
    assert data.classes == ["ann", "bob"] and data.labels == [0, 0, 1]
    x, y = data[1]
    assert x.shape == (1, 4, 6) and y == 0
    resized = registry.build("dataset", {"name": "folder", "root": str(tmp_path), "spatial_size": 8})
    assert resized[0][0].shape == (1, 8, 8)


def test_empty_or_missing_folders_are_errors(tmp_path):
    with pytest.raises(DataError, match="dataset folder not found"):
        FolderOfClasses(tmp_path / "nope")
    (tmp_path / "ann").mkdir()
    with pytest.raises(DataError, match="no readable samples under"):
        FolderOfClasses(tmp_path)
