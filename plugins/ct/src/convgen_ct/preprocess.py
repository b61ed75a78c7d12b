"""Preparing volumes with MONAI transforms: Hounsfield windows, spacing, crops, patches, augmentation.

A CT value is a Hounsfield unit (air -1000, water 0, soft tissue 20 to 80, bone 400 and
up). A *window* (level L, width W) maps ``[L - W/2, L + W/2]`` linearly onto ``[0, 1]``
and clips outside, which is how a radiologist looks at one kind of tissue; it also puts
every input of an encoder on the same scale. MR volumes have no absolute unit: use the
``percentiles`` window (0.5th to 99.5th percentile onto [0, 1]). Geometric transforms
act on MONAI ``MetaTensor``s, so their affine follows every crop and resampling.
"""

from __future__ import annotations

import warnings
from typing import Sequence

import torch
from monai.data import MetaTensor

from convgen.plugin_api import ConfigError, DataError

WINDOWS = {
    "soft-tissue": (40.0, 400.0),
    "lung": (-600.0, 1500.0),
    "bone": (400.0, 1800.0),
    "brain": (40.0, 80.0),
}
"""Window presets, ``name: (level, width)`` in Hounsfield units (the usual radiology settings)."""

OTHER_WINDOWS = ("percentiles", "none")


def window_range(window) -> tuple[float, float]:
    """``(low, high)`` HU of a preset name, a ``[level, width]`` pair or a ``{level, width}`` mapping."""
    if isinstance(window, str):
        if window not in WINDOWS:
            raise ConfigError(f"unknown window {window!r}; presets: {', '.join([*WINDOWS, *OTHER_WINDOWS])}, or [level, width] in HU")
        level, width = WINDOWS[window]
    elif isinstance(window, dict) and set(window) == {"level", "width"}:
        level, width = window["level"], window["width"]
    elif isinstance(window, (list, tuple)) and len(window) == 2:
        level, width = window
    else:
        raise ConfigError(f"window must be a preset ({', '.join([*WINDOWS, *OTHER_WINDOWS])}) or [level, width] in HU, got {window!r}")
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (level, width)) or width <= 0:
        raise ConfigError(f"a window needs a numeric level and a positive width (HU), got level={level!r}, width={width!r}")
    return float(level) - float(width) / 2, float(level) + float(width) / 2


def apply_window(volume: torch.Tensor, window="soft-tissue", hu_offset: float = 0.0) -> torch.Tensor:
    """Intensities mapped onto [0, 1] by ``window``; stored value + ``hu_offset`` = HU.

    ``hu_offset`` serves arrays stored shifted (e.g. ``-1024`` for HU + 1024 in unsigned
    integers); DICOM series and most NIfTI CT are already in HU (offset 0).
    """
    from monai.transforms import ScaleIntensityRange, ScaleIntensityRangePercentiles

    if window in (None, "none"):
        return volume
    if window == "percentiles":
        with warnings.catch_warnings():  # a constant volume: MONAI warns, the caller's one-line error follows
            warnings.simplefilter("ignore")
            return ScaleIntensityRangePercentiles(lower=0.5, upper=99.5, b_min=0.0, b_max=1.0, clip=True)(volume)
    low, high = window_range(window)
    return ScaleIntensityRange(a_min=low - hu_offset, a_max=high - hu_offset, b_min=0.0, b_max=1.0, clip=True)(volume)


def per_axis(value, what: str, kind=float) -> list:
    """One positive number per spatial axis, from one number or three."""
    values = [value] * 3 if isinstance(value, (int, float)) and not isinstance(value, bool) else list(value)
    if len(values) != 3 or any(isinstance(v, bool) or not isinstance(v, (int, float)) or v <= 0 for v in values):
        raise ConfigError(f"{what} must be a positive number or three of them, got {value!r}")
    if kind is int and any(int(v) != v for v in values):
        raise ConfigError(f"{what} must be whole voxel counts, got {value!r}")
    return [kind(v) for v in values]


def resample(volume: MetaTensor, spacing, mode: str = "bilinear") -> MetaTensor:
    """``volume`` resampled to ``spacing`` mm per voxel (MONAI ``Spacing``; the affine is updated)."""
    from monai.transforms import Spacing

    if spacing is None:
        return volume
    return Spacing(pixdim=per_axis(spacing, "spacing"), mode=mode, padding_mode="border")(volume)


def crop_or_pad(volume: MetaTensor, size) -> MetaTensor:
    """Centre-crop or pad (with the minimum value) to ``size`` voxels (MONAI ``ResizeWithPadOrCrop``)."""
    from monai.transforms import ResizeWithPadOrCrop

    if size is None:
        return volume
    return ResizeWithPadOrCrop(per_axis(size, "size", int), mode="minimum")(volume)


def region(volume: MetaTensor, size, center=None) -> MetaTensor:
    """A box of ``size`` voxels (clipped to the volume) around ``center`` (default: the middle); the affine follows."""
    from monai.transforms import SpatialCrop

    if size is None:
        return volume
    shape = list(volume.shape[1:])
    size = [min(s, n) for s, n in zip(per_axis(size, "region.size", int), shape)]
    center = [n // 2 for n in shape] if center is None else list(center)
    if len(center) != 3 or any(not isinstance(c, int) or not 0 <= c < n for c, n in zip(center, shape)):
        raise ConfigError(f"region.center must be three voxel indices inside the volume {tuple(shape)}, got {center!r}")
    start = [min(max(c - s // 2, 0), n - s) for c, s, n in zip(center, size, shape)]
    return SpatialCrop(roi_start=start, roi_end=[a + s for a, s in zip(start, size)])(volume)


def random_patches(volume: MetaTensor, size, count: int, seed: int = 0) -> list[MetaTensor]:
    """``count`` random boxes of ``size`` voxels (MONAI ``RandSpatialCropSamples``), padded first if the volume is smaller."""
    from monai.transforms import RandSpatialCropSamples, SpatialPad

    size = per_axis(size, "patch_size", int)
    if not isinstance(count, int) or count < 1:
        raise ConfigError(f"the number of patches must be a positive integer, got {count!r}")
    volume = SpatialPad(size, mode="minimum")(volume)
    sampler = RandSpatialCropSamples(roi_size=size, num_samples=count, random_size=False)
    sampler.set_random_state(seed)
    return list(sampler(volume))


def augmentation(flip: float = 0.5, rotate: float = 15.0, scale: float = 0.1, noise: float = 0.02, contrast: float = 0.0, seed: int = 0):
    """Random, anatomy-preserving changes of a ``(1, X, Y, Z)`` volume, from MONAI.

    Flips along each axis (probability ``flip``), one affine resampling (rotation up to
    ``rotate`` degrees about every axis, zoom up to ``scale``), Gaussian noise of std
    ``noise`` (in windowed units) and a gamma contrast change up to ``contrast``.
    """
    import math

    from monai.transforms import (
        Compose,
        RandAdjustContrast,
        RandAffine,
        RandFlip,
        RandGaussianNoise,
    )

    for name, value, top in (("flip", flip, 1), ("rotate", rotate, 180), ("scale", scale, 0.9), ("noise", noise, 1), ("contrast", contrast, 0.9)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= top:
            raise ConfigError(f"augment.{name} must be a number between 0 and {top}, got {value!r}")
    steps = [RandFlip(prob=flip, spatial_axis=axis) for axis in range(3)] if flip else []
    if rotate or scale:
        angle = math.radians(rotate)
        steps.append(RandAffine(prob=1.0, rotate_range=(angle,) * 3, scale_range=(scale,) * 3, padding_mode="border"))
    if noise:
        steps.append(RandGaussianNoise(prob=1.0, std=noise))
    if contrast:
        steps.append(RandAdjustContrast(prob=1.0, gamma=(1 - contrast, 1 + contrast)))
    pipeline = Compose(steps)
    pipeline.set_random_state(seed)
    return pipeline


def prepare(volume: MetaTensor, window="soft-tissue", hu_offset: float = 0.0, spacing=None) -> MetaTensor:
    """Resample (when ``spacing`` is set), then window to [0, 1]: what every CT recipe does first."""
    volume = resample(volume, spacing)
    out = apply_window(volume, window, hu_offset)
    if window not in (None, "none") and float(out.max()) <= float(out.min()):
        low, high = (float(volume.min()), float(volume.max()))
        raise DataError(f"the {window} window leaves the volume constant (its values span {low:g} to {high:g}); "
                        "choose another window, or hu_offset if the values are not in HU")  # fmt: skip
    return out


def plain(volume: torch.Tensor) -> torch.Tensor:
    """A float tensor without MONAI metadata (batches of MetaTensors collate their metadata too)."""
    volume = volume.as_tensor() if isinstance(volume, MetaTensor) else torch.as_tensor(volume)
    return volume.float()


def stack(volumes: Sequence[torch.Tensor]) -> torch.Tensor:
    """Plain tensors ``(n, 1, X, Y, Z)`` from volumes of one shape, the input of an encoder."""
    return torch.stack([plain(v) for v in volumes])
