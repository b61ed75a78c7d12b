"""Volumes in and out through MONAI: NIfTI files, DICOM series folders and NumPy arrays.

Every reader returns a MONAI ``MetaTensor`` ``(1, X, Y, Z)`` in float32 whose ``affine``
(voxel index to RAS millimetres) travels with the data, so that a crop, a resampling or a
style transfer is written back where it came from. DICOM values are in Hounsfield units
(MONAI applies each slice's RescaleSlope / RescaleIntercept). Anything that is not one
finite 3D volume is refused with a one-line `DataError` that says what was found.
"""

from __future__ import annotations

import contextlib
import gzip
import logging
import warnings
from pathlib import Path

import numpy as np
import torch
from monai.data import MetaTensor

from convgen.plugin_api import DataError, PathError, atomic_path, load_npy, read_sample

NIFTI = (".nii", ".nii.gz")
NUMPY = (".npy", ".npz")


@contextlib.contextmanager
def _quiet():
    """MONAI and pydicom warn on stderr (optional GPU codecs, missing tags); a CLI error must stay one line."""
    logs = [logging.getLogger("monai.data.nvimgcodec_pydicom_plugin"),  # LoadImage sets up every reader, GPU ones too
            logging.getLogger("nibabel.global")]  # "sizeof_hdr should be 348; set sizeof_hdr to 348" on a damaged header
    levels = [log.level for log in logs]
    for log in logs:
        log.setLevel(logging.CRITICAL)  # nibabel logs "vox offset 0 too low" at ERROR; the DataError says it
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for log, level in zip(logs, levels):
            log.setLevel(level)


def _first_line(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def is_nifti(path: Path) -> bool:
    return Path(path).name.lower().endswith(NIFTI)


def check_volume(volume: torch.Tensor, source: str) -> MetaTensor:
    """``volume`` as a float32 ``MetaTensor`` (1, X, Y, Z), or a DataError saying why it is not one volume."""
    shape = tuple(volume.shape)
    spatial = shape[1:]
    if len(spatial) < 3 or (len(spatial) == 3 and min(spatial) < 2):
        raise DataError(f"{source} is a 2D image (shape {shape[1:] if len(spatial) else shape}), but a 3D volume is expected; "
                        "give a NIfTI volume, a DICOM series folder or a 3D array")  # fmt: skip
    if len(spatial) > 3:
        raise DataError(f"{source} has {len(spatial)} spatial axes (shape {shape}); a 3D volume is expected")
    if shape[0] != 1:
        raise DataError(f"{source} holds {shape[0]} volumes (a 4D series, shape {shape}); convgen-ct takes one 3D volume: "
                        "save a single volume of the series")  # fmt: skip
    if not isinstance(volume, MetaTensor):
        volume = MetaTensor(volume)
    volume = volume.float()
    bad = int((~torch.isfinite(volume.as_tensor())).sum())
    if bad:
        raise DataError(f"{source} holds {bad} NaN or infinite voxels of {volume.numel()}; clean or re-export the volume")
    return volume


def read_nifti(path) -> MetaTensor:
    """A NIfTI volume (``.nii`` / ``.nii.gz``) with its affine, through MONAI's ``NibabelReader``."""
    from monai.transforms import LoadImage

    try:
        with _quiet():
            volume = LoadImage(reader="NibabelReader", image_only=True, ensure_channel_first=True)(str(path))
    except Exception as exc:  # nibabel's many errors on a broken file
        raise DataError(f"{path} is not a readable NIfTI file ({_first_line(exc)}); re-export or copy it again") from None
    return check_volume(volume, str(path))


def series_files(folder: Path) -> list[Path]:
    """The DICOM files of ``folder``, checked to form ONE series of at least two slices."""
    import pydicom

    files = [p for p in sorted(folder.iterdir()) if p.is_file() and pydicom.misc.is_dicom(str(p))]
    if not files:
        raise DataError(f"{folder} holds no DICOM files; a DICOM series folder holds one file per slice")
    series: dict[str, list[str]] = {}
    for file in files:
        try:
            header = pydicom.dcmread(str(file), stop_before_pixels=True)
        except Exception as exc:
            raise DataError(f"{file} is not a readable DICOM file ({_first_line(exc)})") from None
        series.setdefault(str(header.get("SeriesInstanceUID", "unknown")), []).append(file.name)
    if len(series) > 1:
        listed = "; ".join(f"{uid} ({len(names)} files, e.g. {names[0]})" for uid, names in sorted(series.items()))
        raise DataError(f"{folder} mixes {len(series)} DICOM series: {listed}; put each series in its own folder")
    if len(files) < 2:
        raise DataError(f"{folder} holds a single DICOM slice ({files[0].name}), a 2D image; a volume needs the whole series")
    return files


def read_dicom_series(folder) -> MetaTensor:
    """One DICOM series (a folder) in Hounsfield units, through MONAI's ``PydicomReader``."""
    from monai.data import PydicomReader
    from monai.transforms import LoadImage

    folder = Path(folder)
    series_files(folder)
    try:
        with _quiet():
            reader = PydicomReader(fname_regex=None)  # is_dicom() picks the slices, not file names
            volume = LoadImage(reader=reader, image_only=True, ensure_channel_first=True)(str(folder))
    except Exception as exc:
        raise DataError(f"{folder}: cannot assemble the DICOM series ({_first_line(exc)})") from None
    return check_volume(volume, str(folder))


def read_numpy(path, key: str | None = None, spacing=None) -> MetaTensor:
    """A ``.npy`` array or one array of a ``.npz`` (``key``), ``(X, Y, Z)`` or ``(1, X, Y, Z)``.

    NumPy files carry no geometry: the affine is ``diag(spacing)`` (1 mm by default).
    """
    path = Path(path)
    if path.suffix.lower() == ".npy":
        loaded = load_npy(path, "NumPy file")  # header checked before allocating; strings, complex... refused
    else:
        try:
            loaded = np.load(path, allow_pickle=False)
        except (ValueError, OSError, EOFError) as exc:
            raise DataError(f"{path} is not a readable NumPy file ({_first_line(exc)})") from None
    if isinstance(loaded, np.lib.npyio.NpzFile):
        with loaded:
            keys = list(loaded.keys())
            if key is None and len(keys) != 1:
                raise DataError(f"{path} holds several arrays ({', '.join(keys)}); choose one with its key")
            if key is not None and key not in keys:
                raise DataError(f"{path} has no array {key!r}; it holds {', '.join(keys) or 'none'}")
            array = loaded[key or keys[0]]
    else:
        array = loaded
    if not np.issubdtype(array.dtype, np.number) or np.iscomplexobj(array):
        raise DataError(f"{path} holds {array.dtype} values; a volume holds real numbers")
    array = array[None] if array.ndim in (2, 3) else array
    spacing = [1.0, 1.0, 1.0] if spacing is None else [float(s) for s in spacing]
    if len(spacing) != 3 or min(spacing) <= 0:
        raise DataError(f"spacing must be three positive numbers (mm), got {spacing}")
    affine = torch.diag(torch.tensor([*spacing, 1.0], dtype=torch.float64))
    return check_volume(MetaTensor(torch.as_tensor(array.astype(np.float32)), affine=affine), str(path))


def load_volume(path, key: str | None = None, spacing=None) -> MetaTensor:
    """Any supported volume: a NIfTI file, a DICOM series folder, or a NumPy ``.npy`` / ``.npz`` file.

    ``spacing`` (mm) gives NumPy arrays a geometry; ``key`` picks an array of a ``.npz``.
    Other files go through the readers registered with convgen (a 2D photo, say), and
    are then checked to be a volume.
    """
    path = Path(path)
    if not path.exists():
        raise PathError(f"volume not found: {path}; check the path (a DICOM series is given as its folder)")
    if path.is_dir():
        return read_dicom_series(path)
    name = path.name.lower()
    if name.endswith(NIFTI):
        return read_nifti(path)
    if name.endswith(NUMPY):
        return read_numpy(path, key, spacing)
    if name.endswith(".dcm"):
        raise DataError(f"{path} is one DICOM slice (a 2D image); give the folder that holds the whole series")
    return check_volume(read_sample(path), str(path))


def affine_of(volume) -> np.ndarray:
    """The voxel-to-world affine (4×4, mm) of a volume; identity when it carries none."""
    affine = getattr(volume, "affine", None)
    return np.eye(4) if affine is None else np.asarray(torch.as_tensor(affine, dtype=torch.float64).cpu())


def spacing_of(volume) -> tuple[float, float, float]:
    """Voxel size along each axis (mm), from the affine."""
    return tuple(float(s) for s in np.linalg.norm(affine_of(volume)[:3, :3], axis=0))


def write_nifti(path, volume: torch.Tensor, affine=None) -> Path:
    """Write ``(1, X, Y, Z)`` (or ``(X, Y, Z)``) as NIfTI with ``affine`` (default: the volume's own), atomically."""
    import nibabel as nib

    path = Path(path)
    if not is_nifti(path):
        raise DataError(f"{path.name}: a NIfTI file name ends with .nii or .nii.gz")
    data = volume.detach().cpu()
    data = torch.as_tensor(data).float().numpy()
    if data.ndim == 4 and data.shape[0] == 1:
        data = data[0]
    if data.ndim != 3:
        raise DataError(f"cannot write shape {tuple(volume.shape)} as one NIfTI volume; expected (1, X, Y, Z)")
    image = nib.Nifti1Image(data, affine_of(volume) if affine is None else np.asarray(affine, dtype=np.float64))
    image.header.set_xyzt_units("mm", "sec")
    blob = image.to_bytes()
    if path.name.lower().endswith(".gz"):
        blob = gzip.compress(blob, mtime=0)
    with atomic_path(path) as tmp:
        tmp.write_bytes(blob)
    return path
