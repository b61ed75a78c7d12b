"""The figure helpers every plotting module shares: a matplotlib figure on the Agg canvas,
written as a PNG atomically.

Figures are drawn on matplotlib's Agg canvas directly, without pyplot: it works headless
and never changes the backend of an interactive session. matplotlib is imported when a
figure is drawn, so the rest of convgen works without it. A PNG is written under a
temporary name beside the target and renamed over it, so a crash never leaves half an
image.
"""

from __future__ import annotations

from pathlib import Path

from convgen.errors import ConvgenError
from convgen.io import atomic_path


def new_figure(figsize: tuple[float, float], dpi: int):
    """A matplotlib ``Figure`` attached to an Agg canvas."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise ConvgenError("plots need matplotlib, which is not installed; run: pip install matplotlib") from None
    fig = Figure(figsize=figsize, dpi=dpi)
    FigureCanvasAgg(fig)
    return fig


def save_png(fig, path, dpi: int) -> Path:
    """Write ``fig`` to ``path`` as a PNG, atomically."""
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)
    return path
