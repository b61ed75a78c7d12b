"""3D: an encoder trained with the triplet loss vs raw voxels vs random weights, and 64³ CT style transfer.

    python benchmarks/bench_ct.py --data ../shared/data/volumes            # the full run (~10 min on 2 CPU cores)
    python benchmarks/bench_ct.py --quick                                  # bundled subset, 1 epoch, small style run

Part 1, AdrenalMNIST3D (MedMNIST v2: 28³ adrenal shape masks, normal vs hyperplasia, the
official splits). The ``ct-train`` recipe trains on the official train split (a stratified
20% of it held out for model selection); then every row is measured by the same code on
the official test split: the core's `convgen.metric.reports.report` (ROC AUC and EER of
same-class vs different-class pairs) and the plugin's k-NN read-out
(`convgen_ct.recipes.knn_metrics`: k-NN accuracy against the train split's embeddings,
and the ROC AUC of the k-NN vote for hyperplasia). Rows: the trained encoder; the same
network with random weights; raw voxels (flattened, L2-normalised).

Part 2, the stent CT (``volumes/stent.npz``, development only, read by path): ``ct-stylize``
of a 64³ soft-tissue region with the texture of another 64³ region, in one pass and
patch-wise (tiles that fit a 0.06 GB budget), each in a child process so that its peak
RSS is its own. Checks the written NIfTI's affine against the crop.
"""

from __future__ import annotations

import argparse
import copy
import json
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from convgen_ct import recipes
from convgen_ct.datasets import MedMNIST3D
from rich.console import Console
from rich.table import Table

from convgen.metric import reports
from convgen import registry
from convgen.metric.embedder import Embedder, embed_dataset
from convgen.runtime import seed_everything
from convgen.weights import build_encoder, load_encoder

KS = [1, 5, 15]


def convgen(*args: str) -> dict:
    """``convgen run ...`` in a child process; its summary."""
    exe = Path(sys.executable).parent / "convgen"
    out = Path(args[args.index("-o") + 1])
    subprocess.run([str(exe), "run", *map(str, args)], check=True, stdout=subprocess.DEVNULL)
    return json.loads((out / "summary.json").read_text())


def measure(name: str, train_emb: np.ndarray, test_emb: np.ndarray, train, test) -> dict:
    config = copy.deepcopy(registry.recipe("ct-evaluate").defaults)
    report, _ = reports.report(test_emb, test.labels, config)
    knn = recipes.knn_metrics(train_emb, train.labels, test_emb, test.labels, KS)
    v = report["verification"]
    return {"row": name, "dims": int(test_emb.shape[1]), "pair_auc": v["auc"], "pair_eer": v["eer"],
            **{f"knn_acc_{k}": knn["accuracy"][str(k)] for k in KS}, **{f"knn_auc_{k}": knn["auc"][str(k)] for k in KS},
            "majority": knn["majority_rate"]}  # fmt: skip


def part1(root: Path | None, out: Path, epochs: int, seed: int) -> list[dict]:
    data = [f"dataset.root={root}"] if root else []
    started = time.perf_counter()
    summary = convgen("ct-train", *data, f"epochs={epochs}", f"seed={seed}", "-o", out / "train")
    Console().print(f"trained {epochs} epochs in {time.perf_counter() - started:.0f} s: best val EER {summary['best_val_eer']:.4f}")
    train, test = MedMNIST3D(root=str(root) if root else None, split="train"), MedMNIST3D(root=str(root) if root else None, split="test")
    device = torch.device("cpu")
    rows = []
    trained, spec, _ = load_encoder(out / "train" / "encoder.safetensors")
    seed_everything(seed)
    random = build_encoder(spec)  # the trained network's architecture, freshly initialised
    for name, encoder in (("ct-train encoder (triplet)", trained), ("same network, random weights", random)):
        model = Embedder(encoder).to(device)
        rows.append(measure(name, *(embed_dataset(model, d, 64, device) for d in (train, test)), train, test))
    flat = [np.stack([d[i][0].flatten().numpy() for i in range(len(d))]) for d in (train, test)]
    flat = [f / np.maximum(np.linalg.norm(f, axis=1, keepdims=True), 1e-8) for f in flat]
    rows.append(measure("raw voxels (L2-normalised)", *flat, train, test))
    return rows


def part2(stent: Path, out: Path, iterations: int, size: int) -> list[dict]:
    common = [f"content={stent}", f"style={stent}", "window=soft-tissue", f"region.size={size}", f"style_region.size={size}",
              "style_region.center=[190,64,64]", f"iterations={iterations}"]  # fmt: skip
    runs = [("one pass", ["memory_budget_gb=4"]), ("patch-wise", ["memory_budget_gb=0.06", "tile=auto", "overlap=8"])]
    rows = []
    for name, extra in runs:
        target = out / ("stylize" if name == "one pass" else "stylize-tiles")
        summary = convgen("ct-stylize", *common, *extra, "-o", target)
        written = nib.load(target / "stylized.nii.gz")
        start = np.array([128, 64, 64]) - size // 2  # the default centre: the middle of the 256×128×128 volume
        affine_ok = bool(np.allclose(written.affine[:3, 3], start) and np.allclose(written.affine[:3, :3], np.eye(3)))
        rows.append({"run": name, "region": "×".join(map(str, summary["region"])), "tile": summary["tile"],
                     "estimate_mib": summary["estimated_memory_mib"]["total"], "budget_gb": summary["memory_budget_gb"],
                     "peak_rss_mib": summary["peak_rss_mib"], "style_reduction": summary["style_reduction"],
                     "seconds": summary["seconds"], "affine_ok": affine_ok})  # fmt: skip
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=None, help="../shared/data/volumes (medmnist3d/adrenalmnist3d.npz and stent.npz)")
    parser.add_argument("--quick", action="store_true", help="the bundled AdrenalMNIST3D subset, 1 epoch, a 24³ style run")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--iterations", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("runs/bench_ct"))
    args = parser.parse_args()
    if not args.quick and args.data is None:
        parser.error("give --data ../shared/data/volumes, or --quick")
    root = None if args.quick else args.data / "medmnist3d" / "adrenalmnist3d.npz"
    started = time.perf_counter()
    rows = part1(root, args.out, 1 if args.quick else args.epochs, args.seed)
    table = Table(title=f"AdrenalMNIST3D {'(bundled subset)' if args.quick else ''} official test split: k-NN against the train split")
    for column in rows[0]:
        table.add_column(column, justify="right" if column != "row" else "left")
    for row in rows:
        table.add_row(*[f"{v:.4f}" if isinstance(v, float) else str(v) for v in row.values()])
    Console(width=200).print(table)
    result = {"medmnist": rows}
    if args.data is not None and (args.data / "stent.npz").is_file():
        style = part2(args.data / "stent.npz", args.out, 10 if args.quick else args.iterations, 24 if args.quick else 64)
        table = Table(title="ct-stylize on the stent CT (soft-tissue window), each run in its own process")
        for column in style[0]:
            table.add_column(column, justify="right")
        for row in style:
            table.add_row(*[f"{v:.3f}" if isinstance(v, float) else str(v) for v in row.values()])
        Console(width=200).print(table)
        result["stylize"] = style
    result["seconds"] = round(time.perf_counter() - started, 1)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bench_ct.json").write_text(json.dumps(result, indent=2) + "\n")
    Console().print(f"{result['seconds']:.0f} s; wrote {args.out / 'bench_ct.json'}")


if __name__ == "__main__":
    main()
