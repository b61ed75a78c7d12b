"""ECG datasets: records grouped by person, cut into heartbeats, with the recording as session.

Two layouts are understood: one sub-folder per person holding that person's records
(ECG-ID: ``Person_01/rec_1.hea``), or a flat folder with one person per record (MIT-BIH:
``100.hea``). Every window remembers the recording it came from (``sessions``), so that
the ``evaluate`` recipe can enrol a person from ONE recording and identify them from the
others. A single long record per person can be cut into sessions of ``session_seconds``
(enrol from the first minutes, identify from later ones).
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import replace
from importlib import resources
from pathlib import Path

import numpy as np
import torch

from convgen.plugin_api import DataError, LabelledDataset, PathError
from convgen_ecg.preprocess import EcgPipeline
from convgen_ecg.signals import read_record


def sample_dir(name: str = "ecgid") -> Path:
    """A folder of the bundled data: ``ecgid`` (10 people, 2–3 records each) or ``mitdb`` (two 60-s excerpts)."""
    return Path(str(resources.files("convgen_ecg") / "samples" / name))


def find_records(root: Path) -> list[Path]:
    """Every record under ``root``: WFDB headers and CSV files, in natural order."""
    found = [p for p in root.rglob("*") if p.suffix.lower() in (".hea", ".csv") and p.is_file() and not p.name.startswith(".")]
    return sorted(found, key=lambda p: [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", str(p.relative_to(root)))])


class EcgRecords(LabelledDataset):
    """Heartbeat windows ``(1, length)`` of every record under ``root``, labelled by person.

    Its samples are the ``ecg`` input pipeline's windows (`convgen_ecg.pipelines`).

    Args:
        root: the folder (default: the bundled ECG-ID sample, 10 people), or a list of
            folders whose people are pooled (named ``FOLDER/PERSON``).
        person_from: ``folder`` (a sub-folder per person), ``record`` (one person per
            record) or ``auto`` (``folder`` when records sit in sub-folders).
        people: only these people (e.g. one side of a split).
        folds, fold, exclude_fold: person-disjoint folds of the FIRST folder's people (the
            database being measured): its people (sorted, shuffled with seed 0)
            are dealt into ``folds`` groups; ``fold`` (0-based) keeps only that group, or,
            with ``exclude_fold``, every other person of that folder plus everyone in the
            further folders (extra training people). Train with ``exclude_fold: true``,
            test the same ``fold`` without it.
        max_records_per_person: use at most this many records of each person (first first).
        max_seconds: read at most this much of each record.
        session_seconds: cut each record into sessions of this length (for one long record per person).
        fs, resample, lead, band, windows, before, after, window_seconds, hop_seconds,
            max_windows, scale: the `EcgPipeline` (``max_windows`` counts per session).
        fs_csv: the sampling rate of CSV files without a time column.
    """

    pipeline_name = "ecg"

    def __init__(self, root: str | list[str] | None = None, person_from: str = "auto", people: list[str] | None = None,
                 folds: int = 5, fold: int | None = None, exclude_fold: bool = False, max_records_per_person: int | None = None, max_seconds: float | None = None,
                 session_seconds: float | None = None, fs_csv: float | None = None, fs: float = 250.0, resample: bool = True,
                 lead: int | str = 0, band=(0.5, 40.0), windows: str = "beats", before: float = 0.25, after: float = 0.45,
                 window_seconds: float = 2.0, hop_seconds: float = 1.0, max_windows: int | None = None, scale: str = "record"):  # fmt: skip
        roots = [Path(r) for r in ([root] if isinstance(root, (str, Path)) else root or [sample_dir("ecgid")])]
        self.root = roots[0]
        self.pipeline = EcgPipeline.of(fs=fs, resample=resample, lead=lead, band=band, windows=windows, before=before, after=after,
                                       window_seconds=window_seconds, hop_seconds=hop_seconds, max_windows=max_windows,
                                       scale=scale)  # fmt: skip
        self.pipeline_spec = {"name": "ecg", **dataclasses.asdict(self.pipeline), "fs_csv": fs_csv}  # recorded by training
        by_person: dict[str, list[tuple[Path, Path]]] = {}
        measured: list[str] = []  # the first folder's people, whom folds divide
        for folder in roots:
            prefix = f"{folder.name}/" if len(roots) > 1 else ""
            for person, files in _people(folder, person_from).items():
                by_person[prefix + person] = [(folder, f) for f in files]
                if folder == roots[0]:
                    measured.append(prefix + person)
        if fold is not None:
            held = person_fold(measured, folds, fold)
            by_person = {p: r for p, r in by_person.items() if (p in held) != exclude_fold and (p in measured or exclude_fold)}
        if people is not None:
            missing = sorted(set(map(str, people)) - set(by_person))
            if missing:
                raise DataError(f"no records of {', '.join(missing[:5])} under {', '.join(map(str, roots))}")
            by_person = {p: r for p, r in by_person.items() if p in set(map(str, people))}

        self.classes, self.labels, self.sessions, self.records = [], [], [], []
        windows = []
        for person, files in by_person.items():
            label = len(self.classes)
            self.classes.append(person)
            for folder, path in files[:max_records_per_person]:
                record = read_record(path, fs=fs_csv, max_seconds=max_seconds)
                self.records.append(path)
                name = (f"{folder.name}/" if len(roots) > 1 else "") + str(path.relative_to(folder).with_suffix(""))
                for session, part in _sessions(record, session_seconds):
                    prepared = self.pipeline(part)
                    windows.append(prepared.windows)
                    self.labels += [label] * len(prepared.windows)
                    self.sessions += [name + session] * len(prepared.windows)
        self.windows = torch.cat(windows)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int):
        return self.windows[index], self.labels[index]


def person_fold(people: list[str], folds: int, fold: int, seed: int = 0) -> set[str]:
    """The people of ``fold`` (0-based) of ``folds``: the sorted list shuffled with ``seed``, then cut into equal parts."""
    if not isinstance(folds, int) or not 2 <= folds <= len(people):
        raise DataError(f"folds must be between 2 and the {len(people)} people, got {folds!r}")
    if not isinstance(fold, int) or not 0 <= fold < folds:
        raise DataError(f"fold must be 0 to {folds - 1} (0-based, of folds={folds}), got {fold!r}")
    order = np.random.default_rng(seed).permutation(sorted(people))
    return set(np.array_split(order, folds)[fold].tolist())


def _people(root: Path, person_from: str) -> dict[str, list[Path]]:
    """Each person's records under one folder."""
    if not root.is_dir():
        raise PathError(f"ECG folder not found: {root}")
    records = find_records(root)
    if not records:
        raise DataError(f"no ECG records under {root}: expected WFDB records (.hea + .dat) or CSV files")
    if person_from == "auto":
        person_from = "folder" if any(r.parent != root for r in records) else "record"
    if person_from not in ("folder", "record"):
        raise DataError(f"person_from must be folder, record or auto, got {person_from!r}")
    if person_from == "folder":  # a file beside the person folders (LUDB's ludb.csv) is metadata, nobody's record
        records = [r for r in records if r.parent != root] or records
    by_person: dict[str, list[Path]] = {}
    for record in records:
        by_person.setdefault(record.parent.name if person_from == "folder" else record.stem, []).append(record)
    return by_person


def _sessions(record, seconds: float | None):
    """``("", record)``, or ``("@k", k-th part)`` for parts of ``seconds`` (a short tail is dropped)."""
    if not seconds:
        yield "", record
        return
    step = int(round(seconds * record.fs))
    if step < 2 * record.fs:
        raise DataError(f"session_seconds={seconds} is too short; a session needs a few heartbeats (use 10 or more)")
    for k, start in enumerate(range(0, record.signal.shape[1] - step + 1, step)):
        yield f"@{k}", replace(record, signal=record.signal[:, start : start + step], name=f"{record.name}@{k}")
    if record.signal.shape[1] < step:
        yield "", record
