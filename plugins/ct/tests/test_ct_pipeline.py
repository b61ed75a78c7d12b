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
