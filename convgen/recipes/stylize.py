"""The ``stylize`` recipe: style transfer between any two samples a plugin can read.

Inputs are read and the result written through the registered readers and writers (the
file suffix decides), so a domain plugin only adds file types and defaults. Without
``content`` and ``style`` files the recipe makes a generated pair (smooth blobs styled
with oriented stripes) in ``spatial_dims`` dimensions, so it runs anywhere as a demo.
"""

from __future__ import annotations

from pathlib import Path

import torch
from rich.console import Console

from convgen import io
from convgen.running import RecipeResult
from convgen.style.from_config import inputs, print_costs, transfer, write_report

DEFAULTS = {
    "seed": 0,
    "content": None,
    "style": None,
    "style_weights": None,
    "channels": None,
    "spatial_dims": 2,
    "size": None,
    "style_size": None,
    "encoder": {"name": "vgg", "channels": [32, 64, 128, 128], "convs": [1, 1, 1, 1], "pool": "avg", "embedding_dim": 128},
    "weights": None,
    "content_layers": ["relu3_1"],
    "content_layer_weights": None,
    "style_layers": ["relu1_1", "relu2_1", "relu3_1", "relu4_1"],
    "style_layer_weights": None,
    "style_cost": {"name": "gram"},
    "alpha": 1.0,
    "beta": 100.0,
    "tv": 0.0,
    "lowpass": 0.0,
    "lowpass_sigma": 4.0,
    "normalize_layers": True,
    "preserve_color": "none",
    "multires": 1,
    "init": "content+noise",
    "noise_ratio": 0.5,
    "optimizer": "lbfgs",
    "lr": None,
    "iterations": 200,
    "range": None,
    "snapshot_every": 0,
    "memory_budget_gb": 8.0,
    "tile": None,
    "overlap": 8,
    "device": "auto",
    "output": "stylized.npy",
}


def run(config: dict, out_dir: Path) -> RecipeResult:
    content, styles = inputs(config)
    output = out_dir / config["output"]
    suffix = "".join(Path(config["output"]).suffixes) or ".npy"
    snapshots = out_dir / "snapshots"

    def snapshot(step: int, sample: torch.Tensor) -> None:
        io.write(snapshots / f"iter_{step:05d}{suffix}", sample)

    result, summary, _ = transfer(config, content, styles, on_snapshot=snapshot)
    io.write(output, result.generated)
    write_report(out_dir, content, styles, result)
    first = content if content is not None else styles[0]
    print_costs(result, f"stylize: {summary['encoder']} on input {tuple(first.shape)}")
    Console().print(f"wrote {output}")
    files = {"output": output, "history": out_dir / "history.json", "costs": out_dir / "costs.png", "preview": out_dir / "preview.png"}
    return RecipeResult({"output": str(output), **summary}, files=files)
