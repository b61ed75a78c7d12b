"""Core rows of ``bench_accuracy.py``: what training buys on the generated dataset.

For each seed the ``train`` recipe learns on 64 generated people and ``evaluate`` scores 32
people it never saw (``identity_offset: 1000``), one-shot, person-disjoint: the trained
encoder beside the two baselines it reports on the same split (the samples themselves,
flattened, and the same network with random weights). Mean ± std over the seeds.
"""

from __future__ import annotations

import contextlib
import io
import json
import tempfile
from pathlib import Path

import numpy as np

DATASET = "synthetic 2D, 32 unseen people"
TINY = ["encoder.channels=[8, 16]", "encoder.strides=[1, 2]", "encoder.embedding_dim=32", "device=cpu"]


def run_seed(seed: int, epochs: int, work: Path) -> list[dict]:
    """One train + evaluate pair; the evaluate report's comparison rows."""
    from convgen import config
    from convgen.running import run_recipe

    with contextlib.redirect_stdout(io.StringIO()):  # the recipes' own tables; the driver prints the summary
        return _run_seed(seed, epochs, work, config, run_recipe)


def _run_seed(seed, epochs, work, config, run_recipe):
    common = [f"seed={seed}", f"dataset.seed={seed}", "dataset.size=24"]
    recipe, resolved = config.resolve("train", [*common, f"epochs={epochs}", *TINY])
    run_recipe(recipe, resolved, work / f"train{seed}")
    recipe, resolved = config.resolve("evaluate", [*common, f"weights={work / f'train{seed}' / 'encoder.safetensors'}",
                                                   "device=cpu", "episodes.episodes=20"])  # fmt: skip
    run_recipe(recipe, resolved, work / f"evaluate{seed}")
    return json.loads((work / f"evaluate{seed}" / "report.json").read_text())["comparison"]


def rows(quick: bool = False) -> list[dict]:
    seeds, epochs = ([0, 1], 3) if quick else ([0, 1, 2, 3, 4], 10)
    per_method: dict[str, list[dict]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for seed in seeds:
            for row in run_seed(seed, epochs, Path(tmp)):
                if "skipped" not in row:
                    per_method.setdefault(row["method"], []).append(row)
    names = {"samples": "samples, nearest neighbour (no learning)", "untrained": "resnet, random weights",
             "trained": f"resnet + triplet, {epochs} epochs"}  # fmt: skip
    out = []
    for method, found in per_method.items():
        rank_1 = [r["rank_1"] for r in found if r["rank_1"] is not None]
        eer = [r["eer"] for r in found]
        out.append({
            "plugin": "core", "dataset": DATASET, "protocol": found[0]["protocol"], "method": names.get(method, method),
            "rank_1_mean": float(np.mean(rank_1)) if rank_1 else None, "rank_1_std": float(np.std(rank_1)) if rank_1 else None,
            "eer_mean": float(np.mean(eer)), "eer_std": float(np.std(eer)), "folds": len(found),
        })  # fmt: skip
    return out
