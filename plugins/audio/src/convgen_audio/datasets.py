"""The ``speakers`` dataset: recordings labelled by speaker, from file names or sub-folders."""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path

import numpy as np
import torch

from convgen.plugin_api import ConfigError, DataError, LabelledDataset, PathError
from convgen_audio.audio import SUFFIXES
from convgen_audio.features import FEATURE_SUFFIX, FeatureSequence, crop, representation_of

FSDD_PATTERN = r"(?P<digit>\d+)_(?P<speaker>[^_]+)_(?P<take>\d+)"
"""Free Spoken Digit Dataset names: ``{digit}_{speaker}_{take}.wav``."""


def sample_dir(name: str = "fsdd") -> Path:
    """A folder of bundled recordings (``fsdd``: 6 speakers × 15 FSDD utterances; ``an4_mfcc``: 6 × 4 AN4 MFCC files; ``sounds``)."""
    return Path(str(resources.files("convgen_audio") / "samples" / name))


def parse_takes(takes) -> set[int] | None:
    """``"5-49"``, ``"0-4,7"``, ``[0, 1, "5-9"]`` or a single number as a set of take numbers (None: all)."""
    if takes is None:
        return None
    parts = takes if isinstance(takes, (list, tuple)) else str(takes).split(",")
    out: set[int] = set()
    for part in parts:
        text = str(part).strip()
        low, dash, high = text.partition("-")
        if not (low.isdigit() and (not dash or high.isdigit())):
            raise ConfigError(f"takes lists numbers or ranges such as 0-4, got {part!r}")
        out.update(range(int(low), int(high if dash else low) + 1))
    return out


class SpeakerRecordings(LabelledDataset):
    """Recordings (or precomputed feature files) labelled by who speaks, as encoder inputs.

    ``representation.name`` says what a file is: ``spectrogram`` (the default; audio files
    become spectrograms, see `Representation`) or ``features`` (``.npy`` arrays
    ``(frames, coefficients)`` such as MFCCs, see `FeatureSequence`).

    Args:
        root: the folder (default: the bundled FSDD sample, 6 speakers, takes 0–4 and 5–14;
            with ``representation.name: features``, the bundled AN4 sample, 6 speakers × 4).
        pattern: a regular expression matched against each file name (without suffix);
            its ``speaker`` group names the speaker and an optional ``take`` group numbers
            the recording. The default reads FSDD names ``{digit}_{speaker}_{take}``.
            ``null``: one sub-folder per speaker instead.
        speakers: only these speakers (e.g. one side of an identity-disjoint split).
        exclude_speakers: every speaker but these (e.g. people kept for testing).
        takes: only these take numbers, e.g. ``"5-49"`` (FSDD's training takes) or ``"0-4"``
            (its test takes); needs a pattern with a ``take`` group.
        match: only files whose name contains a match of this regular expression.
        max_per_speaker: at most this many recordings per speaker (in name order).
        folds, fold, exclude_fold: speaker-disjoint folds: the speakers (natural order,
            shuffled with a fixed seed) are dealt into ``folds`` groups; ``fold`` (0-based)
            keeps only that group's speakers, or every other speaker with ``exclude_fold``
            (train on ``exclude_fold: true``, test the same ``fold`` without it).
        crop: a random window of this many frames on every read (shorter inputs are
            looped), so that utterances of any length stack into training batches; null
            keeps whole utterances (evaluate them with batch_size 1).
        representation: how a file becomes a tensor (``name`` and the keys of
            `Representation` or `FeatureSequence`).
        cache: keep each computed input in memory (features are computed once).
    """

    pipeline_name = "audio"

    @staticmethod
    def pipeline_options(options: dict) -> dict:
        """The dataset keys of an ``audio`` pipeline's options (all but ``overlap`` are the representation's)."""
        return {"representation": {k: v for k, v in options.items() if k != "overlap"}}

    def __init__(self, root: str | None = None, pattern: str | None = FSDD_PATTERN, speakers: list[str] | None = None,
                 exclude_speakers: list[str] | None = None, takes=None, match: str | None = None, max_per_speaker: int | None = None,
                 folds: int = 5, fold: int | None = None, exclude_fold: bool = False, crop: int | None = None,
                 representation: dict | None = None, cache: bool = True):  # fmt: skip
        self.representation = representation_of(representation)
        features = isinstance(self.representation, FeatureSequence)
        self.suffixes = [FEATURE_SUFFIX] if features else SUFFIXES
        self.root = Path(root) if root else sample_dir("an4_mfcc" if features else "fsdd")
        if not self.root.is_dir():
            raise PathError(f"audio folder not found: {self.root}")
        if crop is not None and (not isinstance(crop, int) or isinstance(crop, bool) or crop < 1):
            raise ConfigError(f"crop must be a positive number of frames or null, got {crop!r}")
        self.crop = crop
        self.pipeline_spec = self.representation.pipeline_spec()  # recorded by training (`convgen_audio.pipelines`)
        wanted_takes = parse_takes(takes)
        found = self._by_pattern(pattern, wanted_takes) if pattern else self._by_folder(wanted_takes)
        if match:
            found = [(f, s) for f, s in found if _regex(match, "match").search(f.name)]
        names = names_all = sorted({s for _, s in found}, key=_natural)
        if speakers is not None:
            missing = sorted(set(map(str, speakers)) - set(names))
            if missing:
                raise DataError(f"no recordings of {', '.join(missing[:5])} under {self.root} (speakers found: {', '.join(names[:10])})")
            names = [n for n in names if n in set(map(str, speakers))]
        if exclude_speakers:
            names = [n for n in names if n not in set(map(str, exclude_speakers))]
        if fold is not None:
            names = [n for n in names if (n in speaker_fold(names_all, folds, fold)) != exclude_fold]
        self.classes, self.files, self.labels = [], [], []
        for name in names:
            files = sorted((f for f, s in found if s == name), key=_natural)[:max_per_speaker]
            self.classes.append(name)
            self.files += files
            self.labels += [len(self.classes) - 1] * len(files)
        if not self.files:
            how = f"names matching {pattern!r}" if pattern else "one sub-folder per speaker"
            raise DataError(f"no recordings under {self.root} ({how}, takes={takes}, match={match}); files must be {', '.join(self.suffixes)}")
        self.cache = cache
        self._cached: dict[int, torch.Tensor] = {}

    def _by_pattern(self, pattern: str, takes: set[int] | None) -> list[tuple[Path, str]]:
        regex = _regex(pattern, "pattern")
        if "speaker" not in regex.groupindex:
            raise ConfigError(f"pattern {pattern!r} needs a (?P<speaker>...) group")
        if takes is not None and "take" not in regex.groupindex:
            raise ConfigError(f"takes needs a pattern with a (?P<take>...) group; {pattern!r} has none")
        out = []
        for file in self.root.iterdir():
            hit = regex.fullmatch(file.stem) if file.suffix.lower() in self.suffixes else None
            if hit and (takes is None or int(hit["take"]) in takes):
                out.append((file, hit["speaker"]))
        if not out and any(p.is_dir() for p in self.root.iterdir()) and takes is None:
            raise DataError(f"no file name under {self.root} matches {pattern!r}; for one sub-folder per speaker set pattern=null")
        return out

    def _by_folder(self, takes: set[int] | None) -> list[tuple[Path, str]]:
        if takes is not None:
            raise ConfigError("takes needs a pattern with a (?P<take>...) group; with pattern=null, filter with match=REGEX")
        return [(f, folder.name) for folder in self.root.iterdir() if folder.is_dir() and not folder.name.startswith(".")
                for f in folder.iterdir() if f.suffix.lower() in self.suffixes]  # fmt: skip

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int):
        sample = self._cached.get(index)
        if sample is None:
            sample = self.representation(self.files[index])
            if self.cache:
                self._cached[index] = sample
        if self.crop is not None:
            sample = crop(sample, self.crop)
        return sample, self.labels[index]


def speaker_fold(speakers: list[str], folds: int, fold: int, seed: int = 0) -> set[str]:
    """The speakers of ``fold`` (0-based) of ``folds``: the list shuffled with ``seed``, then dealt round-robin."""
    if not isinstance(folds, int) or isinstance(folds, bool) or folds < 2:
        raise ConfigError(f"folds must be an integer of at least 2, got {folds!r}")
    if not isinstance(fold, int) or isinstance(fold, bool) or not 0 <= fold < folds:
        raise ConfigError(f"fold must be an integer from 0 to {folds - 1}, got {fold!r}")
    if len(speakers) < folds:
        raise DataError(f"{len(speakers)} speakers cannot be dealt into {folds} folds; lower folds")
    order = np.random.default_rng(seed).permutation(len(speakers))
    return {speakers[i] for i in order[fold::folds]}


def _regex(text: str, key: str) -> re.Pattern:
    try:
        return re.compile(text)
    except re.error as exc:
        raise ConfigError(f"{key} {text!r} is not a valid regular expression ({exc})") from None


def _natural(value):
    """``s2`` before ``s10``: digits compare as numbers."""
    name = value.name if isinstance(value, Path) else str(value)
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]
