"""Style transfer within a memory budget, for any number of spatial axes: estimate first, then one pass or tiles.

Activations grow with the number of positions: a 128³ volume (or a long signal, or a big
image) through a small VGG already needs several GiB for one forward and backward pass. So
a run is estimated before it starts (the activation estimate plus L-BFGS's history of
steps) and refused past the budget, with the estimate and the fix. The fix for a large
input is to work tile by tile: the style's statistics (Grams) are computed once from the
whole style input (tile by tile, without gradients, averaged over positions); the
generated input is then optimised tile by tile against those fixed targets, each tile with
its own content target, and overlapping tiles are blended with linear ramps so that no
seams show. Peak memory is that of one tile, whatever the size of the input.
"""

from __future__ import annotations

import math
import resource
from pathlib import Path
from typing import Mapping, Sequence

import torch

from convgen.errors import ConfigError
from convgen.progress import bar
from convgen.style.costs import StatisticCost
from convgen.style.frozen import frozen_layers
from convgen.style.transfer import StyleTransfer, activation_bytes

LBFGS_HISTORY = 50
"""The engine's L-BFGS keeps 50 (step, gradient change) pairs, each one float32 copy of the input."""
WORKING_COPIES = 6
"""The input, its gradient, L-BFGS's direction and previous values, the clamp: a few more copies."""
SMALLEST_TILE = 16
"""Below this, the pooled layers of a VGG see too few positions to carry a texture."""


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


def estimate_bytes(encoder, shape: Sequence[int], layers: Sequence[str]) -> dict[str, int]:
    """Memory of one style transfer step on an input of ``shape`` ``(C, *spatial)``, in bytes."""
    activations = activation_bytes(encoder, shape, layers)
    optimiser = (2 * LBFGS_HISTORY + WORKING_COPIES) * math.prod(shape) * 4
    return {"activations": activations, "optimiser": optimiser, "total": activations + optimiser}


def fitting_tile(encoder, layers, budget_gb: float, largest: int, spatial_dims: int, channels: int = 1) -> int | None:
    """The largest square / cubic tile (a multiple of 8 positions per axis) whose estimate fits ``budget_gb``.

    The estimate grows with the tile, so a bisection finds it in a few estimates (a long
    signal has thousands of candidate sizes).
    """

    def fits(size: int) -> bool:
        return estimate_bytes(encoder, (channels, *[size] * spatial_dims), layers)["total"] <= budget_gb * 2**30

    low, high = SMALLEST_TILE // 8, max(SMALLEST_TILE, largest - largest % 8) // 8  # in units of 8 positions
    if not fits(8 * low):
        return None
    while low < high:  # fits(8 * low) holds throughout
        middle = (low + high + 1) // 2
        low, high = (middle, high) if fits(8 * middle) else (low, middle - 1)
    return 8 * low


def check_budget(encoder, shape: Sequence[int], layers, budget_gb: float | None, tiled: bool, hint: str = "reduce the input size") -> dict:
    """The estimate for ``shape`` ``(C, *spatial)``, or a one-line ConfigError that gives it and the fix."""
    estimate = estimate_bytes(encoder, shape, layers)
    if budget_gb is None or estimate["total"] <= budget_gb * 2**30:
        return estimate
    gib = {k: v / 2**30 for k, v in estimate.items()}
    what = f"a tile of {tuple(shape[1:])} positions" if tiled else f"an input of {tuple(shape[1:])} positions"
    tile = fitting_tile(encoder, layers, budget_gb, max(shape[1:]), len(shape) - 1, shape[0])
    fix = f"set tile={tile} (or tile=auto) to work tile by tile" if tile else "use shallower layers or a smaller encoder"
    raise ConfigError(f"style transfer on {what} needs about {gib['total']:.2f} GiB ({gib['activations']:.2f} GiB of activations "
                      f"+ {gib['optimiser']:.2f} GiB of optimiser state), over memory_budget_gb={budget_gb:g}; {fix}, "
                      f"{hint}, or raise memory_budget_gb")  # fmt: skip


def choose_tile(tile, encoder, layers, budget_gb: float | None, shape: Sequence[int]) -> int | None:
    """The configured ``tile`` checked: null (one pass), a side of at least 8 positions, or ``auto`` (the largest that fits)."""
    if tile == "auto":
        if budget_gb is None:
            raise ConfigError("tile=auto needs memory_budget_gb (the budget the tile must fit)")
        found = fitting_tile(encoder, layers, budget_gb, max(shape[1:]), len(shape) - 1, shape[0])
        if found is None:
            raise ConfigError(f"no tile of {SMALLEST_TILE} positions per axis or more fits memory_budget_gb={budget_gb:g}; "
                              "use shallower layers or raise memory_budget_gb")  # fmt: skip
        return found
    if tile is not None and (isinstance(tile, bool) or not isinstance(tile, int) or tile < 8):
        raise ConfigError(f"tile must be null (one pass), auto, or a tile side of at least 8 positions, got {tile!r}")
    return tile


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Start indices of tiles of ``tile`` positions covering ``length``, neighbours overlapping by at least ``overlap``."""
    if tile >= length:
        return [0]
    step = max(1, tile - overlap)
    return list(range(0, length - tile, step)) + [length - tile]


def blend_weights(shape: Sequence[int], overlap: int) -> torch.Tensor:
    """A separable ramp over a tile: 1 inside, falling linearly over ``overlap`` positions at each face (never 0)."""
    weights = torch.ones(())
    for n in shape:
        i = torch.arange(n, dtype=torch.float32)
        ramp = torch.minimum(torch.ones(n), torch.minimum(i + 1, n - i) / (overlap + 1)) if overlap else torch.ones(n)
        weights = weights[..., None] * ramp
    return weights


def tiles(shape: Sequence[int], tile: int, overlap: int) -> list[tuple[slice, ...]]:
    """Every tile of a spatial ``shape`` (any number of axes), as slices."""
    sizes = [min(tile, n) for n in shape]
    starts = [tile_starts(n, s, overlap) for n, s in zip(shape, sizes)]
    corners = torch.cartesian_prod(*[torch.tensor(s) for s in starts]).reshape(-1, len(shape)).tolist()
    return [tuple(slice(a, a + s) for a, s in zip(corner, sizes)) for corner in corners]


def _statistic_cost(cost) -> StatisticCost:
    if not isinstance(cost, StatisticCost):
        raise ConfigError("tile-by-tile style transfer needs a style cost with statistics (style_cost.name=gram)")
    return cost


@torch.no_grad()
def style_statistics(encoder, style: torch.Tensor, layers: Sequence[str], cost, tile: int | None) -> dict[str, torch.Tensor]:
    """Each layer's statistic of the whole ``style`` input ``(C, *spatial)``, computed tile by tile.

    A tile's statistic per position, weighted by its number of positions, summed and divided
    by the total: the statistic of the whole input up to the tiles' borders.
    """
    cost = _statistic_cost(cost)
    sums: dict[str, torch.Tensor] = {}
    counts: dict[str, int] = {}
    frozen = frozen_layers(encoder)
    for box in tiles(style.shape[1:], tile or max(style.shape[1:]), 0):
        for name, a in encoder.taps(style[(slice(None), *box)][None], list(layers), frozen).items():
            positions = a[0, 0].numel()
            sums[name] = sums.get(name, 0) + cost.statistic(a) * positions
            counts[name] = counts.get(name, 0) + positions
    return {name: sums[name] / counts[name] for name in layers}


def style_distance(encoder, x: torch.Tensor, targets: Mapping, weights: Mapping[str, float], cost, tile: int | None) -> float:
    """Weighted relative distance ``sum_l w_l ||S_l(x) - T_l||² / ||T_l||²`` of ``x``'s statistics to ``targets`` (0: equal)."""
    stats = style_statistics(encoder, x, list(weights), cost, tile)
    return float(sum(w * (stats[n] - targets[n]).pow(2).sum() / targets[n].pow(2).sum() for n, w in weights.items()))


def stylize_tiles(
    transfer: StyleTransfer,
    content: torch.Tensor,
    statistics: Mapping[str, torch.Tensor],
    tile: int,
    overlap: int,
    run: Mapping | None = None,
    seed: int = 0,
    show_progress: bool = True,
) -> tuple[torch.Tensor, list[dict]]:
    """Optimise ``content`` ``(C, *spatial)`` tile by tile against fixed style ``statistics``, blending overlaps.

    ``run`` holds `StyleTransfer.run`'s options (iterations, optimizer, value_range, ...);
    give ``value_range`` so that every tile clamps to the same range. Returns the generated
    input and one row per tile (its start and its start and final costs).
    """
    if isinstance(tile, bool) or not isinstance(tile, int) or tile < 1:
        raise ConfigError(f"tile must be a positive number of positions, got {tile!r}")
    if isinstance(overlap, bool) or not isinstance(overlap, int) or not 0 <= overlap < tile:
        raise ConfigError(f"overlap must be between 0 and tile - 1 ({tile - 1}), got {overlap!r}")
    boxes = tiles(content.shape[1:], tile, overlap)
    total = torch.zeros(content.shape)
    weight = torch.zeros(content.shape[1:])
    rows = []
    with bar("tiles", show=show_progress) as progress:
        task = progress.add_task("tiles", total=len(boxes), info="")
        for i, box in enumerate(boxes):
            part = content[(slice(None), *box)]
            result = transfer.run(part, [], seed=seed + i, show_progress=False, statistics=statistics, **dict(run or {}))
            w = blend_weights(result.generated.shape[1:], overlap)
            total[(slice(None), *box)] += result.generated * w
            weight[box] += w
            rows.append({"tile": [s.start for s in box], "start": result.start, "final": result.final})
            progress.update(task, completed=i + 1, info=f"style {result.start['style']:.3g} -> {result.final['style']:.3g}")
    return total / weight, rows
