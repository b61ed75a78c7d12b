"""The ``embed`` recipe: encode a dataset into L2-normalised embeddings, and say how well
identities separate (same- vs different-identity distances, leave-one-out 1-NN accuracy).

With ``weights=``, the file's own encoder is used (the default ``encoder`` block only
builds a random encoder when no weights are given; a block you change is checked against
the file), and the dataset reads its files through the pipeline the weights record
(`recorded_inputs`). ``embeddings.safetensors`` holds the embeddings and labels;
``samples.csv`` names each row's identity and source file."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table
from safetensors.torch import save_file

from convgen import registry
from convgen.errors import ConfigError, DataError, ModelMismatchError
from convgen.io import atomic_path, atomic_write_text
from convgen.metric.embedder import Embedder, embed_dataset
from convgen.recipes import resolve_device
from convgen.weights import build_encoder, encoder_spec, fingerprint, load_encoder

DEFAULTS = {
    "seed": 0,
    "spatial_dims": 2,
    "dataset": {"name": "synthetic"},
    "encoder": {"name": "resnet", "embedding_dim": 128},
    "weights": None,
    "pipeline": None,  # explicit changes to the weights' recorded input pipeline (pipeline.name=... pipeline.KEY=...)
    "batch_size": 32,
    "device": "auto",
}


def separation(embeddings: torch.Tensor, labels: torch.Tensor) -> dict:
    """Mean squared distance within / between identities and leave-one-out 1-NN accuracy."""
    d = torch.cdist(embeddings, embeddings).pow(2)
    same = labels[:, None] == labels[None, :]
    eye = torch.eye(len(labels), dtype=torch.bool)
    d_same, d_diff = d[same & ~eye], d[~same]
    nearest = d.masked_fill(eye, float("inf")).argmin(1)
    return {
        "mean_sq_distance_same": float(d_same.mean()) if d_same.numel() else None,
        "mean_sq_distance_different": float(d_diff.mean()) if d_diff.numel() else None,
        "nn_accuracy": float((labels[nearest] == labels).float().mean()) if len(labels) > 1 else None,
    }


def prepare_encoder(config: dict, spatial_dims: int, in_channels: int):
    """The recipe's encoder (random, or from ``weights``): ``(encoder, spec, fingerprint)``."""
    context = {"spatial_dims": spatial_dims, "in_channels": in_channels}
    if config["encoder"] is None and not config["weights"]:
        raise ConfigError("no encoder: set weights=PATH (a trained encoder.safetensors) or an encoder block (encoder.name=resnet)")
    if config["weights"]:
        expected = {**context, **config["encoder"]} if config["encoder"] else None
        encoder, spec, fp = load_encoder(config["weights"], expected)
    else:
        spec = encoder_spec(config["encoder"], **context)
        encoder = build_encoder(spec)
        fp = fingerprint(spec, encoder.state_dict())
    if (spec.get("spatial_dims"), spec.get("in_channels")) != (spatial_dims, in_channels):
        raise ModelMismatchError(
            f"encoder {spec['name']} takes spatial_dims={spec.get('spatial_dims')}, in_channels={spec.get('in_channels')} "
            f"but the data has spatial_dims={spatial_dims}, in_channels={in_channels}"
        )
    return encoder, spec, fp


def recorded_inputs(config: dict) -> tuple[dict, dict]:
    """``config`` with its dataset set from the input pipeline the weights record, and what was done.

    A dataset made by the same pipeline (say ``faces``) takes the recorded options (size,
    channels, ...), so an encoder trained at 28 × 28 is not fed 56 × 46; the recipe's
    ``pipeline`` block (``pipeline.name=faces pipeline.size=[56,46]``) changes them
    explicitly. The second value, for the run's report, holds the recorded pipeline, the
    overrides, each dataset key that changed, and a notice for weights that record none.
    """
    from convgen import pipelines
    from convgen.weights import read_pipeline

    recorded = read_pipeline(config["weights"]) if config.get("weights") else None
    overrides = config.get("pipeline") or None
    dataset, changes = pipelines.dataset_config(config["dataset"], recorded, overrides)
    info = {"pipeline": recorded, "pipeline_overrides": overrides or {}, "dataset_changes": changes}
    if config.get("weights") and not recorded:
        info["notice"] = f"notice: {config['weights']} records no input pipeline (saved by an older convgen); the dataset's settings are used as given"
    return {**config, "dataset": dataset}, info


def print_inputs(info: dict) -> None:
    """After a successful run: how the inputs followed the recorded pipeline (stderr, one line each)."""
    console = Console(stderr=True)
    for line in [f"inputs: {change}" for change in info["dataset_changes"]] + [info.get("notice")] * bool(info.get("notice")):
        console.print(line, highlight=False, soft_wrap=True)


def input_report(dataset) -> dict | None:
    """What the dataset says happened to its inputs (its optional ``input_report()``), for the run's report."""
    report = getattr(dataset, "input_report", None)
    return report() if callable(report) else None


def print_input_summary(dataset, name: str) -> None:
    """The dataset's one line for people (its optional ``input_summary()``), on stderr at the end of a run."""
    summary = getattr(dataset, "input_summary", None)
    line = summary() if callable(summary) else None
    if line:
        Console(stderr=True).print(f"{name}: {line}", highlight=False, soft_wrap=True)


def sample_sources(dataset) -> list[str] | None:
    """Each sample's source: its file (one file, one sample), its session/record name, or None."""
    for attribute in ("files", "sessions"):
        values = getattr(dataset, attribute, None)
        if values is not None and len(values) == len(dataset):
            return [str(v) for v in values]
    return None


def dataset_and_encoder(config: dict):
    """The recipe's dataset and an encoder that fits its samples: ``(dataset, encoder, spec, fingerprint)``.

    ``spatial_dims`` and ``in_channels`` come from the first sample, so one recipe serves
    1D, 2D and 3D data alike.
    """
    dataset = registry.build("dataset", config["dataset"], spatial_dims=config["spatial_dims"])
    if len(dataset) == 0:
        raise DataError(f"the dataset {config['dataset']['name']!r} is empty; check its settings or folder")
    first, _ = dataset[0]
    return (dataset, *prepare_encoder(config, first.ndim - 1, first.shape[0]))


def run(config: dict, out_dir: Path) -> dict:
    if config["weights"] and config["encoder"] == DEFAULTS["encoder"]:
        config = {**config, "encoder": None}  # the default block is for runs without weights: use the file's encoder
    config, inputs = recorded_inputs(config)
    dataset, encoder, spec, fp = dataset_and_encoder(config)
    device = resolve_device(config["device"])
    model = Embedder(encoder).to(device)
    embeddings = torch.from_numpy(embed_dataset(model, dataset, config["batch_size"], device, show_progress=True))
    labels = torch.tensor([int(label) for label in dataset.labels], dtype=torch.long)

    sources = sample_sources(dataset)
    metadata = {"encoder_fingerprint": fp, "encoder": json.dumps(spec, sort_keys=True), "classes": json.dumps(list(dataset.classes)),
                "sources": json.dumps(sources), "inputs": json.dumps(inputs, sort_keys=True)}  # fmt: skip
    with atomic_path(out_dir / "embeddings.safetensors") as tmp:
        save_file({"embeddings": embeddings.contiguous(), "labels": labels.contiguous()}, str(tmp), metadata=metadata)
    rows = io.StringIO()
    writer = csv.writer(rows, lineterminator="\n")
    writer.writerow(["row", "label", "identity", "source"])
    for i, label in enumerate(labels.tolist()):
        writer.writerow([i, label, dataset.classes[label], sources[i] if sources else ""])
    atomic_write_text(out_dir / "samples.csv", rows.getvalue())

    summary = {
        "samples": len(labels),
        "identities": len(dataset.classes),
        "embedding_dim": embeddings.shape[1],
        "encoder": spec["name"],
        "encoder_fingerprint": fp,
        **separation(embeddings, labels),
    }
    if (inputs_seen := input_report(dataset)) is not None:
        summary["input_report"] = inputs_seen
    table = Table(title=f"embed: {spec['name']} on {config['dataset']['name']}", show_header=False)
    for key, value in summary.items():
        if key != "input_report":
            table.add_row(key, f"{value:.4f}" if isinstance(value, float) else str(value))
    Console().print(table)
    print_inputs(inputs)
    print_input_summary(dataset, config["dataset"]["name"])
    return summary
