"""Face datasets: a folder per person (``faces``), and LFW-style pairs files (``lfw-pairs``)."""

from __future__ import annotations

import inspect
import re
from importlib import resources
from pathlib import Path

import torch

from convgen.plugin_api import ConfigError, DataError, LabelledDataset, PathError
from convgen_faces.images import SUFFIXES
from convgen_faces.preprocess import FacePipeline


def sample_dir(name: str = "orl") -> Path:
    """A folder of the bundled sample data (``orl``: 40 people × 6 photos; ``photos``)."""
    return Path(str(resources.files("convgen_faces") / "samples" / name))


class _Faces(LabelledDataset):
    """Photos through a `FacePipeline` (the ``faces`` input pipeline, recorded by training), kept in memory (``cache``)."""

    pipeline_name = "faces"

    def _setup(self, size, channels, detect, margin, align, if_no_face, cache, detector="auto"):
        self.pipeline = FacePipeline.of(size, channels, detect, margin, align, if_no_face, detector)
        self.pipeline_spec = {"name": "faces", **{k: getattr(self.pipeline, k) for k in inspect.signature(FacePipeline.of).parameters}}
        self.cache = cache
        self._cached: dict[int, torch.Tensor] = {}

    def input_report(self) -> dict:
        """Photos seen and photos with no face found, for the run's report (see `FacePipeline.input_report`)."""
        return self.pipeline.input_report()

    def input_summary(self) -> str | None:
        """One line on the photos with no face found, which core recipes print at the end (None without detection)."""
        return self.pipeline.input_summary() if self.pipeline.detect and self.pipeline.tally.photos else None

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int):
        sample = self._cached.get(index)
        if sample is None:
            sample = self.pipeline(self.files[index])
            if self.cache:
                self._cached[index] = sample
        return sample, self.labels[index]


class FaceFolder(_Faces):
    """One sub-folder of photos per person (JPEG, PNG, PGM, BMP, TIFF).

    Args:
        root: the folder (default: the bundled ORL sample, 40 people × 6 photos).
        size, channels, detect, margin, align, if_no_face, detector: how each photo
            becomes the encoder's input (see `FacePipeline`); ``detect: false`` for photos
            that are already face crops, ``align: dlib`` for the ``dlib-resnet`` encoder.
        people: only these people (sub-folder names), e.g. the training side of a split.
        max_per_person: use at most this many photos of each person (sorted by name).
        cache: keep preprocessed faces in memory (detection runs once per photo).
        nested: a person is any folder below ``root`` that holds photos, named by its
            path relative to ``root`` (``family/alice``); False: only the direct sub-folders.
    """

    def __init__(self, root: str | None = None, size=64, channels: int = 1, detect: bool = True, margin: float = 0.2,
                 align: str = "none", if_no_face: str = "error", people: list[str] | None = None,
                 max_per_person: int | None = None, cache: bool = True, detector: str = "auto", nested: bool = False):  # fmt: skip
        self.root = Path(root) if root else sample_dir("orl")
        if not self.root.is_dir():
            raise PathError(f"face folder not found: {self.root} (expected one sub-folder of photos per person)")
        self.classes, self.files, self.labels = [], [], []
        found = self.root.rglob("*") if nested else self.root.iterdir()
        names = {p: p.relative_to(self.root).as_posix() for p in found
                 if p.is_dir() and not any(part.startswith(".") for part in p.relative_to(self.root).parts)}  # fmt: skip
        folders = sorted(names, key=lambda p: [_natural(Path(part)) for part in Path(names[p]).parts])
        if people is not None:
            if not isinstance(people, (list, tuple)) or not all(isinstance(p, str) for p in people):
                raise ConfigError(f"people must be a list of sub-folder names, like [s1, s2], got {people!r}")
            missing = sorted(set(people) - set(names.values()))
            if missing:
                raise DataError(f"no folder for {', '.join(missing[:5])} under {self.root}")
            folders = [f for f in folders if names[f] in set(people)]
        for folder in folders:
            photos = sorted((f for f in folder.iterdir() if f.suffix.lower() in SUFFIXES), key=_natural)[:max_per_person]
            if photos:
                self.classes.append(names[folder])
                self.files += photos
                self.labels += [len(self.classes) - 1] * len(photos)
        if not self.files:
            raise DataError(f"no photos under {self.root}: expected sub-folders (one per person) of {', '.join(SUFFIXES)} files")
        self._setup(size, channels, detect, margin, align, if_no_face, cache, detector)


class LFWPairs(_Faces):
    """The photos named by an LFW-style pairs file, with its pairs for verification.

    The file lists ``name i j`` (two photos of one person) and ``name1 i name2 j`` (two
    people), one pair per line; an optional first line gives folds and pairs per fold.
    Photo ``i`` of ``name`` is ``root/name/name_000i.<ext>``. Items are the distinct
    photos (labelled by person); ``pairs`` holds ``(item, item, same)`` for the
    ``evaluate`` recipe, which then scores verification on exactly these pairs.
    """

    def __init__(self, root: str = ".", pairs: str = "pairs.txt", size=64, channels: int = 1, detect: bool = False,
                 margin: float = 0.2, align: str = "none", if_no_face: str = "error", cache: bool = True,
                 detector: str = "auto"):  # fmt: skip
        self.root, pairs_path = Path(root), Path(pairs)
        if not pairs_path.is_absolute() and not pairs_path.exists():
            pairs_path = self.root / pairs_path
        if not pairs_path.is_file():
            raise PathError(f"pairs file not found: {pairs_path}")
        self.classes, self.files, self.labels, self.pairs = [], [], [], []
        items: dict[tuple[str, int], int] = {}
        for number, line in enumerate(pairs_path.read_text(encoding="utf-8").splitlines(), start=1):
            fields = line.split()
            if not fields or (number == 1 and all(f.isdigit() for f in fields)):
                continue
            try:
                if len(fields) == 3:
                    (a, i, j), b = fields, fields[0]
                elif len(fields) == 4:
                    a, i, b, j = fields
                else:
                    raise ValueError
                first, second = self._item(items, a, int(i)), self._item(items, b, int(j))
            except ValueError:
                raise DataError(f"{pairs_path}:{number}: expected 'name i j' or 'name1 i name2 j', got {line.strip()!r}") from None
            self.pairs.append((first, second, int(a == b)))
        if not self.pairs:
            raise DataError(f"{pairs_path} lists no pairs")
        self._setup(size, channels, detect, margin, align, if_no_face, cache, detector)

    def _item(self, items: dict, name: str, number: int) -> int:
        if (name, number) not in items:
            folder = self.root / name
            found = [folder / f"{name}_{number:04d}{s}" for s in SUFFIXES if (folder / f"{name}_{number:04d}{s}").is_file()]
            if not found:
                raise PathError(f"photo {number} of {name} not found: expected {folder / f'{name}_{number:04d}.jpg'}")
            if name not in self.classes:
                self.classes.append(name)
            items[(name, number)] = len(self.files)
            self.files.append(found[0])
            self.labels.append(self.classes.index(name))
        return items[(name, number)]


def _natural(path: Path):
    """``s2`` before ``s10``: digits compare as numbers."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", path.name)]
