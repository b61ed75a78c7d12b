"""The core's generic datasets: a folder of classes, and synthetic clusters for any dims."""

from __future__ import annotations

from pathlib import Path

import torch
from monai.transforms import GaussianSmooth, Resize
from torch.utils.data import Dataset

from convgen import io
from convgen.errors import DataError


class LabelledDataset(Dataset):
    """Items are ``(tensor (C, *spatial), label)``; ``classes[label]`` names the identity."""

    classes: list[str]
    labels: list[int]


class FolderOfClasses(LabelledDataset):
    """One sub-folder per identity; each file is read by the reader of its file type.

    Args:
        root: the folder holding one sub-folder per identity.
        suffixes: only files with these suffixes (default: every file a reader claims).
        spatial_size: resize every sample to this size (an int for every axis, or a
            list), so that samples of different sizes can share a batch.
    """

    def __init__(self, root: str = ".", suffixes: list[str] | None = None, spatial_size: int | list[int] | None = None):
        from convgen.registry import get_registry

        self.root = Path(root)
        if not self.root.is_dir():
            raise DataError(f"dataset folder not found: {self.root} (expected one sub-folder per identity)")
        known = [s.lower() for s in (suffixes or list(get_registry("reader")))]
        self.classes, self.files, self.labels = [], [], []
        for folder in sorted(p for p in self.root.iterdir() if p.is_dir() and not p.name.startswith(".")):
            files = sorted(f for f in folder.iterdir() if f.is_file() and f.name.lower().endswith(tuple(known)))
            if not files:
                continue
            self.classes.append(folder.name)
            self.files += files
            self.labels += [len(self.classes) - 1] * len(files)
        if not self.files:
            raise DataError(
                f"no readable samples under {self.root}: expected sub-folders (one per identity) "
                f"holding files of type {', '.join(known) or '(none registered)'}"
            )
        self.spatial_size = spatial_size

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int):
        sample = io.read(self.files[index])
        if self.spatial_size is not None:
            size = self.spatial_size
            size = [size] * (sample.ndim - 1) if isinstance(size, int) else list(size)
            sample = Resize(size, mode="area")(sample)
        return torch.as_tensor(sample, dtype=torch.float32), self.labels[index]


class SyntheticClusters(LabelledDataset):
    """Identities as smooth random patterns; samples are shifted, noisy copies.

    A generated, seeded dataset for tests and demos in any ``spatial_dims``: each
    identity has a prototype (Gaussian-smoothed noise); each sample rolls it by up to
    ``max_shift`` along every axis and adds white noise of std ``noise``.
    """

    def __init__(
        self,
        spatial_dims: int = 2,
        size: int = 32,
        channels: int = 1,
        identities: int = 8,
        samples_per_identity: int = 10,
        noise: float = 0.5,
        max_shift: int = 2,
        smoothing: float = 2.0,
        seed: int = 0,
    ):
        if identities < 1 or samples_per_identity < 1:
            raise DataError("synthetic dataset needs at least one identity and one sample per identity")
        gen = torch.Generator().manual_seed(seed)
        shape = (channels,) + (size,) * spatial_dims
        smooth = GaussianSmooth(sigma=smoothing)
        self.classes = [f"id{i:03d}" for i in range(identities)]
        samples, labels = [], []
        for label in range(identities):
            proto = torch.as_tensor(smooth(torch.randn(shape, generator=gen)))
            proto = (proto - proto.mean()) / (proto.std() + 1e-8)
            for _ in range(samples_per_identity):
                shifts = torch.randint(-max_shift, max_shift + 1, (spatial_dims,), generator=gen).tolist()
                sample = torch.roll(proto, shifts=shifts, dims=tuple(range(1, spatial_dims + 1)))
                samples.append(sample + noise * torch.randn(shape, generator=gen))
                labels.append(label)
        self.samples = torch.stack(samples).float()
        self.labels = labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int):
        return self.samples[index], self.labels[index]
