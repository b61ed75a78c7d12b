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

from convgen.io import atomic_path, atomic_write_text
from convgen.metric import reports
from convgen.metric.embedder import Embedder, embed_dataset
from convgen.metric.inputs import dataset_and_encoder, input_report, print_input_summary, print_inputs, recorded_inputs, sample_sources
from convgen.running import RecipeResult
from convgen.runtime import resolve_device
from convgen.weights import Model, weights_path

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


def run(config: dict, out_dir: Path) -> RecipeResult:
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
        **reports.separation(embeddings, labels),
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
    return RecipeResult(summary, model=Model(encoder, spec, fp, inputs["pipeline"], weights_path(config)), embeddings=embeddings.numpy(),
                        labels=labels.numpy(), files={"embeddings": out_dir / "embeddings.safetensors", "samples": out_dir / "samples.csv"})  # fmt: skip
