"""The ``train`` recipe: learn a similarity function on identity-disjoint splits.

Identities are split so that validation measures one-shot performance on people the
encoder never saw: after each epoch the validation identities are embedded and the
verification EER / AUC and one-shot rank-1 accuracy are logged; the encoder with the best
validation EER is kept as ``encoder.safetensors``. When the identities are a few classes
(two diagnoses), ``split.by: sample`` keeps every class on both sides and holds out
samples instead. ``augment`` (off by default) randomly flips, shifts, rotates, zooms
and changes the contrast of training samples only.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from rich.console import Console
from rich.table import Table
from torch.utils.data import Subset

from convgen import distributed, registry
from convgen.config import dump
from convgen.engine import Trainer
from convgen.errors import ConfigError
from convgen.io import atomic_write_text
from convgen.metric.augment import DEFAULTS as AUGMENT
from convgen.metric.augment import Augment, Augmented
from convgen.metric.embed import dataset_and_encoder
from convgen.metric.embedder import Embedder
from convgen.metric.embedder import embed_dataset
from convgen.metric.evaluate import validation_metrics
from convgen.metric.sampling import PKSampler, identity_split, stratified_split
from convgen.recipes import resolve_device

DEFAULTS = {
    "seed": 0,
    "spatial_dims": 2,
    "dataset": {"name": "synthetic", "identities": 64, "samples_per_identity": 6},
    "split": {"val_fraction": 0.25, "by": "identity"},
    "augment": dict(AUGMENT),
    "encoder": {"name": "resnet", "embedding_dim": 128},
    "weights": None,
    "loss": {"name": "triplet", "margin": 0.2, "mining": "all"},
    "sampler": {"p": 8, "k": 4},
    "optimizer": {"name": "adamw", "lr": 0.003, "weight_decay": 0.0001, "momentum": 0.9},
    "scheduler": {"name": "cosine", "warmup_epochs": 0, "milestones": [], "gamma": 0.1},
    "epochs": 10,
    "grad_clip": 5.0,
    "batch_size": 64,
    "device": "auto",
}


SPLITTERS = {"identity": identity_split, "sample": stratified_split}


def run(config: dict, out_dir: Path, resume: bool = False) -> dict:
    dataset, encoder, spec, _ = dataset_and_encoder(config)
    labels = [int(label) for label in dataset.labels]
    by = config["split"].get("by", "identity")
    if by not in SPLITTERS:
        raise ConfigError(f"split.by must be {' or '.join(SPLITTERS)}, got {by!r}")
    train_idx, val_idx = SPLITTERS[by](labels, config["split"]["val_fraction"], seed=config["seed"])
    model = Embedder(encoder)
    loss_fn = registry.build("loss", config["loss"], embedding_dim=spec.get("embedding_dim"))
    sampler = PKSampler([labels[i] for i in train_idx], seed=config["seed"] * 101 + distributed.env_rank(), **config["sampler"])
    val_set = Subset(dataset, val_idx)
    val_labels = [labels[i] for i in val_idx]
    device = resolve_device(config["device"])

    def validate(m):
        embeddings = embed_dataset(m, val_set, config["batch_size"], next(m.parameters()).device)
        return {f"val_{k}": v for k, v in validation_metrics(embeddings, val_labels).items()}

    trainer = Trainer(
        model, loss_fn, spec=spec, out_dir=out_dir, epochs=config["epochs"], optimizer=config["optimizer"],
        scheduler=config["scheduler"], grad_clip=config["grad_clip"], device=device, validate=validate,
        monitor="val_eer", mode="min", run_id=hashlib.sha256(dump("train", config).encode()).hexdigest(),
    )  # fmt: skip
    split = {"train": sorted({dataset.classes[labels[i]] for i in train_idx}), "val": sorted({dataset.classes[l] for l in val_labels})}
    if by == "sample":  # the same identities on both sides: say how many samples each side holds
        split.update(by="sample", train_samples=len(train_idx), val_samples=len(val_idx))
    if distributed.env_rank() == 0:
        atomic_write_text(out_dir / "split.json", json.dumps(split, indent=1) + "\n")
    augment = Augment(**config["augment"])
    train_set = Subset(dataset, train_idx)
    result = trainer.fit(Augmented(train_set, augment) if augment.active else train_set, sampler, resume=resume)
    distributed.teardown()
    last = result["history"][-1]
    summary = {
        "train_identities": len(split["train"]), "val_identities": len(split["val"]),
        "epochs": result["epochs"], "best_val_eer": result["best"],
        **{k: v for k, v in last.items() if k != "epoch"},
    }  # fmt: skip
    table = Table(title=f"train: {spec['name']} with {config['loss']['name']} on {config['dataset']['name']}", show_header=False)
    for key, value in summary.items():
        table.add_row(key, f"{value:.4g}" if isinstance(value, float) else str(value))
    if distributed.env_rank() == 0:  # the group is gone by now: ask torchrun's variable
        Console().print(table)
    return summary
