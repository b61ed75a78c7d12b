"""ECG records from files: WFDB (through the ``wfdb`` package) and CSV, checked on the way in.

A `Record` is the physical signal (leads × samples, in the record's units, usually mV)
with its sampling rate and lead names. Everything that would poison training or an
enrolment downstream — a header whose data file is missing, a truncated data file, NaN
samples, a flat line — is a one-line `DataError` here, naming the file.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from convgen.plugin_api import DataError, PathError

SUFFIXES = [".hea", ".csv"]
# A lead whose standard deviation is below this (in mV) carries no heartbeat: an unplugged electrode.
FLAT_MV = 1e-3


@dataclass
class Record:
    """One ECG recording: ``signal`` (leads, samples) float64, ``fs`` in Hz, ``leads`` names."""

    signal: np.ndarray
    fs: float
    leads: list[str]
    name: str

    @property
    def seconds(self) -> float:
        return self.signal.shape[1] / self.fs

    def lead(self, lead: int | str) -> np.ndarray:
        """One lead by index or name (``"MLII"``, ``"ECG I"``)."""
        if isinstance(lead, str):
            if lead not in self.leads:
                raise DataError(f"{self.name}: no lead {lead!r}; it has {', '.join(self.leads)}")
            return self.signal[self.leads.index(lead)]
        if not -len(self.leads) <= lead < len(self.leads):
            raise DataError(f"{self.name}: lead {lead} does not exist; it has {len(self.leads)} lead(s): {', '.join(self.leads)}")
        return self.signal[lead]


def read_record(path, fs: float | None = None, max_seconds: float | None = None) -> Record:
    """A WFDB record (``.hea``, or the record name without suffix) or a CSV file.

    CSV: one column per lead, an optional header row; a first column named ``time`` (or
    ``t``, in seconds) gives the sampling rate, otherwise pass ``fs``. ``max_seconds``
    reads only the start of long records.
    """
    path = Path(path)
    if path.is_dir():
        raise PathError(f"{path} is a folder; give one record (a WFDB .hea file or a CSV file)")
    if path.suffix.lower() == ".csv":
        record = _read_csv(path, fs)
    else:
        record = _read_wfdb(path.with_suffix("") if path.suffix.lower() == ".hea" else path, max_seconds)
    if max_seconds is not None:
        record.signal = record.signal[:, : int(round(max_seconds * record.fs))]
    check(record)
    return record


def check(record: Record) -> None:
    """Refuse a record that no model should see: empty, NaN / infinite, or a flat line."""
    s = record.signal
    if s.size == 0 or s.shape[1] < 2:
        raise DataError(f"{record.name}: the record holds no samples")
    if not np.isfinite(s).all():
        bad = int((~np.isfinite(s)).sum())
        raise DataError(f"{record.name}: {bad} sample(s) are NaN or infinite (missing data); crop or repair the record")
    flat = [name for name, row in zip(record.leads, s) if row.std() < FLAT_MV]
    if len(flat) == len(record.leads):
        raise DataError(f"{record.name}: the signal is a flat line (no heartbeat); check the electrodes or the file")


def _check_header_fs(header: Path, fs) -> None:
    """The record line's sampling rate must be a positive number: wfdb reads an unparsable
    one (``-360``) as its default 250 Hz, which would silently scale every heart rate."""
    written = None
    for line in header.read_text(encoding="latin-1").splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            parts = line.split()
            written = parts[2].split("/")[0] if len(parts) > 2 else None
            break
    try:
        value = float(written) if written is not None else float(fs)
    except (TypeError, ValueError):
        value = math.nan
    if not (math.isfinite(value) and 0 < value <= 1e6) or (written is not None and not math.isclose(value, float(fs))):
        raise DataError(f"{header}: its sampling rate {written or fs!r} is not a positive number of Hz; fix the header's record line")


def _read_wfdb(base: Path, max_seconds: float | None) -> Record:
    import wfdb

    header = base.with_suffix(".hea")
    if not header.is_file():
        raise PathError(f"WFDB header not found: {header}; give the record's .hea file (its .dat beside it)")
    try:
        meta = wfdb.rdheader(str(base))
    except Exception as exc:
        raise DataError(f"{header}: not a readable WFDB header ({_reason(exc)})") from None
    for data_file in sorted(set(meta.file_name or [])):
        if not (header.parent / data_file).is_file():
            raise DataError(f"{header}: its data file {data_file} is missing; a WFDB record is the .hea header plus the files it names")
    if not meta.sig_len or not meta.n_sig:
        raise DataError(f"{header}: the header describes no signal")
    _check_header_fs(header, meta.fs)
    sampto = min(meta.sig_len, int(round(max_seconds * meta.fs))) if max_seconds else None
    try:
        record = wfdb.rdrecord(str(base), sampto=sampto) if sampto else wfdb.rdrecord(str(base))
    except Exception as exc:
        raise DataError(f"{header}: cannot read the signal ({_reason(exc)}); the data file may be truncated or corrupt") from None
    signal = record.p_signal
    expected = sampto or meta.sig_len
    if signal is None or signal.shape[0] < expected:
        got = 0 if signal is None else signal.shape[0]
        raise DataError(f"{header}: the data file holds {got} of the {expected} samples the header promises; it is truncated")
    return Record(np.asarray(signal, dtype=np.float64).T.copy(), float(meta.fs), list(meta.sig_name), str(header))


def _read_csv(path: Path, fs: float | None) -> Record:
    if not path.is_file():
        raise PathError(f"file not found: {path}")
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            rows = [row for row in csv.reader(handle) if row and not row[0].startswith("#")]
    except (UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"{path}: not a text CSV file ({str(exc)[:120]}); expected numbers, one column per lead") from None
    if not rows:
        raise DataError(f"{path}: the CSV file is empty")
    header = None
    try:
        float(rows[0][0])
    except ValueError:
        header, rows = [h.strip() for h in rows[0]], rows[1:]
    try:
        values = np.array([[float(v) if v.strip() else np.nan for v in row] for row in rows], dtype=np.float64)
    except ValueError as exc:
        raise DataError(f"{path}: not a numeric CSV ({exc}); expected one column per lead") from None
    if values.ndim != 2 or len(values) < 2:
        raise DataError(f"{path}: expected rows of equal length, one column per lead, and at least 2 rows")
    names = header or [f"lead {i}" for i in range(values.shape[1])]
    if names[0].lower() in ("time", "t", "time_s", "seconds"):
        step = np.diff(values[:, 0])
        if not len(step) or step.min() <= 0:
            raise DataError(f"{path}: the time column must increase")
        fs_found = 1.0 / float(np.median(step))
        if fs is not None and abs(fs_found - fs) > 0.01 * fs:
            raise DataError(f"{path}: its time column says {fs_found:g} Hz but fs={fs:g} was given")
        fs, values, names = fs_found, values[:, 1:], names[1:]
    if fs is None:
        raise DataError(f"{path}: the CSV has no time column, so its sampling rate is unknown; set fs (Hz)")
    if values.shape[1] == 0:
        raise DataError(f"{path}: no lead columns")
    return Record(values.T.copy(), float(fs), names, str(path))


def write_csv(path, signal: np.ndarray, fs: float, leads: list[str] | None = None) -> Path:
    """A trace as CSV with a ``time`` column, written atomically (readable by `read_record`)."""
    from convgen.plugin_api import atomic_path

    signal = np.atleast_2d(np.asarray(signal, dtype=np.float64))
    names = leads or [f"lead {i}" for i in range(len(signal))]
    time = np.arange(signal.shape[1]) / fs
    with atomic_path(Path(path)) as tmp:
        with open(tmp, "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(["time", *names])
            writer.writerows([[f"{t:.6f}", *(f"{v:.6g}" for v in row)] for t, row in zip(time, signal.T)])
    return Path(path)


def _reason(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def read_sample(path) -> torch.Tensor:
    """The reader registered for ``.hea``: every lead of the record, ``(leads, samples)`` in mV.

    For ECG-aware use (one lead, filtered, at one rate, cut into beats) the ECG recipes
    run the record through `convgen_ecg.preprocess.EcgPipeline` instead.
    """
    return torch.as_tensor(read_record(path).signal, dtype=torch.float32)
