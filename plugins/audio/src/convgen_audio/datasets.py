"""The ``speakers`` dataset: recordings labelled by speaker, from file names or sub-folders."""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path

import torch

from convgen.data import LabelledDataset
from convgen.errors import ConfigError, DataError, PathError
from convgen_audio.audio import SUFFIXES
from convgen_audio.features import Representation

FSDD_PATTERN = r"(?P<digit>\d+)_(?P<speaker>[^_]+)_(?P<take>\d+)"
"""Free Spoken Digit Dataset names: ``{digit}_{speaker}_{take}.wav``."""


def sample_dir(name: str = "fsdd") -> Path:
    """A folder of bundled recordings (``fsdd``: 6 speakers × 15 FSDD utterances; ``sounds``)."""
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
    """Recordings labelled by who speaks, as encoder inputs (see `Representation`).

    Args:
        root: the folder (default: the bundled FSDD sample, 6 speakers, takes 0–4 and 5–14).
        pattern: a regular expression matched against each file name (without suffix);
            its ``speaker`` group names the speaker and an optional ``take`` group numbers
            the recording. The default reads FSDD names ``{digit}_{speaker}_{take}``.
            ``null``: one sub-folder per speaker instead.
        speakers: only these speakers (e.g. one side of an identity-disjoint split).
        takes: only these take numbers, e.g. ``"5-49"`` (FSDD's training takes) or ``"0-4"``
            (its test takes); needs a pattern with a ``take`` group.
        match: only files whose name contains a match of this regular expression.
        max_per_speaker: at most this many recordings per speaker (in name order).
        representation: how a file becomes a tensor (keys of `Representation`).
        cache: keep each computed input in memory (features are computed once).
    """

    def __init__(self, root: str | None = None, pattern: str | None = FSDD_PATTERN, speakers: list[str] | None = None,
                 takes=None, match: str | None = None, max_per_speaker: int | None = None,
                 representation: dict | None = None, cache: bool = True):  # fmt: skip
        self.root = Path(root) if root else sample_dir("fsdd")
        if not self.root.is_dir():
            raise PathError(f"audio folder not found: {self.root}")
        self.representation = Representation.of(representation)
        wanted_takes = parse_takes(takes)
        found = self._by_pattern(pattern, wanted_takes) if pattern else self._by_folder(wanted_takes)
        if match:
            found = [(f, s) for f, s in found if _regex(match, "match").search(f.name)]
        names = sorted({s for _, s in found}, key=_natural)
        if speakers is not None:
            missing = sorted(set(map(str, speakers)) - set(names))
            if missing:
                raise DataError(f"no recordings of {', '.join(missing[:5])} under {self.root} (speakers found: {', '.join(names[:10])})")
            names = [n for n in names if n in set(map(str, speakers))]
        self.classes, self.files, self.labels = [], [], []
        for name in names:
            files = sorted((f for f, s in found if s == name), key=_natural)[:max_per_speaker]
            self.classes.append(name)
            self.files += files
            self.labels += [len(self.classes) - 1] * len(files)
        if not self.files:
            how = f"names matching {pattern!r}" if pattern else "one sub-folder per speaker"
            raise DataError(f"no recordings under {self.root} ({how}, takes={takes}, match={match}); files must be {', '.join(SUFFIXES)}")
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
            hit = regex.fullmatch(file.stem) if file.suffix.lower() in SUFFIXES else None
            if hit and (takes is None or int(hit["take"]) in takes):
                out.append((file, hit["speaker"]))
        if not out and any(p.is_dir() for p in self.root.iterdir()) and takes is None:
            raise DataError(f"no file name under {self.root} matches {pattern!r}; for one sub-folder per speaker set pattern=null")
        return out

    def _by_folder(self, takes: set[int] | None) -> list[tuple[Path, str]]:
        if takes is not None:
            raise ConfigError("takes needs a pattern with a (?P<take>...) group; with pattern=null, filter with match=REGEX")
        return [(f, folder.name) for folder in self.root.iterdir() if folder.is_dir() and not folder.name.startswith(".")
                for f in folder.iterdir() if f.suffix.lower() in SUFFIXES]  # fmt: skip

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int):
        sample = self._cached.get(index)
        if sample is None:
            sample = self.representation(self.files[index])
            if self.cache:
                self._cached[index] = sample
        return sample, self.labels[index]


def _regex(text: str, key: str) -> re.Pattern:
    try:
        return re.compile(text)
    except re.error as exc:
        raise ConfigError(f"{key} {text!r} is not a valid regular expression ({exc})") from None


def _natural(value):
    """``s2`` before ``s10``: digits compare as numbers."""
    name = value.name if isinstance(value, Path) else str(value)
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]
