"""3D datasets: MedMNIST 3D archives by split, and views of anatomy sampled from volumes.

``medmnist3d`` reads an official MedMNIST v2 3D ``.npz`` (``{train,val,test}_images``
and ``_labels``, 28³ or 64³); with two classes the "identities" of metric learning are the
classes. ``ct-volumes`` needs no labels: each random region of each volume is an
identity, and its samples are differently cropped and augmented views of that region
(the same anatomy under different augmentations are positives).
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import numpy as np
import torch

from convgen.plugin_api import ConfigError, DataError, LabelledDataset, PathError
from convgen_ct import preprocess
from convgen_ct.volumes import load_volume

SPLITS = ("train", "val", "test")


def sample_path(name: str) -> Path:
    """A bundled sample file (see ``samples/README.md``)."""
    return Path(str(resources.files("convgen_ct") / "samples" / name))


class MedMNIST3D(LabelledDataset):
    """Volumes ``(1, S, S, S)`` in [0, 1] of one split of a MedMNIST 3D ``.npz``, labelled by class.

    Args:
        root: the ``.npz`` file (default: the bundled 136-volume AdrenalMNIST3D subset).
        split: ``train``, ``val``, ``test``, or several joined by ``+`` (``train+val``).
        max_per_class: keep the first N volumes of each class (a reduced run).
        class_names: names of the classes (default ``class0``, ``class1``, ...).
    """

    def __init__(self, root: str | None = None, split: str = "train", max_per_class: int | None = None,
                 class_names: list[str] | None = None):  # fmt: skip
        path = Path(root) if root else sample_path("adrenalmnist3d_mini.npz")
        if not path.is_file():
            raise PathError(f"MedMNIST file not found: {path} (an official .npz such as adrenalmnist3d.npz)")
        parts = str(split).split("+")
        if any(p not in SPLITS for p in parts):
            raise ConfigError(f"split must be train, val or test (or joined by +), got {split!r}")
        images, labels = [], []
        try:
            with np.load(path, allow_pickle=False) as archive:
                for part in parts:
                    if f"{part}_images" not in archive or f"{part}_labels" not in archive:
                        raise DataError(f"{path} has no {part}_images / {part}_labels; it holds {', '.join(archive.keys())}")
                    images.append(archive[f"{part}_images"])
                    labels.append(archive[f"{part}_labels"].reshape(-1))
        except (ValueError, OSError, EOFError) as exc:
            raise DataError(f"{path} is not a readable MedMNIST .npz ({str(exc).splitlines()[0]})") from None
        images, labels = np.concatenate(images), np.concatenate(labels).astype(np.int64)
        if images.ndim == 5 and images.shape[-1] == 1:
            images = images[..., 0]
        if images.ndim != 4 or len(images) != len(labels):
            raise DataError(f"{path}: expected images (N, S, S, S) and one label each, got {images.shape} and {labels.shape}")
        if max_per_class is not None:
            keep = np.sort(np.concatenate([np.flatnonzero(labels == c)[:max_per_class] for c in np.unique(labels)]))
            images, labels = images[keep], labels[keep]
        n_classes = int(labels.max()) + 1 if len(labels) else 0
        if class_names is not None and len(class_names) < n_classes:
            raise ConfigError(f"class_names names {len(class_names)} classes but the labels go up to {n_classes - 1}")
        self.classes = list(class_names) if class_names is not None else [f"class{c}" for c in range(n_classes)]
        self.scale = 255.0 if images.dtype == np.uint8 else 1.0
        self.images = images  # kept as stored (uint8): 64³ volumes in float would take 4x the memory
        self.labels = labels.tolist()
        self.path = path

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int):
        volume = torch.from_numpy(self.images[index].astype(np.float32) / self.scale)
        return volume[None], self.labels[index]


class CtVolumes(LabelledDataset):
    """Random regions of volumes as identities; augmented views of each region as its samples.

    Each volume is read (NIfTI, DICOM folder or NumPy), resampled to ``spacing`` and
    windowed; ``regions`` random boxes of ``patch_size + 2 * jitter`` voxels are drawn in
    it, and each yields ``views`` samples: a random ``patch_size`` crop of the box (a shift
    of up to ``jitter`` voxels) passed through MONAI's random flips, rotation, zoom and noise.
    Everything is seeded and computed once.

    Args:
        files: volume files or DICOM folders (default: the two bundled MR volumes).
        key: the array of ``.npz`` files.
        window, hu_offset, spacing: see `convgen_ct.preprocess.prepare`.
        patch_size, regions, views, jitter: the sampling above.
        augment: keyword arguments of `convgen_ct.preprocess.augmentation`.
        seed: the random state of the sampling and the augmentation.

    Training records the ``ct`` input pipeline that reads a volume the same way (window,
    spacing, then random patches of ``patch_size``, averaged), for galleries of volumes.
    """

    pipeline_name = "ct"

    def __init__(self, files: list[str] | None = None, key: str | None = None, window="percentiles", hu_offset: float = 0.0,
                 spacing=None, patch_size: int = 24, regions: int = 8, views: int = 4, jitter: int = 4,
                 augment: dict | None = None, seed: int = 0):  # fmt: skip
        files = list(files) if files else [str(sample_path("anatomical.nii")), str(sample_path("someones_epi.nii.gz"))]
        if regions < 1 or views < 2:
            raise ConfigError(f"ct-volumes needs regions >= 1 and views >= 2 (positives), got regions={regions}, views={views}")
        transform = preprocess.augmentation(seed=seed, **(augment if augment is not None else {}))
        self.pipeline_spec = {"name": "ct", "key": key, "window": window, "hu_offset": hu_offset, "spacing": spacing, "size": None,
                              "patch_size": patch_size, "patches": max(regions, 8), "seed": seed}  # fmt: skip
        self.classes, self.labels, samples = [], [], []
        for v, file in enumerate(files):
            volume = preprocess.prepare(load_volume(file, key), window, hu_offset, spacing)
            boxes = preprocess.random_patches(volume, patch_size + 2 * jitter, regions, seed=seed * 7919 + v)
            for r, box in enumerate(boxes):
                crops = preprocess.random_patches(box, patch_size, views, seed=(seed * 7919 + v) * 1009 + r)
                self.classes.append(f"{Path(file).name}#{r}")
                for crop in crops:
                    samples.append(preprocess.plain(transform(crop)))
                    self.labels.append(len(self.classes) - 1)
        self.samples = torch.stack(samples)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int):
        return self.samples[index], self.labels[index]
