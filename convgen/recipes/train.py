"""The ``train`` recipe: learn a similarity function on identity-disjoint splits.

Identities are split so that validation measures performance on people the encoder
never saw, by the protocol a user will run: where the dataset records sessions
(``sessions``: recordings, takes, photo sessions), each validation person is enrolled
from one session and identified from the others (never within a session); otherwise
one-shot (one enrolled sample per person). After each epoch the validation people are
embedded, the protocol's rank-1 and EER are logged (``val_protocol`` names it), and the
encoder with the best validation rank-1 (ties broken by the lower EER) is kept as
``encoder.safetensors``; the starting weights, scored first as epoch 0, compete too, so a
run in which training only hurts keeps its start (``best_epoch`` 0, and ``kept`` says so). P×K batches draw a person's samples from different sessions
where there are several. When the identities are a few classes (two diagnoses),
``split.by: sample`` keeps every class on both sides, holds out samples instead, and
keeps the encoder with the lowest validation EER. ``keep: last`` keeps the final epoch
instead (validation is still scored and logged): with a schedule that ends well (cosine to
zero), the safer choice when the validation people are too few to rank epochs. ``augment`` (off by default) randomly flips, shifts, rotates, zooms
and changes the contrast of training samples only.
"""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.table import Table

from convgen import distributed
from convgen.metric.augment import DEFAULTS as AUGMENT
from convgen.metric.inputs import print_input_summary
from convgen.metric.training import fit
from convgen.running import RecipeResult
from convgen.weights import load_model

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
    "keep": "best",
    "grad_clip": 5.0,
    "batch_size": 64,
    "device": "auto",
}


def run(config: dict, out_dir: Path, resume: bool = False) -> RecipeResult:
    summary, dataset, spec = fit(config, out_dir, resume)
    weights = out_dir / "encoder.safetensors"
    table = Table(title=f"train: {spec['name']} with {config['loss']['name']} on {config['dataset']['name']}", show_header=False)
    for key, value in summary.items():
        if key != "input_report":
            table.add_row(key, f"{value:.4g}" if isinstance(value, float) else str(value))
    if distributed.env_rank() == 0:  # the group is gone by now: ask torchrun's variable
        Console().print(table)
        print_input_summary(dataset, config["dataset"]["name"])
    return RecipeResult(summary, model=load_model(weights) if weights.is_file() else None,
                        files={"weights": weights, "split": out_dir / "split.json"})  # fmt: skip
