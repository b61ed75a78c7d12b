"""Pictures of what the pipeline saw: the cleaned trace with its R peaks, and the beats cut from it."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from convgen.plugin_api import atomic_path
from convgen_ecg.preprocess import Prepared


def plot_peaks(path, prepared: Prepared, title: str, seconds: float | None = 10.0) -> Path:
    """The filtered lead (first ``seconds``) with detected R peaks, and every beat window overlaid."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fs, trace = prepared.fs, prepared.trace
    end = len(trace) if seconds is None else min(len(trace), int(seconds * fs))
    peaks = prepared.peaks[prepared.peaks < end]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(10, 5.5), gridspec_kw={"height_ratios": [1.2, 1]})
    t = np.arange(end) / fs
    top.plot(t, trace[:end], lw=0.8, color="tab:blue")
    top.plot(peaks / fs, trace[peaks], "v", color="tab:red", ms=6, label=f"R peaks ({len(prepared.peaks)} in the record)")
    top.set(xlabel="time (s)", ylabel="amplitude (robust z)", title=title)
    top.legend(loc="upper right", fontsize=8)
    windows = prepared.windows[:, 0].numpy()
    w = np.arange(windows.shape[1]) / fs
    bottom.plot(w, windows.T, lw=0.5, color="tab:gray", alpha=0.4)
    bottom.plot(w, windows.mean(0), lw=2, color="tab:red", label="mean window (the record's template)")
    bottom.set(xlabel="time in window (s)", ylabel="amplitude", title=f"{len(windows)} windows of {windows.shape[1]} samples")
    bottom.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return path
