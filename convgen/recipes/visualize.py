"""The ``visualize`` recipe: what each layer of an encoder responds to (Zeiler & Fergus).

For chosen layers and units, the top-k dataset patches that activate each unit most,
cropped by the layer's exact receptive field, drawn per layer and as an overview, and
saved (JSON for the hits, safetensors for the patches).
"""

from __future__ import annotations

import json
from pathlib import Path

from rich.console import Console
from rich.table import Table
from safetensors.torch import save_file

from convgen.io import atomic_path, atomic_write_text
from convgen.metric.inputs import dataset_and_encoder
from convgen.running import RecipeResult
from convgen.runtime import resolve_device
from convgen.visualize import figures
from convgen.nets.receptive_field import format_axes
from convgen.visualize.top_patches import top_patches

DEFAULT_UNITS = 8
"""``units: null`` shows the first 8 channels of each layer; ``units: N`` the first N; ``[i, j]`` those."""

DEFAULTS = {
    "seed": 0,
    "spatial_dims": 2,
    "dataset": {"name": "synthetic", "identities": 8, "samples_per_identity": 4},
    "encoder": {"name": "vgg", "channels": [16, 32, 64], "convs": [1, 1, 1]},
    "weights": None,
    "layers": None,
    "units": None,
    "top_k": 9,
    "distinct": True,
    "batch_size": 32,
    "device": "auto",
}


def run(config: dict, out_dir: Path) -> RecipeResult:
    dataset, encoder, spec, fp = dataset_and_encoder(config)
    tops = top_patches(
        encoder,
        dataset,
        layers=config["layers"],
        units=DEFAULT_UNITS if config["units"] is None else config["units"],
        top_k=config["top_k"],
        distinct=config["distinct"],
        batch_size=config["batch_size"],
        device=resolve_device(config["device"]),
        show_progress=True,
    )
    out_dir = Path(out_dir)
    classes = list(getattr(dataset, "classes", None) or []) or None
    written = [figures.plot_layer(out_dir / "layers" / f"{name}.png", top) for name, top in tops.items()]
    written.append(figures.plot_summary(out_dir / "summary.png", tops))

    report = {
        "encoder": spec,
        "encoder_fingerprint": fp,
        "samples": len(dataset),
        "input_size": list(next(iter(tops.values())).input_size),
        "top_k": config["top_k"],
        "distinct": config["distinct"],
        "layers": {name: top.record(classes) for name, top in tops.items()},
    }
    atomic_write_text(out_dir / "top_patches.json", json.dumps(report, indent=1) + "\n")
    written.append(out_dir / "top_patches.json")
    metadata = {"encoder_fingerprint": fp, "units": json.dumps({name: top.units for name, top in tops.items()})}
    with atomic_path(out_dir / "patches.safetensors") as tmp:
        save_file({name: top.patches.contiguous() for name, top in tops.items()}, str(tmp), metadata=metadata)
    written.append(out_dir / "patches.safetensors")

    table = Table(title=f"visualize: {spec['name']} on {config['dataset']['name']} ({len(dataset)} samples)")
    for column in ("layer", "receptive field", "stride", "units", "mean top-1", f"mean top-{config['top_k']}"):
        table.add_column(column, justify="left" if column == "layer" else "right")
    for name, top in tops.items():
        table.add_row(
            name, format_axes(top.field.size), format_axes(top.field.stride), str(len(top.units)),
            f"{float(top.activation[:, 0].mean()):.4g}", f"{float(top.activation.mean()):.4g}",
        )  # fmt: skip
    Console().print(table)
    summary = {
        "layers": list(tops),
        "samples": len(dataset),
        "units": {name: top.units for name, top in tops.items()},
        "encoder": spec["name"],
        "encoder_fingerprint": fp,
        "files": [str(Path(p).relative_to(out_dir)) for p in written],
    }
    return RecipeResult(summary, report=report, files={Path(p).stem: Path(p) for p in written})
