"""Speakers never heard in training, on CMU AN4's MFCC features: the MFCC-statistics baseline, the untrained
network and the ``audio-train-features`` recipe, over 5 speaker-disjoint folds.

Dev protocol: AN4 (``../shared/data/audio/an4_mfcc``, 84 speakers, 1,078 utterances of
13 Sphinx cepstra, no audio) dealt into 5 speaker-disjoint folds (the ``speakers``
dataset's ``fold``: about 17 speakers each). For each fold, the recipe trains on the
other four (its own validation speakers, scored after every epoch as a learning curve,
are drawn from those too; the last epoch is kept) and everything is scored on the held-out fold by `convgen.metric.reports.report`:
one-shot identification (one enrolled utterance per speaker, every other utterance
searched, rank-1) and the verification EER over all pairs of held-out utterances.

Rows:

- **MFCC statistics**: each cepstrum's mean and standard deviation over the utterance
  (26 numbers), z-scored with the training folds' statistics, cosine nearest neighbour;
- **tdnn, untrained**: the recipe's network with seeded random weights;
- **audio-train-features**: the recipe's defaults, trained by ``convgen.recipes.train.run``
  exactly as ``convgen run audio-train-features dataset.root=... dataset.fold=K
  dataset.exclude_fold=true`` does.

    python benchmarks/accuracy_audio.py                       # 5 folds, the recipe's defaults
    python benchmarks/accuracy_audio.py --quick               # 1 fold, 2 epochs: does it run
    python benchmarks/accuracy_audio.py --set loss.margin=0.3 --set dataset.crop=300   # an ablation

The shipped encoder (``convgen_audio/models``) is not a row: it was trained on all 84 AN4
speakers, and scores on speakers it was trained on would say nothing.
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
from convgen.weights import build_encoder, encoder_spec
from convgen_audio.baselines import statistics
from heldout import parse_set, summary, with_overrides

ROOT = Path(__file__).resolve().parent.parent / ".." / "shared" / "data" / "audio" / "an4_mfcc"
FOLDS = 5


def dataset(root: Path, fold: int, held_out: bool, config: dict):
    """The recipe's dataset block on one side of fold ``fold``: whole utterances when ``held_out``."""
    block = {**config["dataset"], "root": str(root), "folds": FOLDS, "fold": fold, "exclude_fold": not held_out}
    if held_out:
        block["crop"] = None
    return registry.build("dataset", block, spatial_dims=1)


def score(vectors: np.ndarray, labels, seed: int = 0) -> tuple[float, float]:
    """One-shot rank-1 and all-pairs EER of L2-normalised ``vectors``, by the evaluate recipe's own code."""
    vectors = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    config = {**evaluate.DEFAULTS, "seed": seed, "open_set_fraction": 1.0, "episodes": {**evaluate.DEFAULTS["episodes"], "queries": 2}}
    result, _ = reports.report(vectors, labels, config)
    return result["identification_one_shot"]["rank_1"], result["verification"]["eer"]


def baseline(train_set, test_set) -> np.ndarray:
    """MFCC statistics of the held-out utterances, z-scored with the training utterances' statistics."""
    read = test_set.representation.read
    fit = np.stack([statistics(read(f)) for f in train_set.files])
    test = np.stack([statistics(read(f)) for f in test_set.files])
    return (test - fit.mean(0)) / (fit.std(0) + 1e-8)


def fold_scores(root: Path, fold: int, config: dict, log) -> dict:
    """``{method: (rank_1, eer)}`` on held-out fold ``fold``."""
    train_set, test_set = dataset(root, fold, False, config), dataset(root, fold, True, config)
    labels, device = np.array(test_set.labels), torch.device("cpu")
    out = {"MFCC statistics (mean + std of 13 cepstra), cosine": score(baseline(train_set, test_set), labels)}
    seed_everything(config["seed"])
    spec = encoder_spec(config["encoder"], spatial_dims=1, in_channels=test_set[0][0].shape[0])
    out["tdnn, untrained"] = score(embed_dataset(Embedder(build_encoder(spec)), test_set, 1, device), labels)
    with tempfile.TemporaryDirectory() as tmp:
        run = {**copy.deepcopy(config), "device": "cpu"}
        run["dataset"] = {**run["dataset"], "root": str(root), "folds": FOLDS, "fold": fold, "exclude_fold": True}
        started = time.perf_counter()
        trained = train.run(run, Path(tmp))
        summary, encoder = trained.summary, trained.model.encoder
    out["audio-train-features"] = score(embed_dataset(Embedder(encoder), test_set, 1, device), labels)
    log(f"fold {fold}: {len(train_set.classes)} training speakers, {len(test_set.classes)} held out ({len(test_set)} utterances); "
        f"trained {time.perf_counter() - started:.0f} s, best epoch {summary.get('best_epoch')}; "
        + "; ".join(f"{m}: rank-1 {r:.3f} EER {e:.3f}" for m, (r, e) in out.items()))  # fmt: skip
    return out


def rows(quick: bool = False, root: Path = ROOT, overrides: dict | None = None, folds=None, log=None) -> list[dict]:
    """The benchmark table's rows (see the module docstring); ``quick``: fold 0 only, 2 epochs."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"AN4 features not found at {root} (see ../shared/data/README.md)")
    log = log or (lambda text: print(text, file=sys.stderr, flush=True))
    config = with_overrides(registry.recipe("audio-train-features").defaults, overrides)
    if quick:
        config["epochs"] = 2
    folds = list(folds if folds is not None else ([0] if quick else range(FOLDS)))
    per_fold = [fold_scores(root, k, config, log) for k in folds]
    out = []
    for method in per_fold[0]:
        out.append({
            "plugin": "audio", "dataset": "AN4 MFCC (84 speakers)", "protocol": "one-shot, speaker-disjoint folds",
            "method": method, "folds": len(folds), **summary([f[method][0] for f in per_fold], [f[method][1] for f in per_fold]),
        })  # fmt: skip
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", nargs="?", type=Path, default=ROOT, help="the an4_mfcc folder (<speaker>/<utterance>.npy)")
    parser.add_argument("--quick", action="store_true", help="fold 0 only, 2 epochs")
    parser.add_argument("--folds", type=int, nargs="+", help="only these folds (0-4)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a recipe key (YAML value)")
    args = parser.parse_args()
    overrides = parse_set(args.set)
    torch.set_num_threads(min(2, torch.get_num_threads()))
    started = time.perf_counter()
    table = rows(args.quick, args.root, overrides, args.folds)
    print(f"\nAN4 speakers, one-shot on held-out folds{' with ' + ', '.join(args.set) if args.set else ''} "
          f"({time.perf_counter() - started:.0f} s)")  # fmt: skip
    print(f"{'method':<55} {'rank-1':>15} {'EER':>15}  per fold (rank-1 / EER)")
    for r in table:
        per = " ".join(f"{a:.3f}/{b:.3f}" for a, b in zip(r["rank_1_per_fold"], r["eer_per_fold"]))
        print(f"{r['method']:<55} {r['rank_1_mean']:.3f} ± {r['rank_1_std']:.3f}   {r['eer_mean']:.3f} ± {r['eer_std']:.3f}  {per}")


if __name__ == "__main__":
    main()
