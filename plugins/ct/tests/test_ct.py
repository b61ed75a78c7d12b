"""The CT plugin through convgen's public surface: volumes, windows, datasets, recipes, memory."""

import json

import nibabel as nib
import numpy as np
import pytest
import torch
from convgen_ct import preprocess
from convgen_ct.datasets import CtVolumes, MedMNIST3D, sample_path
from convgen_ct.volumes import affine_of, load_volume, spacing_of
from monai.data import MetaTensor
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from convgen import io
from convgen.errors import ConfigError, DataError
from convgen.metric.evaluation import knn_accuracy
from convgen.metric.sampling import stratified_split
from convgen.testing import invoke, one_line_error

ANATOMY = sample_path("anatomical.nii")  # nibabel's T1 MR volume, 33×41×25 at 2 mm
EPI = sample_path("someones_epi.nii.gz")
# A small, quick style transfer: three style layers (a 4th would see too few positions in 24³).
QUICK = ["encoder.filters=4", "encoder.dilations=[1,2,4]"]  # the default encoder, narrower


def write_series(folder, slices=4, uid=None, spacing=(0.7, 0.8), thickness=2.5, rows=6, columns=5):
    """A synthetic CT series: one file per slice, values stored as HU + 1024 with RescaleIntercept -1024."""
    folder.mkdir(parents=True, exist_ok=True)
    uid = uid or generate_uid()
    for i in range(slices):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = CTImageStorage, generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID, ds.SeriesInstanceUID, ds.StudyInstanceUID = CTImageStorage, meta.MediaStorageSOPInstanceUID, uid, "1.2.3"
        ds.Modality, ds.InstanceNumber = "CT", i + 1
        ds.ImagePositionPatient, ds.ImageOrientationPatient = [10.0, 20.0, 30.0 + i * thickness], [1, 0, 0, 0, 1, 0]
        ds.PixelSpacing, ds.SliceThickness, ds.Rows, ds.Columns = list(spacing), thickness, rows, columns
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.RescaleSlope, ds.RescaleIntercept = 1, -1024
        ds.PixelData = (np.arange(rows * columns).reshape(rows, columns) * 10 + i * 100).astype(np.uint16).tobytes()
        ds.save_as(folder / f"slice{i:03d}.dcm", enforce_file_format=True)
    return folder


# --------------------------------------------------------------------------- readers and writers


def test_nifti_round_trip_keeps_the_affine(tmp_path):
    affine = np.array([[0.0, -1.5, 0.0, 90.0], [2.0, 0.0, 0.0, -120.0], [0.0, 0.0, 3.0, -40.0], [0, 0, 0, 1]])
    data = np.random.default_rng(0).normal(size=(7, 6, 5)).astype(np.float32)
    nib.save(nib.Nifti1Image(data, affine), tmp_path / "in.nii")
    volume = io.read(tmp_path / "in.nii")  # the registered reader
    assert isinstance(volume, MetaTensor) and volume.shape == (1, 7, 6, 5)
    np.testing.assert_allclose(affine_of(volume), affine)
    assert spacing_of(volume) == pytest.approx((2.0, 1.5, 3.0))
    io.write(tmp_path / "out.nii.gz", volume * 2)  # the registered writer, compressed
    back = nib.load(tmp_path / "out.nii.gz")
    np.testing.assert_allclose(back.affine, affine)
    np.testing.assert_allclose(back.get_fdata(), data * 2, rtol=1e-6)


def test_the_bundled_mr_volume_reads_with_its_geometry():
    volume = load_volume(ANATOMY)
    assert volume.shape == (1, 33, 41, 25) and spacing_of(volume) == pytest.approx((2.0, 2.0, 2.0))
    np.testing.assert_allclose(affine_of(volume), nib.load(ANATOMY).affine)


def test_a_dicom_series_is_read_in_hu_with_its_spacing(tmp_path):
    volume = load_volume(write_series(tmp_path / "series"))
    assert volume.shape == (1, 5, 6, 4)  # columns, rows, slices
    assert spacing_of(volume) == pytest.approx((0.8, 0.7, 2.5))
    assert float(volume[0, 0, 0, 0]) == -1024 and float(volume[0, 0, 0, 3]) == -1024 + 300  # RescaleIntercept applied
    assert float(volume[0, 1, 0, 0]) == -1024 + 10  # axis 0 runs along a row (the columns)


def test_numpy_volumes_take_a_spacing_and_a_key(tmp_path):
    np.save(tmp_path / "v.npy", np.zeros((4, 5, 6), np.int16))
    volume = load_volume(tmp_path / "v.npy", spacing=[1.0, 2.0, 3.0])
    assert volume.shape == (1, 4, 5, 6) and spacing_of(volume) == (1.0, 2.0, 3.0)
    np.savez(tmp_path / "two.npz", a=np.ones((3, 3, 3)), b=np.ones((4, 4, 4)))
    assert load_volume(tmp_path / "two.npz", key="b").shape == (1, 4, 4, 4)
    with pytest.raises(DataError, match="several arrays"):
        load_volume(tmp_path / "two.npz")


# --------------------------------------------------------------------------- preprocessing


@pytest.mark.parametrize(
    "window, hu, expected",
    [
        ("soft-tissue", [-1000, -160, 40, 140, 240, 1000], [0, 0, 0.5, 0.75, 1, 1]),  # L 40, W 400
        ("lung", [-1350, -600, -225, 150, 500], [0, 0.5, 0.75, 1, 1]),  # L -600, W 1500
        ("bone", [-1000, -500, 400, 850, 1300, 3000], [0, 0, 0.5, 0.75, 1, 1]),  # L 400, W 1800
        ("brain", [0, 40, 60, 80, 500], [0, 0.5, 0.75, 1, 1]),  # L 40, W 80
        ([100, 200], [0, 50, 100, 200], [0, 0.25, 0.5, 1]),  # custom [level, width]
    ],
)
def test_hounsfield_windows_map_known_values(window, hu, expected):
    volume = torch.tensor(hu, dtype=torch.float32).reshape(1, 1, 1, -1)
    np.testing.assert_allclose(preprocess.apply_window(volume, window).flatten(), expected, atol=1e-6)
    stored = volume + 1024  # values kept as HU + 1024
    np.testing.assert_allclose(preprocess.apply_window(stored, window, hu_offset=-1024).flatten(), expected, atol=1e-6)


def test_bad_windows_are_config_errors():
    with pytest.raises(ConfigError, match="unknown window 'liver'"):
        preprocess.window_range("liver")
    with pytest.raises(ConfigError, match="positive width"):
        preprocess.window_range([40, 0])


def test_resampling_reaches_the_target_spacing_and_keeps_the_origin():
    volume = load_volume(ANATOMY)
    out = preprocess.resample(volume, [4.0, 4.0, 5.0])
    assert spacing_of(out) == pytest.approx((4.0, 4.0, 5.0))
    for n_in, n_out, step in zip(volume.shape[1:], out.shape[1:], (4.0, 4.0, 5.0)):
        assert abs((n_out - 1) * step - (n_in - 1) * 2.0) < step  # the same extent in mm, to within a voxel
    np.testing.assert_allclose(affine_of(out)[:3, 3], affine_of(volume)[:3, 3])


def test_crops_patches_and_augmentation_keep_the_geometry():
    volume = load_volume(ANATOMY)
    box = preprocess.region(volume, 16, center=[10, 20, 12])
    assert box.shape == (1, 16, 16, 16)
    start = np.array([2, 12, 4])
    np.testing.assert_allclose(affine_of(box)[:3, 3], affine_of(volume)[:3, :3] @ start + affine_of(volume)[:3, 3])
    np.testing.assert_array_equal(box[0], volume[0, 2:18, 12:28, 4:20])
    patches = preprocess.random_patches(volume, 8, 5, seed=1)
    assert len(patches) == 5 and all(p.shape == (1, 8, 8, 8) for p in patches)
    assert preprocess.crop_or_pad(volume, 40).shape == (1, 40, 40, 40)
    augmented = preprocess.augmentation(seed=0)(preprocess.apply_window(volume, "percentiles"))
    assert augmented.shape == volume.shape and not torch.equal(augmented, volume)


# --------------------------------------------------------------------------- bad input through the CLI


def test_bad_volumes_are_one_line_errors_and_nothing_is_written(tmp_path):
    flat = tmp_path / "slice.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((32, 32), np.float32), np.eye(4)), flat)
    np.save(tmp_path / "photo.npy", np.ones((32, 32), np.float32))
    holes = np.ones((12, 12, 12), np.float32)
    holes[3, 4, 5] = np.nan
    nib.save(nib.Nifti1Image(holes, np.eye(4)), tmp_path / "holes.nii")
    mixed = write_series(tmp_path / "mixed", slices=3, uid="1.2.826.0.1.1")
    write_series(tmp_path / "other", slices=2, uid="1.2.826.0.1.2")
    for file in (tmp_path / "other").iterdir():
        file.rename(mixed / f"b_{file.name}")
    cases = [
        (flat, "is a 2D image"),
        (tmp_path / "photo.npy", "is a 2D image"),
        (tmp_path / "holes.nii", "holds 1 NaN or infinite voxels"),
        (mixed, "mixes 2 DICOM series: 1.2.826.0.1.1 (3 files"),
        (mixed / "slice000.dcm", "one DICOM slice"),
    ]
    for i, (path, message) in enumerate(cases):
        out = tmp_path / f"run{i}"
        one_line_error(invoke("run", "ct-stylize", f"content={path}", f"style={EPI}", "-o", out), message)
        assert not (out / "stylized.nii.gz").exists()
    one_line_error(invoke("run", "ct-stylize", f"content={ANATOMY}", f"style={ANATOMY}", "window=liver", "-o", tmp_path / "w"),
                   "unknown window 'liver'")  # fmt: skip


# --------------------------------------------------------------------------- 3D style transfer and memory


def test_stylize_a_region_lowers_the_style_distance_and_writes_nifti_in_place(tmp_path):
    center = [16, 20, 12]
    result = invoke("run", "ct-stylize", f"content={ANATOMY}", f"style={EPI}", "region.size=24", f"region.center={center}",
                    "style_region.size=32", "iterations=30", *QUICK, "-o", tmp_path)  # fmt: skip
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["style_reduction"] >= 0.9 and summary["mode"] == "one pass"
    assert summary["peak_rss_mib"] < 4096 and summary["estimated_memory_mib"]["total"] < 4096
    written = nib.load(tmp_path / "stylized.nii.gz")
    assert written.shape == (24, 24, 24)
    original = nib.load(ANATOMY).affine
    start = np.array(center) - 12
    expected = original.copy()
    expected[:3, 3] = original[:3, :3] @ start + original[:3, 3]  # the crop moves the origin, nothing else
    np.testing.assert_allclose(written.affine, expected)
    assert 0 <= written.get_fdata().min() and written.get_fdata().max() <= 1
    assert (tmp_path / "preview.png").stat().st_size > 5000


def test_the_memory_guard_refuses_with_the_estimate_and_the_fix(tmp_path):
    result = invoke("run", "ct-stylize", f"content={ANATOMY}", f"style={EPI}", "memory_budget_gb=0.05", "-o", tmp_path)
    one_line_error(result, "needs about", "GiB of activations", "over memory_budget_gb=0.05", "tile=")
    assert not (tmp_path / "stylized.nii.gz").exists()


def test_patchwise_styles_a_volume_the_one_pass_budget_refuses(tmp_path):
    common = [f"content={ANATOMY}", f"style={EPI}", "region=null", "style_region.size=32", "iterations=5", *QUICK]
    one_pass = invoke("run", "ct-stylize", *common, "memory_budget_gb=0.015", "-o", tmp_path / "one")
    one_line_error(one_pass, "over memory_budget_gb=0.015", "tile=")
    result = invoke("run", "ct-stylize", *common, "memory_budget_gb=0.015", "tile=auto", "overlap=4", "-o", tmp_path / "tiled")
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "tiled" / "summary.json").read_text())
    assert summary["mode"] == "patch-wise" and summary["tile"] < 33
    assert summary["estimated_memory_mib"]["total"] <= 0.015 * 1024
    assert len(json.loads((tmp_path / "tiled" / "tiles.json").read_text())) > 1
    assert summary["style_reduction"] > 0.5
    written = nib.load(tmp_path / "tiled" / "stylized.nii.gz")
    assert written.shape == (33, 41, 25)  # the whole volume, in its own space
    np.testing.assert_allclose(written.affine, nib.load(ANATOMY).affine)


# --------------------------------------------------------------------------- datasets, training, evaluation, galleries


def test_medmnist_splits_and_reduced_sizes():
    train = MedMNIST3D()
    assert len(train) == 80 and train.classes == ["class0", "class1"] and sorted(set(train.labels)) == [0, 1]
    x, _ = train[0]
    assert x.shape == (1, 28, 28, 28) and x.dtype == torch.float32 and 0 <= float(x.min()) and float(x.max()) == 1.0
    assert len(MedMNIST3D(split="train+val")) == 96 and len(MedMNIST3D(split="test", max_per_class=5)) == 10
    with pytest.raises(ConfigError, match="split must be"):
        MedMNIST3D(split="dev")


def test_volume_views_make_identities_of_regions():
    data = CtVolumes(patch_size=12, regions=3, views=2, jitter=2)
    assert len(data.classes) == 6 and len(data) == 12 and data[0][0].shape == (1, 12, 12, 12)
    assert data.classes[0] == "anatomical.nii#0" and data.labels[:4] == [0, 0, 1, 1]


def test_a_stratified_split_keeps_both_classes_on_both_sides():
    labels = [0] * 10 + [1] * 30
    train, val = stratified_split(labels, 0.2, seed=0)
    assert sorted(train + val) == list(range(40)) and not set(train) & set(val)
    assert sorted({labels[i] for i in val}) == [0, 1] and len(val) == 8
    assert stratified_split(labels, 0.2, seed=0) == (train, val)


def test_knn_accuracy_matches_a_brute_force_vote():
    rng = np.random.default_rng(0)
    train, train_y = rng.normal(size=(60, 4)), rng.integers(0, 3, 60)
    test, test_y = rng.normal(size=(20, 4)), rng.integers(0, 3, 20)
    for k in (1, 2, 5):
        hits = 0
        for x, y in zip(test, test_y):
            near = train_y[np.argsort(((train - x) ** 2).sum(1), kind="stable")[:k]]
            counts = {label: int((near == label).sum()) for label in near}
            hits += next(label for label in near if counts[label] == max(counts.values())) == y  # ties: nearest first
        assert knn_accuracy(train, train_y, test, test_y, k) == hits / len(test)


def test_train_then_evaluate_with_knn_end_to_end(tmp_path):
    small = ["encoder.channels=[8,8,16,16]", "encoder.embedding_dim=16"]
    result = invoke("run", "ct-train", "epochs=1", "dataset.max_per_class=16", *small, "-o", tmp_path / "train")
    assert result.exit_code == 0, result.output
    split = json.loads((tmp_path / "train" / "split.json").read_text())
    assert split["by"] == "sample" and split["train"] == split["val"] == ["class0", "class1"]
    weights = tmp_path / "train" / "encoder.safetensors"
    result = invoke("run", "ct-evaluate", f"weights={weights}", "dataset.max_per_class=10", "knn.k=[1,3]", "-o", tmp_path / "eval")
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "eval" / "report.json").read_text())
    assert report["samples"] == 20 and 0 <= report["verification"]["auc"] <= 1
    knn = report["knn"]
    assert knn["reference"] == "train" and knn["reference_samples"] == 20 and knn["majority_rate"] == 0.5
    assert set(knn["accuracy"]) == set(knn["auc"]) == {"1", "3"} and all(0 <= v <= 1 for v in knn["accuracy"].values())
    summary = json.loads((tmp_path / "eval" / "summary.json").read_text())
    assert summary["knn_accuracy_k3"] == knn["accuracy"]["3"]


def test_enrol_and_identify_whole_volumes(tmp_path):
    from convgen.weights import build_encoder, encoder_spec, save_encoder

    torch.manual_seed(0)
    spec = encoder_spec({"name": "resnet", "channels": [8, 16], "strides": [1, 2], "embedding_dim": 16}, spatial_dims=3, in_channels=1)
    save_encoder(tmp_path / "enc.safetensors", build_encoder(spec), spec)
    db, options = tmp_path / "people.db", ["pipeline.name=ct", "pipeline.window=percentiles", "pipeline.size=16"]
    result = invoke("run", "ct-enrol", f"gallery={db}", f"weights={tmp_path / 'enc.safetensors'}", "name=anatomy", f"volumes=[{ANATOMY}]",
                    *options, "-o", tmp_path / "r1")  # fmt: skip
    assert result.exit_code == 0, result.output
    result = invoke("run", "ct-identify", f"gallery={db}", f"volumes=[{ANATOMY}]", "threshold=0.01", *options, "-o", tmp_path / "r2")
    answers = json.loads((tmp_path / "r2" / "summary.json").read_text())["results"]
    assert answers[0]["name"] == "anatomy" and answers[0]["distance"] < 1e-6


def test_visualize_top_sub_volumes(tmp_path):
    result = invoke("run", "ct-visualize", "encoder.channels=[8,8,16,16]", "dataset.max_per_class=3", "top_k=3", "units=2",
                    "-o", tmp_path)  # fmt: skip
    assert result.exit_code == 0, result.output
    assert list(tmp_path.glob("*.png"))
