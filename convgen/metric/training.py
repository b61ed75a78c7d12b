"""Training an encoder from a recipe's config: identities split so that validation measures
people the encoder never saw (by the protocol a user will run), P×K batches, the metric
loss, augmentation of training samples only, and the best epoch kept by validation rank-1
(the starting weights, scored as epoch 0, included).
The ``train`` recipe (`convgen.recipes.train`) is this plus its table."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from torch.utils.data import Subset

from convgen import distributed, pipelines, registry
from convgen.config import dump
from convgen.errors import ConfigError
from convgen.io import atomic_write_text
from convgen.metric.augment import Augment, Augmented
from convgen.metric.embedder import Embedder, embed_dataset
from convgen.metric.engine import Trainer, lr_factor
from convgen.metric.inputs import dataset_and_encoder, input_report
from convgen.metric.reports import validation_metrics, validation_protocol
from convgen.metric.sampling import PKSampler, identity_split, stratified_split
from convgen.runtime import resolve_device
from convgen.weights import read_pipeline

SPLITTERS = {"identity": identity_split, "sample": stratified_split}


def recorded_pipeline(dataset, config: dict) -> dict | None:
    """The input pipeline saved with the encoder: the dataset's, else that of the weights fine-tuned from."""
    return pipelines.of_dataset(dataset) or (read_pipeline(config["weights"]) if config.get("weights") else None)


def fit(config: dict, out_dir: Path, resume: bool = False) -> tuple[dict, object, dict]:
    """Train as the ``train`` recipe's ``config`` says, writing into ``out_dir``:
    ``(summary, dataset, spec)``. See the ``train`` recipe for what is split, validated and kept."""
    dataset, encoder, spec, _ = dataset_and_encoder(config)
    labels = [int(label) for label in dataset.labels]
    sessions = getattr(dataset, "sessions", None)
    by = config["split"].get("by", "identity")
    if by not in SPLITTERS:
        raise ConfigError(f"split.by must be {' or '.join(SPLITTERS)}, got {by!r}")
    extra = {"sessions": sessions} if by == "identity" else {}
    train_idx, val_idx = SPLITTERS[by](labels, config["split"]["val_fraction"], seed=config["seed"], **extra)
    model = Embedder(encoder)
    loss_fn = registry.build("loss", config["loss"], embedding_dim=spec.get("embedding_dim"), classes=len(dataset.classes))
    sampler = PKSampler([labels[i] for i in train_idx], seed=config["seed"] * 101 + distributed.env_rank(),
                        sessions=None if sessions is None else [sessions[i] for i in train_idx], **config["sampler"])  # fmt: skip
    val_set = Subset(dataset, val_idx)
    val_labels = [labels[i] for i in val_idx]
    val_sessions = None if sessions is None or by == "sample" else [sessions[i] for i in val_idx]
    device = resolve_device(config["device"])

    def validate(m):
        embeddings = embed_dataset(m, val_set, config["batch_size"], next(m.parameters()).device)
        return {f"val_{k}": v for k, v in validation_metrics(embeddings, val_labels, sessions=val_sessions).items()}

    # people: the best rank-1 of the protocol, ties broken by EER; classes (split by sample): the best EER
    monitor = {"monitor": "val_eer", "mode": "min"} if by == "sample" else {
        "monitor": "val_rank_1", "mode": "max", "tie_break": ("val_eer", "min")}  # fmt: skip

    trainer = Trainer(
        model, loss_fn, spec=spec, out_dir=out_dir, epochs=config["epochs"], optimizer=config["optimizer"],
        scheduler=config["scheduler"], grad_clip=config["grad_clip"], device=device, validate=validate,
        **monitor, keep=config.get("keep", "best"), run_id=hashlib.sha256(dump("train", config).encode()).hexdigest(),
    )  # fmt: skip
    trainer.pipeline = recorded_pipeline(dataset, config)
    split = {"train": sorted({dataset.classes[labels[i]] for i in train_idx}), "val": sorted({dataset.classes[l] for l in val_labels})}
    split["val_protocol"] = validation_protocol(val_labels, val_sessions)
    if by == "sample":  # the same identities on both sides: say how many samples each side holds
        split.update(by="sample", train_samples=len(train_idx), val_samples=len(val_idx))
    augment = Augment(**config["augment"])  # its settings and the scheduler's name are checked before split.json is written
    lr_factor(0, 1, name=config["scheduler"]["name"])
    if distributed.env_rank() == 0:
        atomic_write_text(out_dir / "split.json", json.dumps(split, indent=1) + "\n")
    train_set = Subset(dataset, train_idx)
    result = trainer.fit(Augmented(train_set, augment) if augment.active else train_set, sampler, resume=resume)
    distributed.teardown()
    last = result["history"][-1]
    best = next((row for row in result["history"] if row["epoch"] == result["best_epoch"]), last)  # epoch 0: the start
    summary = {
        "train_identities": len(split["train"]), "val_identities": len(split["val"]),
        "epochs": result["epochs"], "val_protocol": last.get("val_protocol"),
        "selected_by": "last epoch" if config.get("keep") == "last" else result["monitor"],
        "best_epoch": result["best_epoch"], "best_val_rank_1": best.get("val_rank_1"), "best_val_eer": best.get("val_eer"),
        **{k: v for k, v in last.items() if k not in ("epoch", "val_protocol")},
    }  # fmt: skip
    if result["best_epoch"] == 0:
        summary["kept"] = (f"epoch 0, the starting weights ({'those of weights=' if config.get('weights') else 'random'}): "
                           f"no trained epoch beat their {result['monitor']}")  # fmt: skip
    if (inputs_seen := input_report(dataset)) is not None:
        summary["input_report"] = inputs_seen
    return summary, dataset, spec
