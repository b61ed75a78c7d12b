"""From a raw record to encoder inputs: band-pass, resample, R peaks, beat-centred windows.

The steps are those of the ECG-biometrics literature: a 0.5–40 Hz band-pass removes
baseline wander and mains hum; resampling to one rate makes records from different
devices comparable; R peaks (wfdb's XQRS detector) anchor one window per heartbeat, or
fixed windows cover the trace regardless of detection; each record is scaled by its own
robust amplitude, so that electrode contact and gain do not tell people apart, and
(``scale: window``) each window by its own RMS, so that a recording's overall amplitude,
which drifts between days, does not either.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from fractions import Fraction

import numpy as np
import torch
from scipy import signal as sps

from convgen.plugin_api import ConfigError, DataError
from convgen_ecg.signals import Record

WINDOWS = ("beats", "fixed")
SCALES = ("record", "window")


def bandpass(x: np.ndarray, fs: float, low: float = 0.5, high: float = 40.0, order: int = 3) -> np.ndarray:
    """Zero-phase Butterworth band-pass (forward and backward, so peaks do not move)."""
    nyquist = fs / 2
    high = min(high, 0.95 * nyquist)
    if not 0 < low < high:
        raise ConfigError(f"band must be [low, high] Hz with 0 < low < high < fs/2 ({nyquist:g}), got [{low}, {high}]")
    sos = sps.butter(order, [low, high], btype="bandpass", fs=fs, output="sos")
    if x.shape[-1] <= 3 * (2 * order + 1):
        raise DataError(f"a record of {x.shape[-1]} samples is too short to filter; it needs at least a second of signal")
    return sps.sosfiltfilt(sos, x, axis=-1)


def resample(x: np.ndarray, fs: float, target: float) -> np.ndarray:
    """Polyphase resampling from ``fs`` to ``target`` Hz (anti-aliased)."""
    if fs == target:
        return x
    ratio = Fraction(target / fs).limit_denominator(1000)
    return sps.resample_poly(x, ratio.numerator, ratio.denominator, axis=-1)


def r_peaks(x: np.ndarray, fs: float) -> np.ndarray:
    """R-peak sample indices: wfdb's XQRS on the filtered lead, moved to the local extremum."""
    from wfdb import processing

    logging.getLogger("wfdb").setLevel(logging.WARNING)
    found = processing.xqrs_detect(sig=x, fs=fs, verbose=False)
    if len(found) == 0:
        return np.zeros(0, dtype=np.int64)
    radius = max(1, int(0.05 * fs))
    # the R wave may point down on some leads: follow the record's dominant polarity
    peaks = processing.correct_peaks(x, found, search_radius=radius, smooth_window_size=max(3, int(0.02 * fs)), peak_dir="compare")
    return np.unique(np.asarray(peaks, dtype=np.int64))


def robust_scale(x: np.ndarray) -> np.ndarray:
    """Centre on the median and divide by the record's spread (1.4826 × MAD ≈ σ for noise)."""
    centred = x - np.median(x)
    spread = 1.4826 * np.median(np.abs(centred))
    if spread < 1e-9:
        raise DataError("the filtered signal is a flat line; no heartbeat to cut")
    return centred / spread


@dataclass
class Prepared:
    """A record after the pipeline: the cleaned lead at ``fs``, its R peaks, and the windows."""

    trace: np.ndarray
    fs: float
    peaks: np.ndarray
    starts: np.ndarray
    windows: torch.Tensor  # (n, 1, length)


@dataclass(frozen=True)
class EcgPipeline:
    """How one record becomes windows ``(n, 1, length)``; the same for training, enrolment and search.

    Args:
        fs: the sampling rate every record is brought to (Hz).
        resample: bring records of another rate to ``fs``; ``false`` makes a different
            rate an error (for data that must not be resampled).
        lead: which lead (index or name).
        band: the band-pass in Hz, ``[low, high]``.
        windows: ``beats`` (one window per R peak) or ``fixed`` (regular windows).
        before, after: seconds before and after each R peak (``beats``).
        window_seconds, hop_seconds: length and step of ``fixed`` windows.
        max_windows: keep at most this many windows per record (evenly spread).
        scale: ``record`` (every window in the record's robust units) or ``window``
            (each window also divided by its own RMS: only the beat's shape remains).
    """

    fs: float = 250.0
    resample: bool = True
    lead: int | str = 0
    band: tuple[float, float] = (0.5, 40.0)
    windows: str = "beats"
    before: float = 0.25
    after: float = 0.45
    window_seconds: float = 2.0
    hop_seconds: float = 1.0
    max_windows: int | None = None
    scale: str = "record"

    @classmethod
    def of(cls, **options) -> "EcgPipeline":
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(options) - known)
        if unknown:
            raise ConfigError(f"unknown ECG pipeline key(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        pipeline = cls(**{k: tuple(v) if k == "band" else v for k, v in options.items()})
        if pipeline.windows not in WINDOWS:
            raise ConfigError(f"windows must be one of {', '.join(WINDOWS)}, got {pipeline.windows!r}")
        if pipeline.scale not in SCALES:
            raise ConfigError(f"scale must be one of {', '.join(SCALES)}, got {pipeline.scale!r}")
        if min(pipeline.before, pipeline.after) < 0 or pipeline.before + pipeline.after <= 0 or pipeline.window_seconds <= 0 or pipeline.hop_seconds <= 0:
            raise ConfigError("window lengths (before, after, window_seconds, hop_seconds) must be positive")
        return pipeline

    @property
    def length(self) -> int:
        """Samples per window."""
        seconds = self.before + self.after if self.windows == "beats" else self.window_seconds
        return int(round(seconds * self.fs))

    def clean(self, record: Record) -> np.ndarray:
        """The chosen lead, band-passed, at ``fs``, robustly scaled."""
        if record.fs != self.fs and not self.resample:
            raise DataError(f"{record.name}: sampled at {record.fs:g} Hz but fs={self.fs:g} and resample=false; "
                            "set fs to the record's rate or allow resampling")  # fmt: skip
        x = bandpass(record.lead(self.lead), record.fs, *self.band)
        try:
            return robust_scale(resample(x, record.fs, self.fs))
        except DataError as exc:
            raise DataError(f"{record.name}: {exc}") from None

    def __call__(self, record: Record) -> Prepared:
        trace = self.clean(record)
        peaks = r_peaks(trace, self.fs)
        n = self.length
        if self.windows == "beats":
            starts = peaks - int(round(self.before * self.fs))
        else:
            starts = np.arange(0, len(trace) - n + 1, max(1, int(round(self.hop_seconds * self.fs))))
        starts = starts[(starts >= 0) & (starts + n <= len(trace))]
        if len(starts) == 0:
            what = "no heartbeat was detected" if self.windows == "beats" else f"it is shorter than one window ({n / self.fs:g} s)"
            raise DataError(f"{record.name}: nothing to cut: {what}")
        if self.max_windows and len(starts) > self.max_windows:
            starts = starts[np.linspace(0, len(starts) - 1, self.max_windows).round().astype(int)]
        windows = np.stack([trace[s : s + n] for s in starts])[:, None, :]
        if self.scale == "window":
            windows = windows / np.maximum(np.sqrt((windows**2).mean(-1, keepdims=True)), 1e-9)
        return Prepared(trace, self.fs, peaks, starts, torch.as_tensor(windows, dtype=torch.float32))
