"""From a photo to the encoder's input: find the face, crop it with a margin, resize.

Detection (``detector``) is dlib's CNN face detector (``mmod``, `convgen_faces.mmod`,
read from the ``face_recognition_models`` package; small photos are up-sampled so that
faces reach its 80-pixel window) or the Haar cascade inside opencv-python-headless
(``haar``, Viola & Jones; needs no model file). The best face wins; its box is widened by
``margin`` on every side and to the output's aspect ratio, and the part outside the photo
is filled by replicating the border. ``detect: false`` skips detection for photos that
are already face crops (ORL, LFW deep-funnelled), which are only resized.

``align: dlib`` instead finds five landmarks in the face box (dlib's 5-point shape
predictor) and cuts dlib's aligned 150 × 150 face chip, the input the ``dlib-resnet``
encoder was trained on.

A photo with no face found stops with an error (``if_no_face: error``) or is used whole
(``whole``); every pipeline counts them (`FacePipeline.input_report`), so commands can say
how many photos fell back and what was done with them.
"""

from __future__ import annotations

import contextlib
import sys
import threading
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from convgen.plugin_api import ConfigError, DataError
from convgen_faces.images import load_image, to_tensor

DETECTORS = ("mmod", "haar")
CASCADE = "haarcascade_frontalface_default.xml"
HAAR_TO_DLIB_SHIFT = 0.1
"""OpenCV's Haar boxes sit about a tenth of their height above dlib's HOG boxes."""


@lru_cache(maxsize=1)
def _cascade():
    import cv2

    cascade = cv2.CascadeClassifier(str(Path(cv2.data.haarcascades) / CASCADE))
    if cascade.empty():
        raise DataError(f"OpenCV's {CASCADE} could not be loaded; reinstall opencv-python-headless")
    return cascade


def detect_faces(grey: np.ndarray, min_size: float = 0.1) -> list[tuple[int, int, int, int]]:
    """Haar face boxes ``(x, y, w, h)`` in a grey uint8 image, largest first.

    ``min_size`` is the smallest face as a fraction of the image's shorter side. When the
    first pass finds nothing, a second, permissive pass (finer scales, one confirming
    neighbour) looks only for faces at least half the photo's size: it rescues tilted or
    dim close-ups and face crops, and textures rarely hold a false face that large.
    """
    import cv2

    equalized, short = cv2.equalizeHist(grey), min(grey.shape)
    for scale, neighbours, smallest in ((1.1, 5, min_size), (1.03, 1, max(min_size, 0.5))):
        side = max(1, int(short * smallest))
        boxes = _cascade().detectMultiScale(equalized, scaleFactor=scale, minNeighbors=neighbours, minSize=(side, side))
        if len(boxes):
            return sorted((tuple(int(v) for v in b) for b in boxes), key=lambda b: -b[2] * b[3])
    return []


def detect_mmod(image: np.ndarray, upsample="auto") -> list[tuple[int, int, int, int]]:
    """dlib CNN (MMOD) face boxes ``(x, y, w, h)`` in a uint8 grey or RGB image, best score first.

    ``upsample: auto`` starts with as many ×2 up-samplings as bring the shorter side to
    160 pixels and, while no face is found, up-samples once more as long as that side stays
    within 512 pixels (at most 3 times): small faces in small photos are found without
    paying for a large pyramid on every photo.
    """
    from convgen_faces.mmod import auto_upsample, load_mmod_detector

    detector = load_mmod_detector()
    if upsample != "auto":
        return [d.xywh for d in detector(image, upsample=int(upsample))]
    short = min(np.asarray(image).shape[:2])
    n = auto_upsample(*np.asarray(image).shape[:2])
    while True:
        found = detector(image, upsample=n)
        if found or n >= 3 or short * 2 ** (n + 1) > 512:
            return [d.xywh for d in found]
        n += 1


_NOTICE_GIVEN = False
_UNCOUNTED = threading.local()  # set while a photo is read again only to be shown (contact sheets)


@contextlib.contextmanager
def not_counted():
    """Photos read inside this block are not counted (a sheet's picture of a photo is not another input)."""
    _UNCOUNTED.on = True
    try:
        yield
    finally:
        _UNCOUNTED.on = False


def _record(pipeline: "FacePipeline", path, found: bool) -> None:
    """Count one photo in the pipeline's tally (a photo read twice counts once)."""
    if getattr(_UNCOUNTED, "on", False):
        return
    pipeline.tally.count(path, found)


def _resolve_mmod(detector: str) -> str:
    """``mmod`` where dlib's detector file is installed; ``auto`` falls back to ``haar`` (said once), ``mmod`` is an error."""
    global _NOTICE_GIVEN
    from convgen_faces.dlib_model import INSTALL_HINT, model_file
    from convgen_faces.mmod import MMOD_FILE

    try:
        model_file(MMOD_FILE)
        return "mmod"
    except ConfigError:
        if detector == "mmod":
            raise ConfigError(f"detector: mmod needs dlib's face detector file; {INSTALL_HINT}, or set detector=haar") from None
    if not _NOTICE_GIVEN:
        _NOTICE_GIVEN = True
        print(f"faces: dlib's face detector is not installed ({INSTALL_HINT}); using OpenCV's Haar cascade", file=sys.stderr)
    return "haar"


class FaceTally:
    """Which photos a pipeline has seen and whether it found a face in each (thread-safe; a photo counts once)."""

    def __init__(self):
        self._lock = threading.Lock()
        self.found: dict[str, bool] = {}

    def count(self, path, found: bool) -> None:
        with self._lock:
            self.found[str(path)] = found

    @property
    def photos(self) -> int:
        return len(self.found)

    @property
    def no_face(self) -> list[str]:
        with self._lock:
            return [path for path, found in self.found.items() if not found]

    def reset(self) -> None:
        with self._lock:
            self.found = {}


def _photos(n: int) -> str:
    return f"{n} photo{'' if n == 1 else 's'}"


def widen(box, margin: float, aspect: float) -> tuple[int, int, int, int]:
    """``box`` grown by ``margin`` of its size on every side, then to ``aspect`` (height / width), same centre."""
    x, y, w, h = box
    w, h = w * (1 + 2 * margin), h * (1 + 2 * margin)
    if h / w < aspect:
        h = w * aspect
    else:
        w = h / aspect
    cx, cy = box[0] + box[2] / 2, box[1] + box[3] / 2
    return round(cx - w / 2), round(cy - h / 2), round(w), round(h)


def crop(image: np.ndarray, box) -> np.ndarray:
    """``image[y:y+h, x:x+w]`` with the part outside the image filled by its border pixels."""
    x, y, w, h = box
    rows = np.clip(np.arange(y, y + h), 0, image.shape[0] - 1)
    cols = np.clip(np.arange(x, x + w), 0, image.shape[1] - 1)
    return image[rows][:, cols]


@dataclass(frozen=True)
class FacePipeline:
    """Photo file to tensor ``(channels, *size)`` in [0, 1].

    Args:
        size: output ``[height, width]`` (an int for a square).
        channels: 1 (grey) or 3 (RGB); colour photos are converted for 1, grey ones
            replicated for 3.
        detect: find the largest face and crop it; False resizes the whole photo.
        margin: the crop's extra border, as a fraction of the detected face's size.
        align: ``none`` (crop the box) or ``dlib`` (landmarks, then dlib's face chip,
            resized to ``size``: use 150 × 150 RGB for ``dlib-resnet``).
        if_no_face: ``error`` (default) or ``whole``: use the whole photo as the face box.
        detector: ``mmod`` (dlib's CNN face detector), ``haar`` (OpenCV's cascade, no
            model file needed) or ``auto`` (default): ``mmod`` where its file is
            installed (``convgen-faces[dlib]``), else ``haar`` with a one-line notice.
    """

    size: tuple[int, int] = (64, 64)
    channels: int = 1
    detect: bool = True
    margin: float = 0.2
    align: str = "none"
    if_no_face: str = "error"
    detector: str = "mmod"
    tally: FaceTally = field(default_factory=FaceTally, compare=False, repr=False, hash=False)

    @classmethod
    def of(cls, size=64, channels: int = 1, detect: bool = True, margin: float = 0.2, align: str = "none",
           if_no_face: str = "error", detector: str = "auto") -> "FacePipeline":  # fmt: skip
        size = (size, size) if isinstance(size, int) else tuple(size)
        if len(size) != 2 or any(not isinstance(s, int) or s < 8 for s in size):
            raise ConfigError(f"size must be an int or [height, width] of at least 8 pixels, got {size!r}")
        if channels not in (1, 3):
            raise ConfigError(f"channels must be 1 (grey) or 3 (RGB), got {channels!r}")
        if not 0 <= margin <= 2:
            raise ConfigError(f"margin must be between 0 and 2 (a fraction of the face's size), got {margin!r}")
        if align not in ("none", "dlib"):
            raise ConfigError(f"align must be 'none' or 'dlib', got {align!r}")
        if if_no_face not in ("error", "whole"):
            raise ConfigError(f"if_no_face must be 'error' or 'whole', got {if_no_face!r}")
        if detector not in (*DETECTORS, "auto"):
            raise ConfigError(f"detector must be one of {', '.join(DETECTORS)} or auto, got {detector!r}")
        if detector != "haar" and detect:
            detector = _resolve_mmod(detector)
        elif detector == "auto":
            detector = "mmod"
        return cls(size, channels, bool(detect), float(margin), align, if_no_face, detector)

    def input_report(self) -> dict:
        """What happened to the photos so far: counts of photos and of photos with no face found.

        For a run's report (``report.json``); ``summary`` is the same as one line.
        """
        photos, missed = self.tally.photos, self.tally.no_face
        report = {"photos": photos, "detect": self.detect, "detector": self.detector if self.detect else None,
                  "no_face": len(missed), "if_no_face": self.if_no_face, "no_face_examples": missed[:5]}  # fmt: skip
        report["summary"] = self._summary(photos, len(missed))
        return report

    def input_summary(self) -> str:
        """One line: e.g. ``12 of 400 photos: no face found (mmod), used the whole photo (if_no_face=whole)``."""
        return self.input_report()["summary"]

    def _summary(self, photos: int, missed: int) -> str:
        if not self.detect:
            return f"{_photos(photos)} used whole, no face detection (detect=false)"
        action = "used the whole photo" if self.if_no_face == "whole" else "stopped with an error"
        if missed == 0:
            return f"{_photos(photos)}: a face found in {'every one' if photos > 1 else 'it'} ({self.detector} detector)"
        return f"{missed} of {_photos(photos)}: no face found ({self.detector} detector), {action} (if_no_face={self.if_no_face})"

    def __call__(self, path) -> torch.Tensor:
        from PIL import Image

        image = load_image(path)
        box = self._box(image, path)
        if self.align == "dlib":
            from convgen_faces.alignment import align_face

            x, y, w, h = box
            if self.detect and self.detector == "haar" and box[2:] != image.size:
                y += round(HAAR_TO_DLIB_SHIFT * h)  # the shape predictor learnt from dlib's lower boxes
            image = Image.fromarray(align_face(np.asarray(image), (x, y, x + w - 1, y + h - 1)))
        elif self.detect and box[2:] != image.size:
            height, width = self.size
            image = Image.fromarray(crop(np.asarray(image), widen(box, self.margin, height / width)))
        image = image.convert("L" if self.channels == 1 else "RGB")
        return to_tensor(image.resize(self.size[::-1], Image.LANCZOS, reducing_gap=3.0))

    def _box(self, image, path) -> tuple[int, int, int, int]:
        """The best face ``(x, y, w, h)``, or the whole photo (no detection, or none found and ``if_no_face: whole``)."""
        whole = (0, 0, *image.size)
        if not self.detect:
            _record(self, path, True)
            return whole
        if self.detector == "mmod":
            boxes = detect_mmod(np.asarray(image))
        else:
            boxes = detect_faces(np.asarray(image.convert("L")))
        _record(self, path, bool(boxes))
        if boxes:
            return boxes[0]
        if self.if_no_face == "whole":
            return whole
        raise DataError(
            f"no face found in {path} ({self.detector} detector); use a photo with a frontal face, "
            "detect=false for photos that are already face crops, or if_no_face=whole to use the whole photo"
        )
