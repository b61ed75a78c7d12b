"""The ``ecg`` input pipeline: recorded with the weights, the same through every gallery door."""

import json
import shutil

import numpy as np
import torch
from convgen_ecg.datasets import EcgRecords, sample_dir
from convgen_ecg.preprocess import EcgPipeline
from convgen_ecg.signals import read_record

from convgen.gallery.store import Gallery
from convgen.testing import gallery_doors, invoke, tiny_encoder_weights
from convgen.weights import build_encoder, encoder_spec, read_pipeline, save_encoder

ECGID = sample_dir("ecgid")


def _people(root, names, records):
    """A folder per person holding the chosen bundled records (header, signal, annotations)."""
    for name in names:
        (root / name).mkdir(parents=True)
        for record in records:
            for part in (ECGID / name).glob(f"{record}.*"):
                shutil.copy(part, root / name / part.name)
    return root


def _weights(path, pipeline=None):
    torch.manual_seed(0)
    spec = encoder_spec({"name": "resnet", "channels": [8, 16], "strides": [1, 2], "embedding_dim": 16}, spatial_dims=1, in_channels=1)
    save_encoder(path, build_encoder(spec), spec, pipeline=pipeline)
    return path


def test_the_dataset_says_which_pipeline_cut_its_beats_and_the_pipeline_cuts_the_same():
    data = EcgRecords(people=["Person_01"], max_records_per_person=1, fs=250.0, before=0.2, after=0.4)
    assert data.pipeline_spec["name"] == "ecg" and data.pipeline_spec["before"] == 0.2
    from convgen.pipelines import build_pipeline

    windows = build_pipeline(data.pipeline_spec)(ECGID / "Person_01" / "rec_1.hea")
    assert torch.equal(windows, data.windows[: len(windows)])


def test_core_calibrate_on_an_ecg_gallery_cuts_beats(tmp_path):
    """The bug: `convgen gallery calibrate` read the raw record, (2, 10000), "does not fit the gallery's encoder"."""
    weights = tiny_encoder_weights(tmp_path / "old.safetensors", spatial_dims=1)  # records no pipeline
    enrolled = _people(tmp_path / "enrolled", ["Person_01", "Person_02"], ["rec_1"])
    strangers = _people(tmp_path / "strangers", ["Person_03", "Person_04"], ["rec_1", "rec_2"])
    db = tmp_path / "people.db"
    assert invoke("run", "ecg-enrol", f"gallery={db}", f"weights={weights}", f"folder={enrolled}", "-o", tmp_path / "e").exit_code == 0
    with Gallery.open(db) as gallery:
        assert gallery.pipeline["name"] == "ecg", "the gallery records the ECG pipeline its recipe used"
    result = invoke("gallery", "calibrate", db, strangers, "--far", "0.25", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["pipeline"]["name"] == "ecg"


def test_same_embeddings_and_answers_through_every_door(tmp_path):
    pipeline = {"name": "ecg", "before": 0.25, "after": 0.45, "max_windows": 12}
    weights = _weights(tmp_path / "enc.safetensors", pipeline)
    assert read_pipeline(weights)["max_windows"] == 12
    people = _people(tmp_path / "people", ["Person_01", "Person_02", "Person_03"], ["rec_1"])
    calibration = _people(tmp_path / "calibration", ["Person_04", "Person_05"], ["rec_1", "rec_2"])
    queries = [ECGID / "Person_01" / "rec_2.hea", ECGID / "Person_02" / "rec_2.hea", ECGID / "Person_06" / "rec_1.hea"]
    doors = gallery_doors(tmp_path, "ecg", "record", weights, people, queries, calibration)
    assert doors["delta"] <= 1e-6
    assert doors["pipelines"][0] == doors["pipelines"][1] and doors["pipelines"][0]["max_windows"] == 12
    assert [r["name"] for r in doors["recipe"]] == [r["name"] for r in doors["cli"]]
    assert np.allclose([r["distance"] for r in doors["recipe"]], [r["distance"] for r in doors["cli"]], atol=1e-6)
    assert abs(doors["thresholds"][0] - doors["thresholds"][1]) <= 1e-6

    # A file's embedding is the normalised mean of its beats' embeddings, beats cut by the recorded pipeline.
    from convgen.weights import load_encoder

    encoder = load_encoder(weights)[0].eval()
    beats = EcgPipeline.of(**{k: v for k, v in pipeline.items() if k != "name"})(read_record(ECGID / "Person_01" / "rec_1.hea")).windows
    with torch.no_grad():
        expected = torch.nn.functional.normalize(torch.nn.functional.normalize(encoder(beats), dim=1).mean(0), dim=0)
    with Gallery.open(tmp_path / "cli.db") as gallery:
        assert np.abs(gallery.embeddings_of("Person_01")[0] - expected.numpy()).max() <= 1e-5
