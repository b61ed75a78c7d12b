"""Photos in and out through Pillow: JPEG, PNG, PGM/PPM, BMP, TIFF, GIF.

A photo becomes a float tensor ``(C, H, W)`` in [0, 1]: one channel for grey images,
three for colour (palette, CMYK and alpha are converted to RGB). EXIF orientation is
applied, so a portrait taken with a rotated phone is upright. An animated GIF gives its
first frame. Pillow's decompression-bomb limit stays on: a file claiming more pixels
than ``PIL.Image.MAX_IMAGE_PIXELS`` is refused with a one-line `DataError`.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch

from convgen.plugin_api import DataError, atomic_path

SUFFIXES = [".jpg", ".jpeg", ".png", ".pgm", ".ppm", ".pnm", ".bmp", ".tif", ".tiff", ".gif"]
GREY_MODES = {"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F"}


def load_image(path):
    """The image at ``path``, upright, as a Pillow image in mode ``L`` (grey) or ``RGB``."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with warnings.catch_warnings():  # over 2x MAX_IMAGE_PIXELS is refused below; between, only a warning line
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(path)
        with image:
            image.seek(0)  # an animated GIF: its first frame
            image = ImageOps.exif_transpose(image)
            if image.mode in ("I", "I;16", "I;16B", "I;16L", "F"):  # 16-bit or float grey
                array = np.asarray(image, dtype=np.float64)
                top = 65535.0 if image.mode.startswith("I;16") or array.max() > 255 else 255.0
                return Image.fromarray(np.clip(array / top * 255, 0, 255).astype(np.uint8), "L")
            return image.convert("L" if image.mode in GREY_MODES else "RGB")
    except Image.DecompressionBombError as exc:
        raise DataError(
            f"{path} is refused: {str(exc).splitlines()[0][:160]}; shrink the image, "
            "or raise PIL.Image.MAX_IMAGE_PIXELS if you trust the file"
        ) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as exc:
        raise DataError(f"{path} is not a readable image ({str(exc).splitlines()[0][:120]}); re-save it as PNG or JPEG") from None


def to_tensor(image) -> torch.Tensor:
    """A Pillow ``L``/``RGB`` image as ``(C, H, W)`` floats in [0, 1]."""
    array = np.asarray(image, dtype=np.float32) / 255.0
    return torch.from_numpy(array[None] if array.ndim == 2 else np.ascontiguousarray(array.transpose(2, 0, 1)))


def read_image(path) -> torch.Tensor:
    return to_tensor(load_image(path))


def write_png(path, sample: torch.Tensor) -> None:
    """``(1 or 3, H, W)`` values in [0, 1] (clipped) as an 8-bit grey or RGB PNG, written atomically."""
    from PIL import Image

    if sample.ndim != 3 or sample.shape[0] not in (1, 3):
        raise DataError(f"a PNG holds a (1 or 3, H, W) image, got shape {tuple(sample.shape)}")
    array = (sample.detach().cpu().clamp(0, 1).numpy() * 255).round().astype(np.uint8)
    image = Image.fromarray(array[0], "L") if array.shape[0] == 1 else Image.fromarray(array.transpose(1, 2, 0), "RGB")
    with atomic_path(Path(path)) as tmp:
        image.save(tmp, format="PNG")
