"""Style transfer as a recipe's config describes it: the content and style read through the
registered readers (or a generated demo pair) and resized, the engine built from the
config (encoder, layers, costs, colour, resolution levels, tiles within the memory
budget), and the report written (cost history, plot, preview). The ``stylize`` recipe
(`convgen.recipes.stylize`) and the plugins' own stylize recipes run it.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from convgen import io, registry
from convgen.errors import ConfigError
from convgen.io import atomic_write_text
from convgen.metric.inputs import prepare_encoder
from convgen.runtime import resolve_device
from convgen.style import color
from convgen.style import tiled
from convgen.style.transfer import Result, StyleTransfer, check_inputs, layer_weights

DEMO_SIZE = {1: 4096, 2: 128, 3: 32}


def demo_pair(spatial_dims: int, size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A content (a few smooth blobs) and a style (oriented stripes with grain), values in [0, 1]."""
    if spatial_dims not in (1, 2, 3):
        raise ConfigError(f"spatial_dims must be 1, 2 or 3, got {spatial_dims!r}")
    gen = torch.Generator().manual_seed(seed)
    axes = torch.meshgrid(*[torch.linspace(0, 1, size)] * spatial_dims, indexing="ij")
    content = torch.zeros(axes[0].shape)
    for _ in range(4):
        centre, width = torch.rand(spatial_dims, generator=gen), 0.05 + 0.1 * torch.rand(1, generator=gen)
        content += torch.exp(-sum((a - c) ** 2 for a, c in zip(axes, centre)) / (2 * width**2))
    content = content / content.max()
    phase = sum((8 + 4 * i) * math.pi * a for i, a in enumerate(axes))
    style = 0.5 + 0.4 * torch.sin(phase) + 0.1 * torch.rand(axes[0].shape, generator=gen)
    return content[None], style.clamp(0, 1)[None]


def resize(sample: torch.Tensor, size, what: str) -> torch.Tensor:
    """``sample`` (C, *spatial) resampled to ``size`` (one int for every axis, or one per axis)."""
    if size is None:
        return sample
    dims = sample.ndim - 1
    shape = [size] * dims if isinstance(size, int) else list(size)
    if len(shape) != dims or any(not isinstance(s, int) or s < 1 for s in shape):
        raise ConfigError(f"{what} must be a positive integer or {dims} of them, got {size!r}")
    mode = {1: "linear", 2: "bilinear", 3: "trilinear"}[dims]
    return torch.nn.functional.interpolate(sample[None], size=shape, mode=mode, align_corners=False, antialias=dims == 2)[0]


def convert_channels(sample: torch.Tensor, channels: int | None, source: str) -> torch.Tensor:
    """``sample`` with ``channels`` channels: a single channel is repeated, several are averaged to one."""
    if channels is None or sample.shape[0] == channels:
        return sample
    if sample.shape[0] == 1:
        return sample.expand(channels, *sample.shape[1:]).clone()
    if channels == 1:
        return sample.mean(0, keepdim=True)
    raise ConfigError(f"{source} has {sample.shape[0]} channels; channels={channels} can only join one channel or split into one")


def _paths(value) -> list[str]:
    return [value] if isinstance(value, str) else list(value or [])


def _weights(layers, weights, what: str) -> dict[str, float]:
    if weights is None:
        return layer_weights(layers, what)
    if len(weights) != len(layers):
        raise ConfigError(f"{what}_weights needs one weight per layer ({len(layers)}), got {weights}")
    return layer_weights(dict(zip(layers, weights)), what)


def inputs(config: dict) -> tuple[torch.Tensor | None, list[torch.Tensor]]:
    """Content and style samples, read through the plugins or generated, resized as asked."""
    styles = _paths(config["style"])
    if config["content"] is None and not styles:
        size = config["size"] if isinstance(config["size"], int) else DEMO_SIZE.get(config["spatial_dims"], 64)
        content, style = demo_pair(config["spatial_dims"], size, config["seed"])
        return content, [style]
    if not styles and config["style_layers"]:
        raise ConfigError("style=PATH is missing (content alone has no style to transfer)")

    def load(path, size, what):
        return resize(convert_channels(io.read(path), config["channels"], str(path)), size, what)

    content = load(config["content"], config["size"], "size") if config["content"] else None
    return content, [load(p, config["style_size"], "style_size") for p in styles]


def transfer(config: dict, content: torch.Tensor | None, styles: list[torch.Tensor], shape=None,
             on_snapshot=None) -> tuple[Result, dict, StyleTransfer]:  # fmt: skip
    """The configured style transfer on inputs already in hand: the result, a summary and the engine.

    `run` reads its inputs through the plugins' readers; a plugin whose inputs need
    their own preparation (a recording's spectrogram) prepares them and calls this.
    ``shape`` sets the generated input's shape when there is no content (texture synthesis).
    The engine keeps its targets, so that the caller can score other inputs with
    ``engine.loss`` (e.g. the result after a lossy conversion back to the domain).
    """
    check_inputs(content, styles)
    preserve, levels = config.get("preserve_color") or "none", config.get("multires", 1)
    if preserve not in color.COLOR_MODES:
        raise ConfigError(f"preserve_color must be one of {', '.join(color.COLOR_MODES)}, got {preserve!r}")
    if isinstance(levels, bool) or not isinstance(levels, int) or levels < 1:
        raise ConfigError(f"multires must be a positive number of levels (1: full resolution only), got {levels!r}")
    original, given = content, list(styles)
    if preserve != "none" and content is None:
        raise ConfigError(f"preserve_color={preserve} keeps the content's colours, but there is no content input")
    if preserve == "luminance":
        content, styles = color.luminance(content, styles)
    elif preserve == "histogram":
        styles = [color.match_histogram(s, content) for s in styles]
    first = content if content is not None else styles[0]
    encoder, spec, fp = prepare_encoder(config, first.ndim - 1, first.shape[0])
    if not config["style_layers"]:  # checked before anything runs: a transfer with no style term would only copy the content
        raise ConfigError("style_layers is empty: there is no style to transfer; name at least one layer (`convgen run inspect` lists them)")
    content_layers = _weights(config["content_layers"] if content is not None else [], config["content_layer_weights"], "content_layer")
    style_layers = _weights(config["style_layers"], config["style_layer_weights"], "style_layer")
    cost = registry.build("style_cost", config["style_cost"])
    engine = StyleTransfer(
        encoder, content_layers, style_layers, cost, alpha=config["alpha"], beta=config["beta"], tv=config["tv"],
        normalize_layers=config["normalize_layers"], lowpass=config.get("lowpass", 0.0) if content is not None else 0.0,
        lowpass_sigma=config.get("lowpass_sigma", 4.0),
    )  # fmt: skip
    budget, hint = config["memory_budget_gb"], "reduce the input size (size=...)"
    tile = tiled.choose_tile(config.get("tile"), encoder, engine.layers, budget, tuple(first.shape))
    if tile is not None:
        if content is None:
            raise ConfigError("tile=... styles a content input tile by tile, but there is no content input")
        if levels > 1 or config["snapshot_every"]:
            raise ConfigError("tile=... works at full resolution without snapshots; set multires=1 and snapshot_every=0")
        largest = (content.shape[0], *[min(tile, n) for n in content.shape[1:]])
    else:
        largest = max([first, *styles], key=lambda t: t.numel())
        largest = tuple(shape) if shape is not None and math.prod(shape) > largest.numel() else tuple(largest.shape)
    memory = tiled.check_budget(encoder, largest, engine.layers, budget, tiled=tile is not None, hint=hint)["activations"]

    value_range = tuple(config["range"]) if config["range"] is not None else None
    if value_range is not None and len(value_range) != 2:
        raise ConfigError(f"range must be [low, high], got {config['range']!r}")
    if value_range is None:  # the inputs' range at full resolution, for every level
        inputs_ = [t for t in (content, *styles) if t is not None]
        value_range = (min(float(t.min()) for t in inputs_), max(float(t.max()) for t in inputs_))
    if preserve == "luminance":  # the result in RGB, within the inputs' range
        lo, hi = tuple(config["range"]) if config["range"] is not None else (
            min(float(t.min()) for t in (original, *given)), max(float(t.max()) for t in (original, *given)))
        to_output = lambda g: color.with_chroma(g, original).clamp(lo, hi)  # noqa: E731
    else:
        to_output = lambda g: g  # noqa: E731
    snapshot = (lambda step, g: on_snapshot(step, to_output(g))) if on_snapshot else None  # noqa: E731
    full_shape = tuple(shape) if shape is not None else tuple((content if content is not None else styles[0]).shape)
    common = dict(blend=config["style_weights"], init=config["init"], noise_ratio=config["noise_ratio"], optimizer=config["optimizer"],
                  lr=config["lr"], iterations=config["iterations"], value_range=value_range, seed=config["seed"],
                  device=resolve_device(config["device"]))  # fmt: skip
    if tile is not None:
        result = _transfer_tiles(config, engine, content, styles, tile, common)
        levels = 0  # no level to run
    start, history, initial = None, [], None
    for level in reversed(range(levels)):  # coarse to fine: each level starts from the coarser result, upsampled
        factor = 2**level
        down = lambda t: None if t is None else color.downsample(t, factor)  # noqa: E731
        size = (full_shape[0], *[n // factor for n in full_shape[1:]])
        if min(size[1:]) < 1:
            raise ConfigError(f"multires={levels} halves an input of shape {full_shape} below one sample; use fewer levels")
        engine.lowpass_sigma = config.get("lowpass_sigma", 4.0) / factor  # the same scale of the input at every level
        result = engine.run(
            down(content), [down(s) for s in styles], shape=size if shape is not None else None, start=start,
            snapshot_every=config["snapshot_every"] if snapshot and level == 0 else 0, on_snapshot=snapshot, **common,
        )  # fmt: skip
        history += [{**row, "level": level, "iteration": row["iteration"] + (levels - 1 - level) * config["iterations"]} for row in result.history]
        initial = initial or result.start
        start = None if level == 0 else color.upsample(result.generated, [n // (factor // 2) for n in full_shape[1:]])
    if levels:
        result.history, result.start = history, initial if levels == 1 else result.start
    if levels > 1:  # the cost of the usual starting point at full resolution, for a comparable start
        g0 = engine.initial(content, torch.empty(full_shape), config["init"], config["noise_ratio"], value_range,
                            torch.Generator().manual_seed(config["seed"]))  # fmt: skip
        with torch.no_grad():
            result.start = engine.loss(g0[None].to(resolve_device(config["device"])))[1]
    result.generated = to_output(result.generated)
    summary = {
        "shape": list(result.generated.shape),
        "encoder": spec["name"],
        "encoder_fingerprint": fp,
        "iterations": config["iterations"],
        "estimated_activation_memory_mib": round(memory / 2**20, 1),
        "start": result.start,
        "final": result.final,
        "style_reduction": 1 - result.final["style"] / result.start["style"] if result.start["style"] else None,
    }
    if tile is not None:
        summary.update(tile=tile, overlap=config["overlap"])
    return result, summary, engine


def _transfer_tiles(config: dict, engine: StyleTransfer, content: torch.Tensor, styles: list[torch.Tensor], tile: int,
                    common: dict) -> Result:  # fmt: skip
    """`convgen.style.tiled.stylize_tiles` on the content against the styles' blended whole-input statistics.

    The start and final costs are the tiles' costs averaged by their number of positions
    (each tile is scored against its own content); ``history`` holds those two rows.
    """
    blend = config["style_weights"] or [1.0] * len(styles)
    if len(blend) != len(styles) or any(not math.isfinite(w) or w < 0 for w in blend) or sum(blend) <= 0:
        raise ConfigError(f"style_weights must be one non-negative weight per style input ({len(styles)}), got {blend}")
    cost, layers = engine.style_cost, list(engine.style_layers)
    stats = [tiled.style_statistics(engine.encoder, s, layers, cost, tile) for s in styles]
    statistics = {n: sum(w * st[n] for w, st in zip(blend, stats)) / sum(blend) for n in layers}
    run = {k: common[k] for k in ("init", "noise_ratio", "optimizer", "lr", "iterations", "value_range", "device")}
    generated, rows = tiled.stylize_tiles(engine, content, statistics, tile, config["overlap"], run, config["seed"])
    sizes = [math.prod(min(tile, n - s) for n, s in zip(content.shape[1:], row["tile"])) for row in rows]

    def mean(which: str) -> dict:
        return {term: sum(n * row[which][term] for n, row in zip(sizes, rows)) / sum(sizes) for term in rows[0][which]}

    start, final = mean("start"), mean("final")
    history = [{"iteration": 0, **start}, {"iteration": config["iterations"], **final}]
    return Result(generated.cpu(), history, start, final)


def print_costs(result: Result, title: str) -> None:
    """The cost terms at the start and the end, as a table."""
    table = Table(title=title)
    for column in ("term", "start", "final"):
        table.add_column(column)
    for term in result.start:
        table.add_row(term, f"{result.start[term]:.4g}", f"{result.final[term]:.4g}")
    Console().print(table)


def write_report(out_dir: Path, content, styles, result, preview: bool = True) -> None:
    """The cost history (JSON and a plot) and (``preview``) a side-by-side preview of the inputs and the result."""
    from convgen.metric.plots import plot_curves
    from convgen.visualize.figures import plot_row

    atomic_write_text(out_dir / "history.json", json.dumps(result.history, indent=1) + "\n")
    terms = [t for t in ("content", "style", "tv", "lowpass") if any(row.get(t) for row in result.history)]
    plot_curves(out_dir / "costs.png", result.history, keys=terms, x="iteration", title="Style transfer costs (weighted sums of normalised layer costs)")
    if not preview:
        return
    samples = {"content": content} if content is not None else {}
    samples.update({f"style {i + 1}" if len(styles) > 1 else "style": s for i, s in enumerate(styles)})
    samples["result"] = result.generated
    plot_row(out_dir / "preview.png", samples, "stylize: inputs and result")
