"""The ``ct`` input pipeline: a volume (NIfTI, DICOM series folder, NumPy) becomes ``(n, 1, X, Y, Z)``.

Windowed to [0, 1] (``window``: a named HU window, ``[low, high]`` or ``percentiles``),
optionally resampled to ``spacing`` mm, then either resized whole to ``size`` (n = 1) or
cut into ``patches`` seeded random patches of ``patch_size`` (n = patches).
"""

from __future__ import annotations

from pathlib import Path

from convgen_ct import preprocess
from convgen_ct.volumes import load_volume


class VolumeInputs:
    def __init__(self, key, window, hu_offset, spacing, size, patch_size, patches, seed):
        if not (isinstance(window, str) and window in preprocess.OTHER_WINDOWS):
            preprocess.window_range(window)  # a bad window is a one-line error now, not at the first file
        self.key, self.window, self.hu_offset, self.spacing = key, window, hu_offset, spacing
        self.size, self.patch_size, self.patches, self.seed = size, patch_size, patches, seed

    def volume(self, path):
        return preprocess.prepare(load_volume(path, self.key, None), self.window, self.hu_offset, self.spacing)

    def __call__(self, path):
        from monai.transforms import Resize

        volume = self.volume(path)
        if self.patch_size:
            return preprocess.stack(preprocess.random_patches(volume, self.patch_size, self.patches, self.seed))
        if self.size:
            volume = Resize(preprocess.per_axis(self.size, "size", int), mode="trilinear")(volume)
        return preprocess.stack([volume])

    @staticmethod
    def is_sample(path) -> bool:
        """A folder of DICOM files is one volume (a series), not a folder of samples."""
        import pydicom

        if not Path(path).is_dir():
            return False
        files = [f for f in Path(path).iterdir() if f.is_file() and not f.name.startswith(".")][:3]
        return any(pydicom.misc.is_dicom(str(f)) for f in files)

    def preview(self, path):
        x = preprocess.plain(self.volume(path))  # (1, X, Y, Z): the middle axial slice
        return x[..., x.shape[-1] // 2]


def ct(key: str | None = None, window="soft-tissue", hu_offset: float = 0.0, spacing=None, size=28, patch_size=None,
       patches: int = 8, seed: int = 0) -> VolumeInputs:  # fmt: skip
    """A whole volume resized to ``size``, or ``patches`` random patches of ``patch_size``."""
    return VolumeInputs(key, window, hu_offset, spacing, size, patch_size, patches, seed)
