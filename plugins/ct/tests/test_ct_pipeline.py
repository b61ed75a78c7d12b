"""The ``ct`` input pipeline: recorded with the weights, the same through every gallery door."""

import numpy as np
import torch

from convgen.testing import gallery_doors
from convgen.weights import build_encoder, encoder_spec, save_encoder

PIPELINE = {"name": "ct", "window": "percentiles", "size": 16}


def _volumes(root, people: dict, seed: int):
    """Smooth random volumes in HU: one shape per person, a little noise per scan."""
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)
    for name, scans in people.items():
        (root / name).mkdir(parents=True)
        shape = gaussian_filter(rng.normal(size=(20, 20, 20)), 3) * 4000
        for k in range(scans):
            np.save(root / name / f"scan{k}.npy", (shape + rng.normal(scale=20, size=shape.shape)).astype(np.float32))
    return root


def test_same_embeddings_and_answers_through_every_door(tmp_path):
    torch.manual_seed(0)
    spec = encoder_spec({"name": "resnet", "channels": [8, 16], "strides": [1, 2], "embedding_dim": 16}, spatial_dims=3, in_channels=1)
    weights = tmp_path / "enc.safetensors"
    save_encoder(weights, build_encoder(spec), spec, pipeline=PIPELINE)
    people = _volumes(tmp_path / "people", {"a": 2, "b": 2, "c": 1}, seed=0)
    calibration = _volumes(tmp_path / "calibration", {"d": 2, "e": 2}, seed=1)
    queries = [people / "a" / "scan1.npy", calibration / "d" / "scan0.npy"]
    doors = gallery_doors(tmp_path, "ct", "volume", weights, people, queries, calibration)
    assert doors["delta"] <= 1e-6 and doors["pipelines"][0] == doors["pipelines"][1]
    assert doors["pipelines"][0]["size"] == 16 and doors["pipelines"][0]["window"] == "percentiles"
    assert [r["name"] for r in doors["recipe"]] == [r["name"] for r in doors["cli"]]
    assert np.allclose([r["distance"] for r in doors["recipe"]], [r["distance"] for r in doors["cli"]], atol=1e-6)
    assert abs(doors["thresholds"][0] - doors["thresholds"][1]) <= 1e-6
    assert doors["cli"][0]["candidates"][0]["name"] == "a", "a scan's nearest person is its own"


def test_the_volumes_dataset_records_a_pipeline_that_reads_its_volumes():
    from convgen_ct.datasets import CtVolumes, sample_path

    from convgen.pipelines import build_pipeline, of_dataset

    data = CtVolumes(files=[str(sample_path("anatomical.nii"))], regions=2, views=2, patch_size=16)
    spec = of_dataset(data)
    assert spec["name"] == "ct" and spec["patch_size"] == 16 and spec["window"] == "percentiles"
    inputs = build_pipeline(spec)(sample_path("anatomical.nii"))
    assert inputs.shape == (8, 1, 16, 16, 16) and tuple(inputs.shape[1:]) == tuple(data[0][0].shape)
    assert 0 <= float(inputs.min()) and float(inputs.max()) <= 1


def test_dicom_series_folders_are_volumes_for_every_gallery_command(tmp_path):
    """The bug: a DICOM series (a folder, as docs/ct.md gives a volume) could be enrolled only by name=: folder=
    found "no people", and ct-identify / convgen gallery identify said "no readable samples under" it."""
    import json

    from test_ct import write_series

    from convgen.testing import invoke

    torch.manual_seed(0)
    spec = encoder_spec({"name": "resnet", "channels": [4, 8], "strides": [1, 2], "embedding_dim": 8}, spatial_dims=3, in_channels=1)
    weights = tmp_path / "w.safetensors"
    save_encoder(weights, build_encoder(spec), spec, pipeline=PIPELINE)
    for person, columns in (("p1", 16), ("p2", 12)):
        write_series(tmp_path / "people" / person / "scan", rows=16, columns=columns, slices=6)
    for stranger, rows in (("s1", 14), ("s2", 10)):
        write_series(tmp_path / "strangers" / stranger / "a", rows=rows, columns=16, slices=6)
        write_series(tmp_path / "strangers" / stranger / "b", rows=rows + 1, columns=16, slices=6)
    db, series = tmp_path / "g.db", tmp_path / "people" / "p1" / "scan"
    result = invoke("run", "ct-enrol", f"gallery={db}", f"weights={weights}", f"folder={tmp_path / 'people'}", "-o", tmp_path / "e")
    assert result.exit_code == 0, result.output
    found = json.loads(invoke("gallery", "identify", db, series, "-t", "1", "--json").stdout)["results"]
    assert [(r["file"], r["name"]) for r in found] == [(str(series), "p1")] and found[0]["distance"] < 1e-6
    result = invoke("run", "ct-identify", f"gallery={db}", f"volumes=[{tmp_path / 'people'}]", "threshold=1", "-o", tmp_path / "i")
    assert result.exit_code == 0, result.output
    assert len(json.loads((tmp_path / "i" / "summary.json").read_text())["results"]) == 2
    result = invoke("gallery", "calibrate", db, tmp_path / "strangers", "--far", "0.5")
    assert result.exit_code == 0, result.output
