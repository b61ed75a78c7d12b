"""The ``audio`` input pipeline: recorded with the weights, the same through every gallery door."""

import json
import shutil

import numpy as np
import torch
from convgen_audio.datasets import sample_dir
from convgen_audio.features import Representation

from convgen.gallery.store import Gallery
from convgen.testing import gallery_doors, invoke
from convgen.weights import build_encoder, encoder_spec, load_encoder, save_encoder

FSDD = sample_dir("fsdd")
AT_16K = {"name": "audio", "sample_rate": 16000, "n_fft": 512, "hop": 160}


def _weights(path, pipeline):
    torch.manual_seed(0)
    spec = encoder_spec({"name": "resnet", "channels": [8, 16], "strides": [1, 2], "embedding_dim": 16}, spatial_dims=1, in_channels=40)
    save_encoder(path, build_encoder(spec), spec, pipeline=pipeline)
    return path


def _people(root, speakers, takes):
    for speaker in speakers:
        (root / speaker).mkdir(parents=True)
        for take in takes:
            shutil.copy(_file(speaker, take), root / speaker)
    return root


def _file(speaker, take):
    return next(FSDD.glob(f"*_{speaker}_{take}.flac"))


def test_a_16_khz_encoder_is_fed_16_khz_without_repeating_the_rate(tmp_path):
    """The bug: an encoder trained at 16 kHz was silently evaluated at the recipe's 8 kHz."""
    weights = _weights(tmp_path / "enc.safetensors", AT_16K)
    result = invoke("run", "audio-evaluate", f"weights={weights}", "batch_size=16", "-o", tmp_path / "eval")
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "eval" / "report.json").read_text())
    changed = " ".join(report["inputs"]["dataset_changes"])
    assert "dataset.representation" in changed and "16000" in changed
    assert "dataset.representation.sample_rate: 8000 -> 16000 (the encoder was trained so)" in report["inputs"]["dataset_changes"]
    config = (tmp_path / "eval" / "config.yaml").read_text()
    assert "pipeline: null" in config, "no override was asked for"

    # An explicit override is allowed, and the run says so.
    result = invoke("run", "audio-evaluate", f"weights={weights}", "batch_size=16", "pipeline.name=audio", "pipeline.sample_rate=8000",
                    "pipeline.n_fft=256", "pipeline.hop=80", "-o", tmp_path / "eval8k")  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "eval8k" / "report.json").read_text())
    assert report["inputs"]["pipeline_overrides"]["sample_rate"] == 8000


def test_same_embeddings_and_answers_through_every_door(tmp_path):
    weights = _weights(tmp_path / "enc.safetensors", AT_16K)
    people = _people(tmp_path / "people", ["george", "jackson", "lucas"], [5, 6])
    calibration = _people(tmp_path / "calibration", ["nicolas", "theo"], [5, 6])
    queries = [_file("george", 12), _file("lucas", 12), _file("yweweler", 12)]
    doors = gallery_doors(tmp_path, "audio", "recording", weights, people, queries, calibration)
    assert doors["delta"] <= 1e-6 and doors["pipelines"][0] == doors["pipelines"][1]
    assert doors["pipelines"][0]["sample_rate"] == 16000
    assert [r["name"] for r in doors["recipe"]] == [r["name"] for r in doors["cli"]]
    assert np.allclose([r["distance"] for r in doors["recipe"]], [r["distance"] for r in doors["cli"]], atol=1e-6)
    assert abs(doors["thresholds"][0] - doors["thresholds"][1]) <= 1e-6

    # The enrolled template is the normalised mean over the 16 kHz windows of each file.
    encoder = load_encoder(weights)[0].eval()
    representation = Representation.of({k: v for k, v in AT_16K.items() if k != "name"})
    with torch.no_grad():
        rows = [torch.nn.functional.normalize(torch.nn.functional.normalize(encoder(representation.windows(f)), dim=1).mean(0), dim=0)
                for f in sorted((people / "george").iterdir())]  # fmt: skip
    with Gallery.open(tmp_path / "cli.db") as gallery:
        assert np.abs(gallery.embeddings_of("george") - torch.stack(rows).numpy()).max() <= 1e-5
