"""The faces plugin through convgen's public surface: readers, detection, datasets, recipes."""

import json
import shutil

import numpy as np
import pytest
import torch
from convgen_faces.datasets import sample_dir
from convgen_faces.preprocess import FacePipeline, detect_faces, widen
from PIL import Image

from convgen import io
from convgen.errors import DataError
from convgen.testing import invoke, one_line_error, tiny_encoder_weights
from convgen.weights import build_encoder, encoder_spec, save_encoder

PHOTOS = sample_dir("photos")
PORTRAIT = PHOTOS / "astronaut.png"


@pytest.mark.parametrize("suffix", [".png", ".jpg", ".bmp", ".tif", ".pgm", ".ppm"])
@pytest.mark.parametrize("mode", ["L", "RGB"])
def test_the_reader_handles_each_format(tmp_path, suffix, mode):
    if (suffix, mode) in {(".pgm", "RGB"), (".ppm", "L")}:
        pytest.skip("PGM is grey, PPM colour")
    yy, xx = np.mgrid[0:20, 0:30]
    planes = [xx * 8, yy * 12, 255 - xx * 4 - yy * 3]  # smooth, so that lossy JPEG stays close
    pixels = np.stack(planes, -1).astype(np.uint8) if mode == "RGB" else planes[0].astype(np.uint8)
    Image.fromarray(pixels, mode).save(tmp_path / f"x{suffix}")
    sample = io.read(tmp_path / f"x{suffix}")
    channels = 3 if mode == "RGB" else 1
    assert sample.shape == (channels, 20, 30) and sample.dtype == torch.float32
    expected = torch.from_numpy(pixels.reshape(20, 30, channels).transpose(2, 0, 1) / 255.0).float()
    tolerance = 0.02 if suffix == ".jpg" else 1e-6  # JPEG is lossy
    assert (sample - expected).abs().mean() < tolerance and sample.min() >= 0 and sample.max() <= 1


def test_exif_orientation_and_16_bit_grey(tmp_path):
    image = Image.new("RGB", (40, 20), (255, 0, 0))
    exif = image.getexif()
    exif[0x0112] = 6  # the camera was turned: rotate 90° to view
    image.save(tmp_path / "turned.jpg", exif=exif)
    assert io.read(tmp_path / "turned.jpg").shape == (3, 40, 20)
    deep = np.full((8, 8), 65535, dtype=np.uint16)
    deep[0, 0] = 0
    Image.fromarray(deep).save(tmp_path / "deep.png")
    sample = io.read(tmp_path / "deep.png")
    assert sample.shape == (1, 8, 8) and sample.max() == 1.0 and sample[0, 0, 0] == 0.0


def test_corrupt_and_truncated_photos_are_clear_errors(tmp_path):
    (tmp_path / "junk.jpg").write_bytes(b"this is not a jpeg")
    with pytest.raises(DataError, match="junk.jpg is not a readable image"):
        io.read(tmp_path / "junk.jpg")
    shutil.copy(PORTRAIT, tmp_path / "cut.png")
    data = (tmp_path / "cut.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="cut.png is not a readable image"):
        io.read(tmp_path / "cut.png")


def test_png_writer_round_trips_and_refuses_other_shapes(tmp_path):
    rgb = torch.rand(3, 16, 12)
    io.write(tmp_path / "out.png", rgb)
    back = io.read(tmp_path / "out.png")
    assert back.shape == (3, 16, 12) and (back - rgb).abs().max() <= 0.5 / 255 + 1e-6
    with pytest.raises(DataError, match=r"\(1 or 3, H, W\)"):
        io.write(tmp_path / "bad.png", torch.rand(2, 8, 8))
    assert not (tmp_path / "bad.png").exists()


def test_the_detector_finds_the_face_in_a_bundled_photo():
    grey = np.asarray(Image.open(PORTRAIT).convert("L"))
    boxes = detect_faces(grey)
    assert boxes, "no face found in the portrait"
    x, y, w, h = boxes[0]
    # the astronaut's face: centred at about (112, 56) of 256 × 256, about 50 pixels wide
    assert abs(x + w / 2 - 112) < 15 and abs(y + h / 2 - 56) < 15 and 35 < w < 80
    face = FacePipeline.of(size=[40, 32], channels=3)(PORTRAIT)
    assert face.shape == (3, 40, 32)
    with pytest.raises(DataError, match="no face found in .*brick.png"):
        FacePipeline.of()(PHOTOS / "brick.png")


def test_widen_keeps_the_centre_and_reaches_the_aspect():
    x, y, w, h = widen((10, 20, 40, 40), margin=0.25, aspect=1.25)
    assert abs(x + w / 2 - 30) <= 0.5 and abs(y + h / 2 - 40) <= 0.5 and (w, h) == (60, 75)


def test_the_bundled_sample_and_people_filter():
    from convgen import registry

    everyone = registry.build("dataset", {"name": "faces", "detect": False, "size": [28, 23]})
    assert len(everyone.classes) == 40 and len(everyone) == 240
    assert everyone.classes[:3] == ["s1", "s2", "s3"]  # natural order
    some = registry.build("dataset", {"name": "faces", "detect": False, "people": ["s2", "s7"], "size": 16})
    assert some.classes == ["s2", "s7"] and some[0][0].shape == (1, 16, 16)
    with pytest.raises(DataError, match="no folder for nobody"):
        registry.build("dataset", {"name": "faces", "people": ["nobody"]})


def lfw_like(tmp_path):
    """An LFW-layout folder (name/name_000i.png) from the bundled sample, with a pairs file."""
    for person in ("s1", "s2", "s3"):
        (tmp_path / person).mkdir(parents=True)
        for i in range(1, 4):
            shutil.copy(sample_dir("orl") / person / f"{i}.png", tmp_path / person / f"{person}_{i:04d}.png")
    (tmp_path / "pairs.txt").write_text("1\t3\ns1 1 2\ns2 1 3\ns3 2 3\ns1 1 s2 2\ns2 3 s3 1\ns1 3 s3 3\n")
    return tmp_path


def test_lfw_pairs_are_read_and_scored_by_evaluate(tmp_path):
    from convgen import registry

    root = lfw_like(tmp_path / "lfw")
    data = registry.build("dataset", {"name": "lfw-pairs", "root": str(root), "size": 24})
    assert len(data.pairs) == 6 and [same for *_, same in data.pairs] == [1, 1, 1, 0, 0, 0]
    first, second, _ = data.pairs[3]
    assert (data.files[first].name, data.files[second].name) == ("s1_0001.png", "s2_0002.png")
    (root / "bad.txt").write_text("s1 1\n")
    with pytest.raises(DataError, match="bad.txt:1: expected"):
        registry.build("dataset", {"name": "lfw-pairs", "root": str(root), "pairs": "bad.txt"})

    weights = tmp_path / "enc.safetensors"
    spec = encoder_spec({"name": "resnet", "channels": [4, 8], "strides": [1, 2], "embedding_dim": 8}, spatial_dims=2, in_channels=1)
    save_encoder(weights, build_encoder(spec), spec)
    out = tmp_path / "eval"
    result = invoke("run", "faces-evaluate", "dataset.name=lfw-pairs", f"dataset.root={root}", "dataset.size=24",
                    f"weights={weights}", "folds=2", "-o", out)  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert report["verification"]["same_pairs"] == 3 and report["verification"]["different_pairs"] == 3


@pytest.fixture
def face_weights(tmp_path):
    return tiny_encoder_weights(tmp_path / "face.safetensors", spatial_dims=2)


def test_enrol_verify_identify_from_photos(tmp_path, face_weights):
    db = tmp_path / "people.db"
    other = tmp_path / "other.png"
    Image.open(PORTRAIT).transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(other)
    result = invoke("run", "faces-enrol", f"gallery={db}", f"weights={face_weights}", "name=eileen", f"photos=[{PORTRAIT}]", "-o", tmp_path / "r1")
    assert result.exit_code == 0, result.output
    result = invoke("run", "faces-verify", f"gallery={db}", "name=eileen", f"photo={PORTRAIT}", "threshold=0.01", "-o", tmp_path / "r2")
    assert result.exit_code == 0 and json.loads((tmp_path / "r2" / "summary.json").read_text())["match"] is True
    result = invoke("run", "faces-identify", f"gallery={db}", f"photos=[{PORTRAIT},{other}]", "threshold=0.01", "-o", tmp_path / "r3")
    assert result.exit_code == 0, result.output
    answers = json.loads((tmp_path / "r3" / "summary.json").read_text())["results"]
    assert answers[0]["name"] == "eileen" and answers[0]["distance"] < 1e-6
    one_line_error(invoke("run", "faces-identify", f"gallery={db}", f"photos=[{PHOTOS / 'brick.png'}]", "threshold=0.5", "-o", tmp_path / "r4"),
                   "no face found in")  # fmt: skip
    one_line_error(invoke("run", "faces-identify", f"gallery={tmp_path / 'none.db'}", f"photos=[{PORTRAIT}]", "-o", tmp_path / "r5"),
                   "gallery not found")  # fmt: skip


@pytest.mark.slow
def test_the_demo_runs_end_to_end_at_a_reduced_size(tmp_path):
    out = tmp_path / "demo"
    result = invoke("run", "faces-demo", "epochs=2", "dataset.size=[28,23]", "encoder.channels=[8,16,16,32]",
                    "held_out={enrolled: 6, calibration: 5, impostors: 4}", "-o", out)  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert report["people"] == {"enrolled": 6, "calibration": 5, "impostors": 4, "train": 25}
    assert report["searches"] == {"enrolled_people": 30, "never_enrolled": 24}
    for key in ("accuracy", "rank_1_accuracy", "identified", "impostors_rejected", "eer"):
        assert 0 <= report[key] <= 1, key
    for name in ("roc.png", "distances.png", "report.md", "people.db", "train/encoder.safetensors"):
        assert (out / name).stat().st_size > 0, name
    rows = [line for line in (out / "report.md").read_text().splitlines() if line.startswith("| s")]
    assert len(rows) == 54  # one row per search


def test_stylize_a_photo_writes_a_png(tmp_path):
    out = tmp_path / "style"
    result = invoke("run", "faces-stylize", "size=[32,32]", "style_size=[32,32]", "iterations=2", "encoder.filters=4", "-o", out)
    assert result.exit_code == 0, result.output
    assert Image.open(out / "stylized.png").size == (32, 32) and Image.open(out / "stylized.png").mode == "RGB"


def test_the_plugin_is_loaded_through_its_entry_point():
    result = invoke("plugins", "--json")
    faces = next(item for item in json.loads(result.stdout) if item["name"] == "faces")
    assert faces["distribution"] == "convgen-faces"
    assert "faces-demo" in faces["components"]["recipe"] and ".jpg" in faces["components"]["reader"]
