"""Microscopy z-stacks in OME-TIFF files, read and written through tifffile.

OME-TIFF names its axes (``TCZYX``, ``ZCYX``, ``ZYXS`` for RGB, ...), so the reader
can put any order into convgen's channel-first layout (C, Z, Y, X) instead of
guessing. Integer stacks are scaled by their type's range (uint8 by 255, uint16 by
65535), so that 8- and 16-bit stacks land in [0, 1]; float stacks keep their values.
The writer writes float32, so a stack read and written back is unchanged.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from convgen.plugin_api import DataError, atomic_path

AXIS_NAMES = {"T": "time points", "Q": "planes along an unnamed axis",
              "I": "images of a sequence", "R": "tiles"}  # fmt: skip
HOW = "save one z-stack per file, with named axes (tifffile: metadata={'axes': 'ZYX'})"


# --8<-- [start:read]
def read_stack(path) -> torch.Tensor:
    """The first image series of an OME-TIFF file as a float32 tensor (C, Z, Y, X)."""
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            axes, data = series.axes, series.asarray()
    except (tifffile.TiffFileError, OSError, ValueError, KeyError, IndexError) as exc:
        reason = (str(exc).strip() or type(exc).__name__).splitlines()[0]
        raise DataError(f"{path} is not a readable OME-TIFF ({reason})") from None
    return to_czyx(data, axes, str(path))
# --8<-- [end:read]


# --8<-- [start:to_czyx]
def to_czyx(data: np.ndarray, axes: str, source: str) -> torch.Tensor:
    """``data`` with named ``axes`` as (C, Z, Y, X), or a DataError that says why not.

    RGB samples (S) count as channels; other axes of length one are dropped.
    """
    shape = dict(zip(axes, data.shape))
    found = f"axes {axes}, shape {data.shape}"
    keep = [a for a, n in shape.items() if a in "CSZYX" or n > 1]
    data, axes = data.reshape([shape[a] for a in keep]), "".join(keep)
    for axis in axes:
        if axis not in "CSZYX":
            what = f"{shape[axis]} {AXIS_NAMES.get(axis, 'entries')} ({axis})"
            raise DataError(f"{source} ({found}) holds {what}; {HOW}")
    if shape.get("Z", 1) < 2:
        raise DataError(f"{source} ({found}) is a single plane, not a z-stack; {HOW}")
    for missing in "SC":  # a single channel, no RGB samples
        if missing not in axes:
            data, axes = data[None], missing + axes
    data = data.transpose([axes.index(a) for a in "CSZYX"])
    data = data.reshape(-1, *data.shape[2:])  # (C, S, Z, Y, X) -> (C * S, Z, Y, X)
    if np.issubdtype(data.dtype, np.integer):
        data = data.astype(np.float32) / np.iinfo(data.dtype).max
    return torch.from_numpy(np.ascontiguousarray(data, dtype=np.float32))
# --8<-- [end:to_czyx]


# --8<-- [start:write]
def write_stack(path, sample: torch.Tensor) -> None:
    """A (C, Z, Y, X) tensor as a float32 OME-TIFF with named axes, written atomically."""
    import tifffile

    if sample.ndim != 4:
        shape = tuple(sample.shape)
        raise DataError(f"{path}: a z-stack is (C, Z, Y, X), got shape {shape}")
    data = sample.detach().cpu().numpy().astype(np.float32)
    with atomic_path(Path(path)) as tmp:  # an interrupted write leaves no half file
        tifffile.imwrite(tmp, data, ome=True, metadata={"axes": "CZYX"})
# --8<-- [end:write]
