"""Figures of top patches: one grid per layer (units × top-k), and a shallow-to-deep overview.

A cell draws one patch by its number of spatial axes: 2D as an image (grey for one
channel, RGB for three, the first channel otherwise), 3D as three orthogonal slices
through the patch's centre side by side, 1D as the trace of every channel. Each patch is
scaled on its own (min to max of its values), as in Zeiler & Fergus, since activations
of different units are not comparable in input units. The part of a receptive field
outside the input (NaN) is drawn in a blue-grey that no grey pixel has, or left blank
for traces. Figures use matplotlib's Agg canvas and are written atomically
(see `convgen.plotting`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from convgen.plotting import new_figure, save_png
from convgen.visualize.top_patches import LayerTop

DPI = 100
OUTSIDE = (0.62, 0.66, 0.74)  # outside the input: a blue-grey, told apart from grey pixels
GAP = (1.0, 1.0, 1.0)  # between the three slices of a 3D cell


def _axes(values) -> str:
    return "×".join(str(v) for v in values)


def _rgb(plane: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """``(C, h, w)`` to an RGB image ``(h, w, 3)`` in [0, 1], NaN drawn in `OUTSIDE`."""
    colour = plane[:3] if plane.shape[0] == 3 else np.repeat(plane[:1], 3, axis=0)
    scaled = (colour - lo) / (hi - lo) if hi > lo else np.full_like(colour, 0.5)
    image = np.moveaxis(np.clip(scaled, 0.0, 1.0), 0, -1)
    outside = np.isnan(colour).any(axis=0)
    image[outside] = OUTSIDE
    return image


def _limits(patch: np.ndarray) -> tuple[float, float]:
    shown = patch[:3] if patch.shape[0] == 3 else patch[:1]
    valid = shown[np.isfinite(shown)]
    return (float(valid.min()), float(valid.max())) if valid.size else (0.0, 1.0)


def _slices(patch: np.ndarray) -> np.ndarray:
    """The three orthogonal slices through a 3D patch's centre, side by side, as one RGB image."""
    lo, hi = _limits(patch)
    d, h, w = patch.shape[1:]
    planes = [patch[:, d // 2], patch[:, :, h // 2], patch[:, :, :, w // 2]]
    images = [_rgb(p, lo, hi) for p in planes]
    height = max(im.shape[0] for im in images)
    gap = max(1, height // 12)
    width = sum(im.shape[1] for im in images) + 2 * gap
    canvas = np.empty((height, width, 3))
    canvas[:] = GAP
    x = 0
    for im in images:
        top = (height - im.shape[0]) // 2
        canvas[top : top + im.shape[0], x : x + im.shape[1]] = im
        x += im.shape[1] + gap
    return canvas


def _image(patch: np.ndarray) -> np.ndarray:
    if patch.ndim == 4:
        return _slices(patch)
    return _rgb(patch, *_limits(patch))


def _fit(image_hw, box):
    """The extent ``(left, right, bottom, top)`` of an ``h × w`` image fitted, centred and
    undistorted, into ``box = (x, y, width, height)`` (inches, y downwards)."""
    h, w = image_hw
    x, y, bw, bh = box
    scale = min(bw / w, bh / h)
    left, top = x + (bw - w * scale) / 2, y + (bh - h * scale) / 2
    return left, left + w * scale, top + h * scale, top


def _draw(ax, patch: np.ndarray, box, ylim=None) -> None:
    """One patch ``(C, *spatial)`` into ``box`` of the figure's single axes."""
    if patch.ndim == 2:  # 1D: every channel's trace; NaN (outside the input) stays blank
        from matplotlib.patches import Rectangle

        x, y, bw, bh = box
        lo, hi = ylim if ylim is not None else (_row_ylim(patch[None]) or (-1.0, 1.0))
        n = patch.shape[1]
        xs = x + (np.arange(n) + 0.5) / n * bw
        for c, trace in enumerate(patch):
            ax.plot(xs, y + bh - (trace - lo) / (hi - lo) * bh, lw=0.8, color=f"C{c % 10}")
        ax.add_patch(Rectangle((x, y), bw, bh, fill=False, lw=0.4, edgecolor="0.6"))
    else:
        image = _image(patch)
        ax.imshow(image, extent=_fit(image.shape[:2], box), interpolation="nearest")


def _row_ylim(patches: np.ndarray):
    """Shared y-limits of a row of 1D patches, with a little margin."""
    valid = patches[np.isfinite(patches)]
    if not valid.size:
        return None
    lo, hi = float(valid.min()), float(valid.max())
    pad = 0.05 * (hi - lo) if hi > lo else 0.5
    return lo - pad, hi + pad


CELL = {1: (1.5, 0.9), 2: (1.0, 1.0), 3: (2.4, 0.95)}  # inches per cell's drawing, by spatial dims
LABEL_H = 0.16  # inches above each cell for its caption
LEFT, RIGHT, BOTTOM = 1.0, 0.1, 0.1


def _write(fig, path) -> Path:
    return save_png(fig, path, DPI)


class _Grid:
    """``rows × cols`` cells on one axes measured in inches (y downwards).

    Drawing every cell into one axes, rather than one axes per cell, keeps a large
    grid quick to draw.
    """

    def __init__(self, rows: int, cols: int, spatial_dims: int, title_lines: int = 2, scale: float = 1.0):
        self.cell_w, self.cell_h = (scale * v for v in CELL[spatial_dims])
        self.framed = spatial_dims == 3  # three slices per cell: a frame tells cells apart
        self.pitch_w, self.pitch_h = self.cell_w + (0.2 if self.framed else 0.08), self.cell_h + LABEL_H + 0.06
        top = 0.2 + 0.18 * title_lines
        width, height = LEFT + cols * self.pitch_w + RIGHT, top + rows * self.pitch_h + BOTTOM
        self.fig = new_figure((width, height), DPI)
        grid_w, grid_h = cols * self.pitch_w, rows * self.pitch_h
        self.ax = self.fig.add_axes((LEFT / width, BOTTOM / height, grid_w / width, grid_h / height))
        self.ax.set_xlim(0, grid_w)
        self.ax.set_ylim(grid_h, 0)
        self.ax.set_axis_off()

    def box(self, row: int, col: int):
        return col * self.pitch_w + (self.pitch_w - self.cell_w) / 2, row * self.pitch_h + LABEL_H, self.cell_w, self.cell_h

    def draw(self, row: int, col: int, patch: np.ndarray, caption: str, ylim=None) -> None:
        box = self.box(row, col)
        _draw(self.ax, patch, box, ylim)
        if self.framed:
            from matplotlib.patches import Rectangle

            self.ax.add_patch(Rectangle(box[:2], box[2], box[3], fill=False, lw=0.4, edgecolor="0.6"))
        self.ax.text(box[0] + box[2] / 2, box[1] - 0.02, caption, fontsize=6, ha="center", va="bottom")

    def label(self, row: int, text: str) -> None:
        y = row * self.pitch_h + LABEL_H + self.cell_h / 2
        self.ax.text(-0.08, y, text, fontsize=7, ha="right", va="center", clip_on=False)


def plot_layer(path, top: LayerTop) -> Path:
    """One layer's grid: a row per unit, its top-k patches left to right, best first.

    Each cell is captioned with its activation and sample index; 1D rows share y-limits.
    """
    patches = top.patches.float().numpy()
    units, m = patches.shape[:2]
    dims = len(top.input_size)
    grid = _Grid(units, max(m, 1), dims)
    for u in range(units):
        ylim = _row_ylim(patches[u]) if dims == 1 else None
        for j in range(m):
            grid.draw(u, j, patches[u, j], f"{float(top.activation[u, j]):.3g} (#{int(top.sample[u, j])})", ylim)
        grid.label(u, f"unit {top.units[u]}")
    f = top.field
    outside = "blank" if dims == 1 else "blue-grey"
    slices = "; each cell: slices through the centre normal to axes 1 | 2 | 3" if dims == 3 else ""
    grid.fig.suptitle(
        f"{top.layer}: top {m} input patches per unit (activation, sample #)\n"
        f"receptive field {_axes(f.size)}, stride {_axes(f.stride)}; {outside} = outside the input{slices}",
        fontsize=8,
    )
    return _write(grid.fig, path)


def plot_summary(path, tops: dict[str, LayerTop]) -> Path:
    """Shallow to deep at a glance: a row per layer, each unit's best patch left to right."""
    layers = list(tops.values())
    cols = max(len(t.units) for t in layers)
    dims = len(layers[0].input_size)
    grid = _Grid(len(layers), cols, dims, title_lines=1)
    for r, top in enumerate(layers):
        if top.patches.shape[1]:
            best = top.patches[:, 0].float().numpy()
            for u, unit in enumerate(top.units):
                grid.draw(r, u, best[u], f"unit {unit}: {float(top.activation[u, 0]):.3g}")
        grid.label(r, f"{top.layer}\nRF {_axes(top.field.size)}")
    grid.fig.suptitle("Best input patch of each unit, shallow (top) to deep (bottom)", fontsize=8)
    return _write(grid.fig, path)


def plot_row(path, samples: dict, title: str, scale: float = 2.5) -> Path:
    """Whole samples ``(C, *spatial)`` side by side, captioned by their keys (e.g. content | style | result)."""
    items = [(name, t.detach().float().cpu().numpy()) for name, t in samples.items()]
    dims = items[0][1].ndim - 1
    grid = _Grid(1, len(items), dims, title_lines=1, scale=scale)
    for col, (name, array) in enumerate(items):
        grid.draw(0, col, array, name)
    grid.fig.suptitle(title, fontsize=8)
    return _write(grid.fig, path)
