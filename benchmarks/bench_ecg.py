"""ECG biometrics: a heartbeat encoder trained by ``ecg-train`` (the triplet loss unless ``--set loss=...``) vs raw heartbeats.

People are split in two (seeded): the encoder sees only the first half; everything is
measured on the second half, people never seen in training, by the same code
(`convgen.metric.evaluation.cross_session`): each person is enrolled from ONE recording
(the mean of its beat embeddings), and identified from each of their other recordings
(rank-1 over whole recordings, and over single beats); with half of them enrolled, every
recording of the others must be rejected (DIR at FPIR 10%); EER over pairs of recordings.

    python benchmarks/bench_ecg.py --ecgid ../shared/data/ecg/ecgid_part1 --seeds 0 1 2
    python benchmarks/bench_ecg.py --mitdb ../shared/data/ecg/mitdb       # sessions = 5-minute parts
    python benchmarks/bench_ecg.py --quick                                # bundled sample, 2 epochs
    python benchmarks/bench_ecg.py --ecgid ../shared/data/ecg/ecgid_part1 --extra ../shared/data/ecg/ludb   # + LUDB's people in training
    python benchmarks/bench_ecg.py --ecgid ../shared/data/ecg/ecgid_part1 --set augment.scale=0.1   # an ablation

Rows: the ecg-train recipe's ResNet (from scratch); the same network untrained (random
weights); raw beat windows (band-passed, robustly scaled, L2-normalised: nearest
neighbour on the signal itself, the classic template-matching baseline).
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
from convgen_ecg.datasets import sample_dir
from rich.console import Console
from rich.table import Table

from convgen import registry
from convgen.metric import evaluation
from convgen.recipes import train
from convgen.metric.embedder import Embedder
from convgen.runtime import seed_everything
from convgen.weights import build_encoder, encoder_spec
from heldout import parse_set, with_overrides


def measure(embeddings: np.ndarray, data, seed: int) -> dict:
    r = evaluation.cross_session(embeddings, np.asarray(data.labels), data.sessions, enrolled_fraction=0.5, fpir_targets=[0.1], seed=seed)
    return {
        "records": r["closed_set"]["sessions"]["rank_1"],
        "beats": r["closed_set"]["samples"]["rank_1"],
        "dir": r["open_set"]["fpir"]["0.1"]["dir"],
        "eer": r["verification"]["eer"],
        "probes": r["closed_set"]["sessions"]["probes"],
    }


def embed(encoder: torch.nn.Module, x: torch.Tensor, batch: int = 512) -> np.ndarray:
    with torch.no_grad():
        return torch.cat([encoder(x[i : i + batch]) for i in range(0, len(x), batch)]).numpy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ecgid", default=None, help="ECG-ID folder (one sub-folder per person); default: the bundled sample")
    parser.add_argument("--mitdb", default=None, help="MIT-BIH folder (one record per person): sessions are 5-minute parts")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--epochs", type=int, default=None, help="default: the recipe's (after --set)")
    parser.add_argument("--quick", action="store_true", help="2 epochs: check that it runs")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override an ecg-train key (YAML value)")
    parser.add_argument("--extra", nargs="+", default=[], help="folders of more people to train on only (e.g. LUDB), never measured")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    defaults = with_overrides(registry.recipe("ecg-train").defaults, parse_set(args.set))
    epochs = 2 if args.quick else args.epochs or defaults["epochs"]
    dataset = dict(defaults["dataset"], root=args.mitdb or args.ecgid)
    if args.mitdb:
        dataset.update(session_seconds=300, max_seconds=1800, max_windows=150)
    extra = [f"{Path(root).name}/{person}" for root in args.extra
             for person in registry.build("dataset", {**dataset, "root": root, "people": None}).classes]  # fmt: skip

    rows = []
    for seed in args.seeds:
        everyone = registry.build("dataset", {**dataset, "people": None})
        order = [everyone.classes[i] for i in np.random.default_rng(seed).permutation(len(everyone.classes))]
        train_people, test_people = sorted(order[: len(order) // 2]), sorted(order[len(order) // 2 :])
        test = registry.build("dataset", {**dataset, "people": test_people})
        common = {"seed": seed, "train_people": len(train_people), "test_people": len(test_people)}

        config = copy.deepcopy(defaults)
        config.update(seed=seed, device="cpu", epochs=epochs, dataset={**dataset, "people": train_people})
        if extra:  # pooled folders name their people FOLDER/PERSON
            name = Path(dataset["root"] or sample_dir("ecgid")).name
            config["dataset"].update(root=[dataset["root"] or str(sample_dir("ecgid")), *args.extra],
                                     people=[f"{name}/{p}" for p in train_people] + extra)  # fmt: skip
        seed_everything(seed)
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            trained = train.run(config, Path(tmp))
            seconds = time.perf_counter() - start
            best, model = trained.summary.get("best_epoch"), trained.model.encoder
        rows.append({**common, "method": f"convgen resnet + {config['loss']['name']} ({epochs} epochs, kept {best})", "train_s": seconds,
                     **measure(embed(Embedder(model).eval(), test.windows), test, seed)})  # fmt: skip
        torch.manual_seed(seed)
        random = build_encoder(encoder_spec(config["encoder"], spatial_dims=1, in_channels=1))
        rows.append({**common, "method": "same network, random weights", "train_s": 0.0,
                     **measure(embed(Embedder(random).eval(), test.windows), test, seed)})  # fmt: skip
        raw = test.windows.flatten(1).double().numpy()
        rows.append({**common, "method": "raw beats (nearest neighbour)", "train_s": 0.0,
                     **measure(raw / np.linalg.norm(raw, axis=1, keepdims=True), test, seed)})  # fmt: skip

    where = args.mitdb or args.ecgid or "bundled ECG-ID sample"
    table = Table(title=f"ECG: enrol from one recording, identify from the others; people unseen in training ({where})")
    for column in ("seed", "method", "train / test people", "train time", "rank-1 (records)", "rank-1 (beats)", "DIR@FPIR 0.1", "EER"):
        table.add_column(column, justify="left" if column == "method" else "right")
    for r in rows:
        dir_ = f"{r['dir']:.3f}" if r["dir"] is not None else "n/a"
        table.add_row(str(r["seed"]), r["method"], f"{r['train_people']} / {r['test_people']}", f"{r['train_s']:.0f} s",
                      f"{r['records']:.3f}", f"{r['beats']:.3f}", dir_, f"{r['eer']:.3f}")  # fmt: skip
    Console(width=160).print(table)  # wide enough for the table in a log file, not only a terminal
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
