"""3D style transfer within a memory budget: estimate first, then one pass or overlapping tiles.

3D activations grow with the number of voxels: a 128³ region through a small VGG already
needs several GiB for one forward and backward pass. So a run is estimated before it
starts (the core's activation estimate plus L-BFGS's history of steps) and refused past
``memory_budget_gb``, with the estimate and the fix. The fix for a whole volume is the
patch-wise mode: the style's Gram statistics are computed once from the whole style
volume (tile by tile, without gradients, averaged over positions); the generated volume
is then optimised tile by tile against those fixed targets, each tile with its own content
target, and overlapping tiles are blended with linear ramps so that no seams show. Peak
memory is that of one tile, whatever the size of the volume.
"""

from __future__ import annotations

import math
import resource
from pathlib import Path
from typing import Sequence

import torch

from convgen.plugin_api import ConfigError, StyleTransfer, activation_bytes, content_cost, frozen_layers, progress_bar

LBFGS_HISTORY = 50
"""The core's L-BFGS keeps 50 (step, gradient change) pairs, each one float32 copy of the input."""
WORKING_COPIES = 6
"""The input, its gradient, L-BFGS's direction and previous values, the clamp: a few more copies."""


def peak_rss_mib() -> float:
    """This process's peak resident memory in MiB.

    ``VmHWM`` belongs to the running program alone; ``ru_maxrss`` (the fallback off Linux)
    keeps the high-water mark of the process that forked it across ``exec``.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def estimate_bytes(encoder, shape: Sequence[int], layers: Sequence[str]) -> dict:
    """Memory of one style transfer step on an input of ``shape`` ``(C, *spatial)``, in bytes."""
    activations = activation_bytes(encoder, shape, layers)
    optimiser = (2 * LBFGS_HISTORY + WORKING_COPIES) * math.prod(shape) * 4
    return {"activations": activations, "optimiser": optimiser, "total": activations + optimiser}


def fitting_tile(encoder, layers, budget_gb: float, largest: int, smallest: int = 16) -> int | None:
    """The largest cubic tile (a multiple of 8 voxels) whose estimate fits ``budget_gb``."""
    for size in range(max(smallest, largest - largest % 8), smallest - 1, -8):
        if estimate_bytes(encoder, (1, size, size, size), layers)["total"] <= budget_gb * 2**30:
            return size
    return None


def check_budget(encoder, shape, layers, budget_gb: float, tiled: bool) -> dict:
    """The estimate for ``shape``, or a ConfigError that gives it and the fix."""
    estimate = estimate_bytes(encoder, shape, layers)
    if budget_gb is None or estimate["total"] <= budget_gb * 2**30:
        return estimate
    gib = {k: v / 2**30 for k, v in estimate.items()}
    what = f"a tile of {tuple(shape[1:])} voxels" if tiled else f"a region of {tuple(shape[1:])} voxels"
    tile = fitting_tile(encoder, layers, budget_gb, max(shape[1:]))
    fix = (f"set tile={tile} (or tile=auto) for patch-wise processing" if tile else "use shallower layers or a smaller encoder") + \
        ", set region.size smaller, or raise memory_budget_gb"  # fmt: skip
    raise ConfigError(f"3D style transfer on {what} needs about {gib['total']:.2f} GiB ({gib['activations']:.2f} GiB of activations "
                      f"+ {gib['optimiser']:.2f} GiB of optimiser state), over memory_budget_gb={budget_gb:g}; {fix}")  # fmt: skip


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Start indices of tiles of ``tile`` voxels covering ``length``, neighbours overlapping by at least ``overlap``."""
    if tile >= length:
        return [0]
    step = max(1, tile - overlap)
    return list(range(0, length - tile, step)) + [length - tile]


def blend_weights(shape: Sequence[int], overlap: int) -> torch.Tensor:
    """A separable ramp over a tile: 1 inside, falling linearly over ``overlap`` voxels at each face (never 0)."""
    weights = torch.ones(())
    for n in shape:
        i = torch.arange(n, dtype=torch.float32)
        ramp = torch.minimum(torch.ones(n), torch.minimum(i + 1, n - i) / (overlap + 1)) if overlap else torch.ones(n)
        weights = weights[..., None] * ramp
    return weights


def tiles(shape: Sequence[int], tile: int, overlap: int) -> list[tuple[slice, ...]]:
    """Every tile of a ``(X, Y, Z)`` volume, as slices."""
    sizes = [min(tile, n) for n in shape]
    starts = [tile_starts(n, s, overlap) for n, s in zip(shape, sizes)]
    return [tuple(slice(a, a + s) for a, s in zip(corner, sizes))
            for corner in torch.cartesian_prod(*[torch.tensor(s) for s in starts]).reshape(-1, 3).tolist()]  # fmt: skip


@torch.no_grad()
def style_statistics(encoder, style: torch.Tensor, layers: Sequence[str], cost, tile: int | None) -> dict[str, torch.Tensor]:
    """Each layer's Gram statistic of the whole ``style`` volume ``(1, X, Y, Z)``, computed tile by tile.

    A tile's Gram per position, weighted by its number of positions, summed and divided by
    the total: the statistic of the whole volume up to the tiles' borders.
    """
    if not hasattr(cost, "statistic"):
        raise ConfigError("patch-wise style transfer needs a style cost with statistics (style_cost.name=gram)")
    sums: dict[str, torch.Tensor] = {}
    counts: dict[str, int] = {}
    frozen = frozen_layers(encoder)
    for box in tiles(style.shape[1:], tile or max(style.shape[1:]), 0):
        for name, a in encoder.taps(style[(slice(None), *box)][None], list(layers), frozen).items():
            positions = a[0, 0].numel()
            sums[name] = sums.get(name, 0) + cost.statistic(a) * positions
            counts[name] = counts.get(name, 0) + positions
    return {name: sums[name] / counts[name] for name in layers}


def gram_distance(encoder, volume: torch.Tensor, targets: dict, weights: dict, cost, tile: int | None) -> float:
    """Weighted relative Gram distance ``sum_l w_l ||S_l(volume) - S_l(style)||² / ||S_l(style)||²`` (0: the style's statistics)."""
    stats = style_statistics(encoder, volume, list(weights), cost, tile)
    return float(sum(w * (stats[n] - targets[n]).pow(2).sum() / targets[n].pow(2).sum() for n, w in weights.items()))


class FixedStyle(StyleTransfer):
    """A `StyleTransfer` whose style targets are given, computed once from the whole style volume.

    Each tile then only sets its own content target: the style volume is never read again,
    and the tiles of one volume all pull towards the same statistics.
    """

    def __init__(self, *args, statistics: dict[str, torch.Tensor], **kwargs):
        super().__init__(*args, **kwargs)
        if not hasattr(self.style_cost, "distance"):
            raise ConfigError("patch-wise style transfer needs a style cost with statistics (style_cost.name=gram)")
        self.statistics = statistics

    @torch.no_grad()
    def set_targets(self, content, styles=(), blend=None) -> None:
        self._content = {}
        if self.content_layers:
            for name, a in self.taps(content[None], list(self.content_layers)).items():
                self._content[name] = a
                value = float(content_cost(torch.zeros_like(a), a))
                self._scale[("content", name)] = value if value > 0 and self.normalize_layers else 1.0  # a blank tile: nothing to keep
        self._style = {name: [(1.0, self.statistics[name])] for name in self.style_layers}
        for name in self.style_layers:
            target = self.statistics[name]
            zero = target.new_zeros(1, target.shape[0], 1)
            self._scale[("style", name)] = self._normaliser(self.style_cost.distance(zero, target), name)


def stylize_tiles(engine: FixedStyle, content: torch.Tensor, tile: int, overlap: int, run: dict, seed: int) -> tuple[torch.Tensor, list]:
    """Optimise ``content`` ``(1, X, Y, Z)`` tile by tile, blending overlaps: the generated volume and per-tile costs."""
    if overlap < 0 or overlap >= tile:
        raise ConfigError(f"overlap must be between 0 and tile - 1 ({tile - 1}), got {overlap}")
    boxes = tiles(content.shape[1:], tile, overlap)
    total = torch.zeros(content.shape[1:])
    weight = torch.zeros(content.shape[1:])
    rows = []
    with progress_bar("tiles") as progress:
        task = progress.add_task("tiles", total=len(boxes), info="")
        for i, box in enumerate(boxes):
            result = engine.run(content[(slice(None), *box)], [], seed=seed + i, show_progress=False, **run)
            w = blend_weights(result.generated.shape[1:], overlap)
            total[box] += result.generated[0] * w
            weight[box] += w
            rows.append({"tile": [s.start for s in box], "start": result.start, "final": result.final})
            progress.update(task, completed=i + 1, info=f"style {result.start['style']:.3g} -> {result.final['style']:.3g}")
    return (total / weight)[None], rows
