"""People never seen in training, on ECG-ID: raw beats, the untrained network, the ``ecg-train``
recipe and the shipped encoder, over 5 person-disjoint folds.

Dev protocol: ECG-ID persons 1–45 (``../shared/data/ecg/ecgid_part1``: 20-s lead-I
recordings, 2 to 22 per person, taken over days to months) dealt into 5 person-disjoint
folds (the ``ecg`` dataset's ``fold``: 9 people each). For each fold, the recipe trains
on the other four (its own validation people, for choosing the epoch, are drawn from
those too) and everything is scored on the held-out fold by
`convgen.metric.evaluation.cross_session`: each person is enrolled from ONE recording
(the L2-normalised mean of its beats' embeddings) and identified from each of their other
recordings (rank-1 among the fold's 9 people); the EER is over all pairs of recordings.

Rows:

- **raw beats**: the pipeline's windows themselves (band-passed, resampled, robustly
  scaled, aligned on the R peak), L2-normalised: template matching, no learning;
- **untrained**: the recipe's network with seeded random weights;
- **ecg-train**: the recipe's defaults, trained by ``convgen.recipes.train.run`` exactly as
  ``convgen run ecg-train dataset.root=ECGID dataset.fold=K dataset.exclude_fold=true`` does;
- **shipped encoder** (``convgen_ecg/models``): in a second table, only on the people its
  model card says it was NOT trained on (ECG-ID persons 1–10, the bundled ones), next to
  raw beats and the untrained network on the same people.

    python benchmarks/accuracy_ecg.py                     # 5 folds, the recipe's defaults
    python benchmarks/accuracy_ecg.py --quick             # the bundled sample, 1 fold, 1 epoch
    python benchmarks/accuracy_ecg.py --set augment.contrast=0 --folds 0 2   # an ablation
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from convgen_ecg import pretrained, recipes
from convgen_ecg.datasets import sample_dir

from convgen import registry
from convgen.metric import evaluation
from convgen.recipes import train
from convgen.metric.embedder import Embedder, embed_dataset
from convgen.runtime import seed_everything
from convgen.weights import build_encoder, encoder_spec, read_pipeline
from heldout import parse_set, summary, with_overrides

ROOT = Path(__file__).resolve().parent.parent / ".." / "shared" / "data" / "ecg" / "ecgid_part1"
FOLDS = 5
PROTOCOL = "enrol 1 recording, identify the others; 5 person-disjoint folds"


def score(vectors: np.ndarray, data) -> dict:
    """Rank-1 over recordings and single beats, and the EER over recording pairs (``cross_session``)."""
    vectors = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    r = evaluation.cross_session(vectors, np.asarray(data.labels), data.sessions, fpir_targets=[0.1])
    return {"rank_1": r["closed_set"]["sessions"]["rank_1"], "eer": r["verification"]["eer"],
            "beat_rank_1": r["closed_set"]["samples"]["rank_1"], "probes": r["closed_set"]["sessions"]["probes"]}  # fmt: skip


def embed(encoder: torch.nn.Module, data) -> np.ndarray:
    return embed_dataset(Embedder(encoder), data, 512, torch.device("cpu"))


def fold_scores(root: Path, fold: int, config: dict, log) -> dict:
    """``{method: scores}`` on held-out fold ``fold``."""
    block = {**config["dataset"], "root": str(root), "folds": FOLDS, "fold": fold}
    test = registry.build("dataset", {**block, "exclude_fold": False}, spatial_dims=1)
    out = {"raw beats, nearest neighbour": score(test.windows.flatten(1).double().numpy(), test)}
    seed_everything(config["seed"])
    out["ResNet, untrained"] = score(embed(build_encoder(encoder_spec(config["encoder"], spatial_dims=1, in_channels=1)), test), test)
    with tempfile.TemporaryDirectory() as tmp:
        run = {**copy.deepcopy(config), "device": "cpu", "dataset": {**block, "exclude_fold": True}}
        started = time.perf_counter()
        seed_everything(config["seed"])
        trained = train.run(run, Path(tmp))
        summary, encoder = trained.summary, trained.model.encoder
    out["ecg-train (defaults)"] = score(embed(encoder, test), test)
    log(f"fold {fold}: {len(test.classes)} people, {out['raw beats, nearest neighbour']['probes']} searches; trained "
        f"{time.perf_counter() - started:.0f} s, best epoch {summary.get('best_epoch')}; "
        + "; ".join(f"{m}: rank-1 {s['rank_1']:.3f} EER {s['eer']:.3f}" for m, s in out.items()))  # fmt: skip
    return out


def shipped_scores(root: Path, log) -> dict:
    """The shipped encoder, raw beats and the untrained network on the people its model card says it never saw."""
    card = pretrained.card()
    held = sorted(set(card["held_out"]["people"]) & {p.name for p in Path(root).iterdir() if p.is_dir()})
    recorded = {k: v for k, v in read_pipeline(pretrained.path()).items() if k in recipes.ECG and k != "name"}  # cut as in training
    data = registry.build("dataset", {**recipes.ECG, **recorded, "root": str(root), "people": held}, spatial_dims=1)
    seed_everything(0)
    untrained = build_encoder(encoder_spec(recipes.ENCODER, spatial_dims=1, in_channels=1))
    out = {"raw beats, nearest neighbour": score(data.windows.flatten(1).double().numpy(), data),
           "ResNet, untrained": score(embed(untrained, data), data),
           f"shipped encoder ({pretrained.NAME})": score(embed(pretrained.load()[0], data), data)}  # fmt: skip
    log(f"held out of the shipped encoder: {len(held)} people, {out['ResNet, untrained']['probes']} searches; "
        + "; ".join(f"{m}: rank-1 {s['rank_1']:.3f} EER {s['eer']:.3f}" for m, s in out.items()))  # fmt: skip
    return out


def rows(quick: bool = False, root: Path = ROOT, overrides: dict | None = None, folds=None, log=None) -> list[dict]:
    """The benchmark table's rows (module docstring); ``quick``: the bundled sample, fold 0, 1 epoch."""
    log = log or (lambda text: print(text, file=sys.stderr, flush=True))
    config = with_overrides(registry.recipe("ecg-train").defaults, overrides)
    if quick:
        root, config["epochs"], folds = sample_dir("ecgid"), 1, [0]
        config["split"] = {**config["split"], "val_fraction": 0.3}
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"ECG-ID not found at {root} (see ../shared/data/README.md)")
    folds = list(folds if folds is not None else range(FOLDS))
    where = "bundled ECG-ID sample (10 people)" if quick else "ECG-ID persons 1-45"
    tables = [(where, PROTOCOL, {k: fold_scores(root, k, config, log) for k in folds})]
    if pretrained.path().is_file():
        held = pretrained.card()["held_out"]["description"]
        tables.append((where, f"enrol 1 recording, identify the others; {held}", {"held out": shipped_scores(root, log)}))
    return [row for dataset, protocol, per_fold in tables for row in _rows(dataset, protocol, per_fold)]


def _rows(where: str, protocol: str, per_fold: dict) -> list[dict]:
    out = []
    for method in dict.fromkeys(m for scores in per_fold.values() for m in scores):
        got = {k: s[method] for k, s in per_fold.items() if method in s}
        out.append({
            "plugin": "ecg", "dataset": where, "protocol": protocol, "method": method, "folds": len(got),
            **summary([s["rank_1"] for s in got.values()], [s["eer"] for s in got.values()]), "fold_ids": [k for k in got],
            "beat_rank_1_mean": float(np.mean([s["beat_rank_1"] for s in got.values()])),
            "searches": int(sum(s["probes"] for s in got.values())),
        })  # fmt: skip
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", nargs="?", type=Path, default=ROOT, help="the ECG-ID folder (Person_NN/rec_M.hea)")
    parser.add_argument("--quick", action="store_true", help="the bundled sample, fold 0, 1 epoch")
    parser.add_argument("--folds", type=int, nargs="+", help="only these folds (0-4)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a recipe key (YAML value)")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args()
    overrides = parse_set(args.set)
    torch.set_num_threads(min(2, torch.get_num_threads()))
    started = time.perf_counter()
    table = rows(args.quick, args.root, overrides, args.folds)
    print(f"\nECG: {PROTOCOL}{' with ' + ', '.join(args.set) if args.set else ''} ({time.perf_counter() - started:.0f} s)")
    print(f"{'method':<42} {'rank-1':>15} {'EER':>15} {'beat rank-1':>11}  per fold (rank-1 / EER)")
    for r in table:
        per = " ".join(f"{k}:{a:.3f}/{b:.3f}" for k, a, b in zip(r["fold_ids"], r["rank_1_per_fold"], r["eer_per_fold"]))
        print(f"{r['method']:<42} {r['rank_1_mean']:.3f} ± {r['rank_1_std']:.3f}   {r['eer_mean']:.3f} ± {r['eer_std']:.3f} "
              f"{r['beat_rank_1_mean']:>11.3f}  {per}")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(table, indent=1) + "\n")


if __name__ == "__main__":
    main()
