"""The core's generic datasets: a folder of classes, and synthetic clusters for any dims."""

from __future__ import annotations

from pathlib import Path

import torch
from monai.transforms import GaussianSmooth
from torch.utils.data import Dataset

from convgen.errors import DataError, PathError


class LabelledDataset(Dataset):
    """Items are ``(tensor (C, *spatial), label)``; ``classes[label]`` names the identity."""

    classes: list[str]
    labels: list[int]


class FolderOfClasses(LabelledDataset):
    """One sub-folder per identity; each file is read by the reader of its file type.

    Its samples are the ``array`` input pipeline's (`convgen.pipelines.ArrayPipeline`),
    which training records with the weights.

    Args:
        root: the folder holding one sub-folder per identity.
        suffixes: only files with these suffixes (default: every file a reader claims).
        spatial_size: resize every sample to this size (an int for every axis, or a
            list), so that samples of different sizes can share a batch.
        nested: identities are the folders that hold files at any depth, named by their
            path relative to ``root`` (``alphabet/character`` for Omniglot's
            ``alphabet/character/*.png``); False: only the direct sub-folders.
    """

    pipeline_name = "array"

    def __init__(self, root: str = ".", suffixes: list[str] | None = None, spatial_size: int | list[int] | None = None,
                 nested: bool = False):  # fmt: skip
        from convgen.pipelines import ArrayPipeline
        from convgen.registry import get_registry

        self.root = Path(root)
        if not self.root.is_dir():
            what = "is a file, not a folder" if self.root.exists() else "not found"
            raise PathError(f"dataset folder {what}: {self.root} (expected a folder with one sub-folder per identity)")
        known = [s.lower() for s in (suffixes or list(get_registry("reader")))]
        self.classes, self.files, self.labels = [], [], []
        folders = self.root.rglob("*") if nested else self.root.iterdir()
        for folder in sorted(p for p in folders if p.is_dir() and not p.name.startswith(".")):
            if any(part.startswith(".") for part in folder.relative_to(self.root).parts):
                continue
            files = sorted(f for f in folder.iterdir() if f.is_file() and f.name.lower().endswith(tuple(known)))
            if not files:
                continue
            self.classes.append(folder.relative_to(self.root).as_posix())
            self.files += files
            self.labels += [len(self.classes) - 1] * len(files)
        if not self.files:
            raise DataError(
                f"no readable samples under {self.root}: expected sub-folders (one per identity) "
                f"holding files of type {', '.join(known) or '(none registered)'}"
            )
        self.spatial_size = spatial_size
        self.pipeline = ArrayPipeline(spatial_size)
        self.pipeline_spec = {"name": "array", "spatial_size": spatial_size}

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int):
        return self.pipeline.sample(self.files[index]), self.labels[index]


class SyntheticClusters(LabelledDataset):
    """Generated identities for tests and demos in any ``spatial_dims``, seeded.

    Built so that similarity must be *learned*, and transfers to unseen identities: a
    dictionary of ``motifs`` small smooth patterns is shared by every identity; an
    identity is a vector of amplitudes over that dictionary; each sample stamps every
    motif at a random place with its identity's amplitude, adds ``distractors`` fresh
    random patterns that belong to no dictionary (nuisance a random encoder cannot tell
    apart from signal), and white noise of std ``noise``. Datasets with the same ``seed``
    share the dictionary; ``identity_offset`` draws other identities from it.
    """

    def __init__(
        self,
        spatial_dims: int = 2,
        size: int = 32,
        channels: int = 1,
        identities: int = 8,
        samples_per_identity: int = 10,
        motifs: int = 6,
        motif_size: int = 5,
        distractors: int = 1,
        noise: float = 0.1,
        identity_offset: int = 0,
        seed: int = 0,
    ):
        if identities < 1 or samples_per_identity < 1:
            raise DataError("synthetic dataset needs at least one identity and one sample per identity")
        if not 1 <= motif_size <= size:
            raise DataError(f"motif_size must be between 1 and size ({size}), got {motif_size}")
        shape = (channels,) + (size,) * spatial_dims
        patch = (channels,) + (motif_size,) * spatial_dims
        smooth = GaussianSmooth(sigma=max(0.5, motif_size / 4))

        def pattern(gen: torch.Generator) -> torch.Tensor:
            x = torch.as_tensor(smooth(torch.randn(patch, generator=gen)))
            return x / (x.norm() + 1e-8) * motif_size ** (spatial_dims / 2)

        dictionary = [pattern(torch.Generator().manual_seed(seed * 1009 + k)) for k in range(motifs)]
        gen = torch.Generator().manual_seed(seed * 7919 + identity_offset + 1)
        axes = tuple(range(1, spatial_dims + 1))

        def stamp(canvas: torch.Tensor, motif: torch.Tensor) -> None:
            placed = torch.zeros(shape)
            placed[(slice(None),) + (slice(0, motif_size),) * spatial_dims] = motif
            shifts = torch.randint(0, size, (spatial_dims,), generator=gen).tolist()
            canvas += torch.roll(placed, shifts=shifts, dims=axes)

        self.classes = [f"id{identity_offset + i:03d}" for i in range(identities)]
        samples, labels = [], []
        for label in range(identities):
            amplitudes = (torch.rand(motifs, generator=gen) < 0.5) * (1 + torch.rand(motifs, generator=gen))
            for _ in range(samples_per_identity):
                canvas = noise * torch.randn(shape, generator=gen)
                for amplitude, motif in zip(amplitudes, dictionary):
                    stamp(canvas, amplitude * motif)
                for _ in range(distractors):
                    stamp(canvas, pattern(gen))
                samples.append(canvas)
                labels.append(label)
        self.samples = torch.stack(samples).float()
        self.labels = labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int):
        return self.samples[index], self.labels[index]
