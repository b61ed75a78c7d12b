"""Figures for evaluation reports: ROC curve, distance histograms and training curves.

Each function draws one 6 x 4 inch figure at 120 dpi and writes it as a PNG atomically,
headless and without pyplot (`convgen.plotting`).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import numpy as np

from convgen.errors import DataError
from convgen.plotting import new_figure, save_png

FIGSIZE = (6.0, 4.0)
DPI = 120
FAR_FLOOR = 1e-4


def _figure():
    return new_figure(FIGSIZE, DPI)


def _save(fig, path) -> Path:
    fig.tight_layout()
    return save_png(fig, path, DPI)


def _vector(x, name: str) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    x = np.asarray(x)
    if x.ndim != 1:
        raise DataError(f"{name} must be 1-D, got shape {x.shape}")
    return x


def plot_roc(path, far, tar, eer=None, label: str | None = None) -> Path:
    """ROC curve (TAR against FAR on a log axis) from `convgen.metric.evaluation.roc`.

    The FAR axis runs from 1e-4, or from the smallest measured FAR (1 / different pairs) when
    there are fewer than 10 000 different pairs and nothing to see below it, to 1; points at
    FAR = 0 are drawn at the left edge. ``eer`` (a rate, or the ``(eer,
    threshold)`` tuple of ``evaluation.eer``) is marked at FAR = EER, TAR = 1 - EER. The dotted
    line is chance (TAR = FAR). Read off: the higher the curve at low FAR, the better.
    """
    far, tar = _vector(far, "far").astype(float), _vector(tar, "tar").astype(float)
    if far.shape != tar.shape or len(far) < 2:
        raise DataError(f"far and tar must have the same length >= 2, got {far.shape} and {tar.shape}; pass roc()'s output")
    positive = far[far > 0]
    lo = max(FAR_FLOOR, float(positive.min())) if positive.size else FAR_FLOOR
    lo = min(lo, 0.1) / 1.5  # a little room left of the first measurable FAR
    fig = _figure()
    ax = fig.add_subplot()
    keep = far > 0
    # The first point with FAR > 0 is joined to the vertical rise at the left edge.
    x, y = far[keep], tar[keep]
    if keep.any() and (~keep).any():
        x, y = np.r_[lo, x], np.r_[tar[~keep].max(), y]
    ax.plot(x, y, lw=2, label=label or "ROC")
    grid = np.logspace(math.log10(lo), 0, 100)
    ax.plot(grid, grid, ls=":", color="grey", label="chance")
    if eer is not None:
        rate = float(eer[0] if isinstance(eer, (tuple, list)) else eer)
        ax.plot([max(rate, lo)], [1.0 - rate], "o", color="crimson", ms=7, label=f"EER = {rate:.2%}", zorder=3)
    ax.set_xscale("log")
    ax.set_xlim(lo, 1.0)
    ax.set_ylim(0.0, 1.02)
    ax.set_xlabel("false accept rate (FAR, different pairs accepted)")
    ax.set_ylabel("true accept rate (TAR)")
    ax.set_title("Verification ROC")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="lower right")
    return _save(fig, path)


def plot_distance_histograms(path, distances, same, threshold: float | None = None) -> Path:
    """Histograms of same-identity and different-identity pair distances, with tau marked.

    Both are normalised to unit area (different pairs usually outnumber same pairs by far),
    on shared bins. Well-separated humps mean a threshold exists; their overlap is the error.
    """
    d = _vector(distances, "distances").astype(float)
    s = _vector(same, "same").astype(bool)
    if len(d) != len(s):
        raise DataError(f"distances has {len(d)} pairs but same has {len(s)}; pass one flag per distance")
    if not np.isfinite(d).all():
        raise DataError("distances hold NaN or infinite values; drop those pairs or fix the embeddings")
    if s.all() or not s.any():
        raise DataError("need both same and different pairs to compare their distances")
    fig = _figure()
    ax = fig.add_subplot()
    bins = np.histogram_bin_edges(d, bins=min(60, max(10, int(math.sqrt(len(d))))))
    ax.hist(d[s], bins=bins, density=True, alpha=0.55, color="tab:blue", label=f"same ({int(s.sum()):,} pairs)")
    ax.hist(d[~s], bins=bins, density=True, alpha=0.55, color="tab:orange", label=f"different ({int((~s).sum()):,} pairs)")
    if threshold is not None:
        ax.axvline(float(threshold), color="black", ls="--", lw=1.5, label=f"τ = {float(threshold):.3g}")
    ax.set_xlabel("squared distance d (accept as same when d ≤ τ)")
    ax.set_ylabel("density")
    ax.set_title("Pair distance distributions")
    ax.legend()
    return _save(fig, path)


def _is_loss(key: str) -> bool:
    return "loss" in key.lower()


def plot_curves(path, rows: Sequence[dict], keys: Sequence[str] = ("loss",), x: str = "epoch", title: str = "Training curves") -> Path:
    """Training curves from metric-log rows (one dict per logged step or epoch).

    Each key is a line against ``x`` (the row's position when a row lacks ``x``); rows
    without a finite value for a key are skipped for that key. When losses and other
    metrics are mixed, keys containing "loss" use the left axis and the rest (accuracy,
    EER, ...) a second, right axis.
    """
    keys = [keys] if isinstance(keys, str) else list(keys)
    if not keys:
        raise DataError("plot_curves needs at least one key to plot, e.g. keys=('loss',)")
    series = {}
    for key in keys:
        xs, ys = [], []
        for position, row in enumerate(rows):
            value = row.get(key)
            if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                at = row.get(x, position)
                xs.append(at if isinstance(at, (int, float)) else position)
                ys.append(float(value))
        if xs:
            series[key] = (xs, ys)
    if not series:
        seen = sorted({k for row in rows for k in row})
        raise DataError(f"none of the rows has a number for {keys}; the rows have keys {seen}")
    fig = _figure()
    left = fig.add_subplot()
    mixed = any(_is_loss(k) for k in series) and not all(_is_loss(k) for k in series)
    right = left.twinx() if mixed else None
    colors = iter(f"C{i}" for i in range(10 * len(series)))
    for key, (xs, ys) in series.items():
        ax = right if (mixed and not _is_loss(key)) else left
        marker = "o" if len(xs) <= 30 else None
        ax.plot(xs, ys, marker=marker, ms=3, lw=1.5, color=next(colors), ls="-" if ax is left else "--", label=key)
    left.set_xlabel(x)
    if all(float(v).is_integer() for xs, _ in series.values() for v in xs):
        from matplotlib.ticker import MaxNLocator

        left.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole numbers
    left_keys = [k for k in series if not mixed or _is_loss(k)]
    left.set_ylabel(", ".join(left_keys))
    handles, names = left.get_legend_handles_labels()
    if right is not None:
        right.set_ylabel(", ".join(k for k in series if not _is_loss(k)))
        more_handles, more_names = right.get_legend_handles_labels()
        handles, names = handles + more_handles, names + more_names
    left.set_title(title)
    left.grid(True, alpha=0.3)
    left.legend(handles, names, loc="best")
    return _save(fig, path)
