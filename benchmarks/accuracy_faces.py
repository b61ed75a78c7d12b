"""Faces from scratch across datasets: the ``faces-train`` recipe trained on ORL and tested one-shot on Georgia Tech,
and the reverse, beside Eigenfaces fitted on the same training set and raw pixels.

ORL (``../shared/data/faces/orl``, 40 people × 10 grey crops, 112 × 92) and the reduced
Georgia Tech set (``../shared/data/faces/gt``, 50 people × 15 grey crops, 40 × 30, more
pose and lighting) share no one, so each direction is person-disjoint by construction.
Every photo becomes the recipe's input (``faces`` dataset, no detection, 32 × 26 grey),
and the baselines see exactly the inputs the network sees (``--set dataset.size=...``,
``dataset.detect=true dataset.margin=0.1`` change both).
Scores: `convgen.metric.reports.report` on the test set, one-shot identification (one
enrolled photo per person, the others searched, rank-1) and the all-pairs EER.

Rows, per direction:

- **Eigenfaces**: PCA (50 components) fitted on the training set's pixels, test photos
  projected, cosine nearest neighbour (Turk & Pentland 1991);
- **pixels**: the test photos themselves, mean-removed, cosine;
- **faces-train**: the recipe's defaults (``convgen run faces-train dataset.root=ORL``),
  one run per seed; its validation people (for the epoch) come from the training set.

    python benchmarks/accuracy_faces.py                 # 3 seeds per direction
    python benchmarks/accuracy_faces.py --quick         # 1 seed, 10 epochs
    python benchmarks/accuracy_faces.py --set augment.contrast=0.5 --seeds 0
    python benchmarks/accuracy_faces.py --train-on ORL --set dataset.size=[56,46] --set epochs=150 --set keep=best   # the defaults before issue 16

The imported dlib encoder is not a row here: it was trained on millions of other faces
(bench_faces.py measures it).
"""

from __future__ import annotations

import argparse
import copy
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from convgen import registry
from convgen.metric import reports
from convgen.recipes import evaluate, train
from convgen.metric.embedder import Embedder, embed_dataset
from convgen.runtime import seed_everything
from heldout import parse_set, summary, with_overrides

DATA = Path(__file__).resolve().parent.parent / ".." / "shared" / "data" / "faces"
SETS = {"ORL": "orl", "Georgia Tech": "gt"}
COMPONENTS = 50


def faces(root: Path, config: dict):
    return registry.build("dataset", {**config["dataset"], "root": str(root)}, spatial_dims=2)


def pixels(data) -> np.ndarray:
    return np.stack([data[i][0].reshape(-1).float().numpy() for i in range(len(data))]).astype(np.float64)


def score(vectors: np.ndarray, labels, seed: int = 0) -> tuple[float, float]:
    vectors = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    config = {**evaluate.DEFAULTS, "seed": seed, "open_set_fraction": 1.0}
    result, _ = reports.report(vectors, labels, config)
    return result["identification_one_shot"]["rank_1"], result["verification"]["eer"]


def eigenfaces(train_x: np.ndarray, test_x: np.ndarray, components: int = COMPONENTS) -> np.ndarray:
    mean = train_x.mean(0)
    _, _, vt = np.linalg.svd(train_x - mean, full_matrices=False)
    return (test_x - mean) @ vt[:components].T


def direction(train_name: str, test_name: str, config: dict, seeds, log) -> dict:
    """``{method: [(rank_1, eer) per seed]}`` for training on ``train_name``, testing on ``test_name``."""
    train_root, test_root = DATA / SETS[train_name], DATA / SETS[test_name]
    train_set, test_set = faces(train_root, config), faces(test_root, config)
    labels = np.array(test_set.labels)
    train_x, test_x = pixels(train_set), pixels(test_set)
    out = {f"Eigenfaces ({COMPONENTS} components, fitted on {train_name})": [score(eigenfaces(train_x, test_x), labels, s) for s in seeds],
           "pixels, cosine": [score(test_x - test_x.mean(1, keepdims=True), labels, s) for s in seeds]}  # fmt: skip
    trained = []
    for seed in seeds:
        run = {**copy.deepcopy(config), "seed": seed, "device": "cpu"}
        run["dataset"] = {**run["dataset"], "root": str(train_root)}
        seed_everything(seed)  # as `convgen run` does: the same seed gives the same network, whatever ran before
        started = time.perf_counter()
        with tempfile.TemporaryDirectory() as tmp:
            encoder = train.run(run, Path(tmp)).model.encoder
        trained.append(score(embed_dataset(Embedder(encoder), test_set, 64, torch.device("cpu")), labels, seed))
        log(f"{train_name} -> {test_name}, seed {seed}: faces-train rank-1 {trained[-1][0]:.3f} EER {trained[-1][1]:.3f} "
            f"({time.perf_counter() - started:.0f} s)")  # fmt: skip
    out["faces-train (from scratch)"] = trained
    return out


DIRECTIONS = (("ORL", "Georgia Tech"), ("Georgia Tech", "ORL"))


def rows(quick: bool = False, overrides: dict | None = None, seeds=None, log=None, train_on=None) -> list[dict]:
    """Both directions' rows; ``quick``: one seed, 10 epochs."""
    if not all((DATA / d).is_dir() for d in SETS.values()):
        raise FileNotFoundError(f"ORL and Georgia Tech faces not found under {DATA} (see ../shared/data/README.md)")
    log = log or (lambda text: print(text, file=sys.stderr, flush=True))
    config = with_overrides(registry.recipe("faces-train").defaults, overrides)
    if quick:
        config["epochs"] = 10
    seeds = list(seeds if seeds is not None else ([0] if quick else [0, 1, 2]))
    out = []
    for train_name, test_name in (d for d in DIRECTIONS if train_on is None or d[0] == train_on):
        for method, scores in direction(train_name, test_name, config, seeds, log).items():
            out.append({
                "plugin": "faces", "dataset": f"{test_name} (trained on {train_name})", "protocol": "one-shot, other dataset",
                "method": method, "folds": len(seeds), **summary([s[0] for s in scores], [s[1] for s in scores], per="seed"),
            })  # fmt: skip
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one seed, 10 epochs")
    parser.add_argument("--seeds", type=int, nargs="+")
    parser.add_argument("--train-on", choices=[d[0] for d in DIRECTIONS], help="one direction only")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a faces-train key (YAML value)")
    args = parser.parse_args()
    overrides = parse_set(args.set)
    torch.set_num_threads(min(2, torch.get_num_threads()))
    started = time.perf_counter()
    table = rows(args.quick, overrides, args.seeds, train_on=args.train_on)
    print(f"\nfaces from scratch, one-shot on the other dataset{' with ' + ', '.join(args.set) if args.set else ''} "
          f"({time.perf_counter() - started:.0f} s)")  # fmt: skip
    print(f"{'test set':<32} {'method':<45} {'rank-1':>15} {'EER':>15}  per seed (rank-1 / EER)")
    for r in table:
        per = " ".join(f"{a:.3f}/{b:.3f}" for a, b in zip(r["rank_1_per_seed"], r["eer_per_seed"]))
        print(f"{r['dataset']:<32} {r['method']:<45} {r['rank_1_mean']:.3f} ± {r['rank_1_std']:.3f}   "
              f"{r['eer_mean']:.3f} ± {r['eer_std']:.3f}  {per}")  # fmt: skip


if __name__ == "__main__":
    main()
