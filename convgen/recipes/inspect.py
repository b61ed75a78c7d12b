"""The ``inspect`` recipe: every tap of an encoder with its output shape and receptive field."""

from __future__ import annotations

import json
from pathlib import Path

from rich.console import Console
from rich.table import Table

from convgen.io import atomic_write_text
from convgen.nets.receptive_field import format_axes
from convgen.running import RecipeResult
from convgen.weights import Model, build_encoder, encoder_spec, fingerprint

DEFAULTS = {
    "encoder": {"name": "vgg", "embedding_dim": 128},
    "spatial_dims": 2,
    "in_channels": 1,
    "input_size": 64,
}


def run(config: dict, out_dir: Path) -> RecipeResult:
    spec = encoder_spec(config["encoder"], spatial_dims=config["spatial_dims"], in_channels=config["in_channels"])
    encoder = build_encoder(spec)
    shapes = encoder.output_shapes(config["input_size"])
    fields = encoder.receptive_fields()
    layers = [
        {"layer": name, "shape": list(shapes[name]), "rf_size": list(f.size), "rf_stride": list(f.stride), "rf_offset": list(f.offset)}
        for name, f in fields.items()
    ]
    atomic_write_text(out_dir / "layers.json", json.dumps(layers, indent=1) + "\n")

    table = Table(title=f"{spec['name']} (spatial_dims={spec['spatial_dims']}, input {config['input_size']})")
    for column in ("layer", "output (C, *spatial)", "receptive field", "stride", "offset"):
        table.add_column(column)
    for row in layers:
        table.add_row(row["layer"], str(tuple(row["shape"])), format_axes(row["rf_size"]), format_axes(row["rf_stride"]), format_axes(row["rf_offset"]))
    Console().print(table)
    params = sum(p.numel() for p in encoder.parameters())
    summary = {"encoder": spec["name"], "parameters": params, "layers": len(layers)}
    model = Model(encoder, spec, fingerprint(spec, encoder.state_dict()), None)
    return RecipeResult(summary, report={"layers": layers}, model=model, files={"layers": out_dir / "layers.json"})
