"""CT recipes: the core's engines with volume defaults, k-NN read-out, galleries of volumes, 3D style.

``ct-train``, ``ct-evaluate`` and ``ct-visualize`` are the core recipes on a MedMNIST 3D
archive (default: the bundled AdrenalMNIST3D subset) with a small 3D ResNet; with two
classes the classes are the identities, so ``ct-train`` holds out samples, not classes
(``split.by: sample``), and ``ct-evaluate`` adds the k-NN accuracy of the test split
against the training split. ``ct-enrol`` / ``ct-verify`` / ``ct-identify`` embed a whole
volume (or the mean of random patches). ``ct-stylize`` is memory-aware 3D style transfer
between two volumes, written as NIfTI in the content's space.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from convgen.plugin_api import (
    ConfigError,
    Evaluation,
    Readout,
    StyleTransfer,
    atomic_write_text,
    build_component,
    check_style_budget,
    embed_dataset,
    fitting_tile,
    knn_accuracy,
    layer_weights,
    peak_rss_mib,
    plot_row,
    prepare_encoder,
    recipe,
    register_gallery_recipes,
    resolve_device,
    run_style_transfer,
    seed_everything,
    style_distance,
    style_statistics,
    stylize_tiles,
    write_style_report,
)
from convgen_ct import preprocess
from convgen_ct.datasets import sample_path
from convgen_ct.volumes import affine_of, load_volume, spacing_of, write_nifti

MEDMNIST = {"name": "medmnist3d", "root": None, "split": "train", "max_per_class": None, "class_names": None}
# 28³ masks: a stride-2 stem, then three stages down to 4³; small enough to train on a CPU.
ENCODER = {"name": "resnet", "channels": [8, 16, 32, 64], "strides": [1, 2, 2, 1], "stem_kernel": 5, "stem_stride": 2,
           "embedding_dim": 64}  # fmt: skip
# An organ's shape keeps its diagnosis under small flips, shifts and zooms.
AUGMENT = {"flip": [1, 2, 3], "shift": 0.05, "rotate": 10.0, "scale": 0.05, "contrast": 0.0, "noise": 0.0}
VOLUME = {"key": None, "window": "soft-tissue", "hu_offset": 0.0, "spacing": None, "size": 28, "patch_size": None, "patches": 8,
          "seed": 0}  # fmt: skip
# One wide random layer at four scales (receptive fields 5-47 voxels): chosen by bench_style.py's quality table.
STYLE_ENCODER = {"name": "random-multiscale", "filters": 16, "dilations": [1, 2, 4, 8], "embedding_dim": 64}


# Each recipe below is the core recipe it is based on (register(..., based_on=...)) with these keys changed.
TRAIN = dict(
    spatial_dims=3, dataset=MEDMNIST, split={"val_fraction": 0.2, "by": "sample"}, encoder=ENCODER,
    augment=AUGMENT, epochs=10, sampler={"p": 2, "k": 16}, batch_size=32,
    optimizer={"name": "adamw", "lr": 0.002, "weight_decay": 0.0005, "momentum": 0.9},
    loss={"name": "triplet", "margin": 0.2, "mining": "all"},
)  # fmt: skip
EVALUATE = dict(spatial_dims=3, dataset={**MEDMNIST, "split": "test"}, encoder=None, batch_size=32,
                 knn={"reference": "train", "k": [1, 5, 15]})  # fmt: skip
VISUALIZE = dict(spatial_dims=3, dataset={**MEDMNIST, "split": "test", "max_per_class": 16}, encoder=ENCODER,
                  top_k=6, units=4, batch_size=16)  # fmt: skip
#: what ct-stylize does not take of the core stylize recipe (a region of a volume, not a resized sample)
NOT_TAKEN = ("channels", "size", "style_size")
STYLIZE = dict(
    spatial_dims=3, content=str(sample_path("anatomical.nii")), style=str(sample_path("someones_epi.nii.gz")),
    content_key=None, style_key=None, window="percentiles", style_window=None, hu_offset=0.0, spacing=None,
    region={"size": 64, "center": None}, style_region={"size": 64, "center": None}, tile=None, overlap=8,
    encoder=STYLE_ENCODER, content_layers=["relu"], style_layers=["relu"], beta=10.0, init="content",
    range=[0.0, 1.0], iterations=100, memory_budget_gb=4.0, output="stylized.nii.gz",
)  # fmt: skip


# --------------------------------------------------------------------------- evaluate, with k-NN


def _auc(scores: np.ndarray, positive: np.ndarray) -> float:
    """ROC AUC of a score for a binary label: P(positive scores higher) + ½ P(tie)."""
    pos, neg = scores[positive], scores[~positive]
    return float((pos[:, None] > neg[None]).mean() + 0.5 * (pos[:, None] == neg[None]).mean())


def knn_metrics(reference, reference_labels, embeddings, labels, ks) -> dict:
    """k-NN accuracy for each ``k`` and, for two classes, the ROC AUC of the k-NN vote share of the larger label."""
    ref_y, test_y = np.asarray(reference_labels), np.asarray(labels)
    result = {"reference_samples": len(ref_y), "test_samples": len(test_y), "majority_rate": float(np.bincount(test_y).max() / len(test_y)),
              "accuracy": {str(k): knn_accuracy(reference, ref_y, embeddings, test_y, k) for k in ks}}  # fmt: skip
    if len(np.unique(ref_y)) == 2:
        nearest = torch.cdist(torch.as_tensor(embeddings), torch.as_tensor(reference)).argsort(1).numpy()
        label = ref_y.max()
        result["auc"] = {str(k): _auc((ref_y[nearest[:, :k]] == label).mean(1), test_y == label) for k in ks}
    return result


def knn_readout(evaluation: Evaluation) -> Readout | None:
    """k-NN accuracy (and, for two classes, the ROC AUC of the k-NN vote share) of the evaluated
    split against the ``knn.reference`` split, embedded by the evaluation's own encoder; the
    ``evaluation_readouts`` hook of this plugin (for recipes with a ``knn`` block)."""
    config = evaluation.config
    knn = config.get("knn") or {}
    if not knn.get("reference"):
        return None
    reference = build_component("dataset", {**config["dataset"], "split": knn["reference"]}, spatial_dims=config["spatial_dims"])
    ref = embed_dataset(evaluation.model, reference, config["batch_size"], evaluation.device)
    ks = [int(k) for k in (knn["k"] if isinstance(knn["k"], list) else [knn["k"]])]
    result = {"reference": knn["reference"], **knn_metrics(ref, reference.labels, evaluation.embeddings, evaluation.dataset.labels, ks)}
    table = Table(title=f"k-NN read-out: {config['dataset'].get('split')} against {knn['reference']} ({result['reference_samples']} samples)")
    for column in ("k", "accuracy", "ROC AUC"):
        table.add_column(column, justify="right")
    for k in map(str, ks):
        table.add_row(k, f"{result['accuracy'][k]:.4f}", f"{result['auc'][k]:.4f}" if "auc" in result else "n/a")
    table.caption = f"majority class rate {result['majority_rate']:.4f}"
    Console().print(table)
    summary = {f"knn_accuracy_k{k}": result["accuracy"][str(k)] for k in ks}
    summary.update({f"knn_auc_k{k}": result["auc"][str(k)] for k in ks} if "auc" in result else {})
    return Readout("knn", result, summary={**summary, "majority_rate": result["majority_rate"]})


def evaluate_volumes(config: dict, out_dir: Path):
    """The core evaluation of the split (its k-NN read-out comes from `knn_readout`), once the ``knn`` block is checked."""
    if config["knn"]["reference"] and "split" not in config["dataset"]:
        raise ConfigError(f"knn.reference names a split, but dataset {config['dataset']['name']!r} has no split option; set knn.reference=null")
    return recipe("evaluate").run(config, out_dir)


# --------------------------------------------------------------------------- galleries of volumes


# --------------------------------------------------------------------------- 3D style transfer


def _input(config: dict, which: str):
    """The content or style region, windowed to [0, 1], as a MetaTensor carrying its affine."""
    if not config[which]:
        raise ConfigError(f"{which}=PATH is missing (a NIfTI file, a DICOM series folder or a .npy / .npz volume)")
    window = config["window"] if which == "content" or config["style_window"] is None else config["style_window"]
    volume = preprocess.prepare(load_volume(config[which], config[f"{which}_key"]), window, config["hu_offset"], config["spacing"])
    box = config["region" if which == "content" else "style_region"]
    return preprocess.region(volume, box["size"], box["center"]) if box else volume


def _weights(config: dict, which: str) -> dict:
    layers, weights = config[f"{which}_layers"], config[f"{which}_layer_weights"]
    return layer_weights(dict(zip(layers, weights)) if weights else layers, f"{which}_layer")


def stylize_volumes(config: dict, out_dir: Path) -> dict:
    """3D Gram style transfer of one volume's texture onto another's region, within ``memory_budget_gb``.

    Writes the result as NIfTI with the content region's affine (``output``), the content
    region beside it (``content.nii.gz``), orthogonal slices (``preview.png``) and a summary
    with the memory estimate, the measured peak memory and the style distance.
    """
    started = time.perf_counter()
    content, style = _input(config, "content"), _input(config, "style")
    affine = affine_of(content)
    c, s = preprocess.plain(content), preprocess.plain(style)
    seed_everything(config["seed"])  # the encoder the one-pass engine builds too (checked by fingerprint)
    encoder, spec, fp = prepare_encoder(config, 3, 1)
    style_weights, content_weights = _weights(config, "style"), _weights(config, "content")
    layers = list(dict.fromkeys([*content_weights, *style_weights]))
    cost = build_component("style_cost", config["style_cost"])
    tile = config["tile"]
    if tile == "auto":
        tile = fitting_tile(encoder, layers, config["memory_budget_gb"], max(c.shape[1:]), spatial_dims=3)
        if tile is None:
            raise ConfigError(f"no tile of 16³ voxels or more fits memory_budget_gb={config['memory_budget_gb']:g}; use shallower layers")
    if tile is not None and (isinstance(tile, bool) or not isinstance(tile, int) or tile < 8):
        raise ConfigError(f"tile must be null (one pass), auto, or a tile size of at least 8 voxels, got {config['tile']!r}")
    largest = max(c, s, key=lambda t: t.numel()) if tile is None else torch.empty(1, *[min(tile, n) for n in c.shape[1:]])
    estimate = check_style_budget(encoder, tuple(largest.shape), layers, config["memory_budget_gb"], tiled=tile is not None,
                                  hint="set region.size smaller")

    targets = style_statistics(encoder, s, list(style_weights), cost, tile)
    low, high = config["range"] or (min(float(c.min()), float(s.min())), max(float(c.max()), float(s.max())))
    noise = low + (high - low) * torch.rand(c.shape, generator=torch.Generator().manual_seed(config["seed"]))
    mix = {"noise": 1.0, "content": 0.0}.get(config["init"], config["noise_ratio"])  # the start of the optimisation
    start_volume = (1 - mix) * c + mix * noise
    if tile is None:
        seed_everything(config["seed"])
        result, summary, *_ = run_style_transfer(config, c, [s])
        if summary["encoder_fingerprint"] != fp:
            raise RuntimeError("the style distance would be measured with another encoder than the one optimised")  # a bug
        generated = result.generated
        write_style_report(out_dir, c, [s], result, preview=False)
    else:
        engine = StyleTransfer(encoder, content_weights, style_weights, cost, alpha=config["alpha"], beta=config["beta"],
                               tv=config["tv"], normalize_layers=config["normalize_layers"])  # fmt: skip
        run = {k: config[k] for k in ("init", "noise_ratio", "optimizer", "lr", "iterations")}
        run.update(value_range=(low, high), device=resolve_device(config["device"]))
        generated, rows = stylize_tiles(engine, c, targets, tile, config["overlap"], run, config["seed"])
        atomic_write_text(out_dir / "tiles.json", json.dumps(rows, indent=1) + "\n")
        summary = {"shape": list(generated.shape), "encoder": spec["name"], "encoder_fingerprint": fp, "iterations": config["iterations"]}
    start, final = (style_distance(encoder, v, targets, style_weights, cost, tile) for v in (start_volume, generated))
    output = write_nifti(out_dir / config["output"], generated, affine)
    write_nifti(out_dir / "content.nii.gz", c, affine)
    plot_row(out_dir / "preview.png", {"content": c, "style": s, "result": generated},
             "ct-stylize: content | style | result (orthogonal slices through the centre)")  # fmt: skip
    peak = peak_rss_mib()
    summary.update(
        output=str(output), mode="patch-wise" if tile else "one pass", tile=tile, overlap=config["overlap"] if tile else None,
        region=list(c.shape[1:]), spacing_mm=list(spacing_of(content)), affine=affine.tolist(),
        estimated_memory_mib={k: round(v / 2**20, 1) for k, v in estimate.items()}, memory_budget_gb=config["memory_budget_gb"],
        peak_rss_mib=round(peak, 1), gram_distance={"start": start, "final": final}, seconds=round(time.perf_counter() - started, 1),
    )  # fmt: skip
    if tile is not None:  # one number for the whole volume, as the one-pass engine reports its own
        summary["style_reduction"] = 1 - final / start if start else None
    lowered = f" ({100 * (1 - final / start):.1f}% lower)" if start else ""
    Console().print(f"ct-stylize ({summary['mode']}): style distance {start:.4g} -> {final:.4g}{lowered}, "
                    f"peak memory {peak:.0f} MiB; wrote {output}")  # fmt: skip
    return summary


def register(register_recipe) -> None:
    """Every CT recipe, registered through the plugin's ``register_recipes`` hook."""
    register_recipe("ct-train", based_on="train", defaults=TRAIN,
                    description="Train a 3D encoder with the triplet loss (default: the bundled AdrenalMNIST3D subset).")
    register_recipe("ct-evaluate", evaluate_volumes, based_on="evaluate", defaults=EVALUATE,
                    description="Evaluate a 3D encoder on a test split: verification, identification and k-NN accuracy / AUC.")
    register_gallery_recipes(register_recipe, "ct", {"name": "ct", **VOLUME}, noun="volume",
                             what="volumes (NIfTI, DICOM series folders, NumPy)")  # fmt: skip
    register_recipe("ct-stylize", stylize_volumes, based_on="stylize", without=NOT_TAKEN, defaults=STYLIZE,
                    description="3D style transfer between two volumes within a memory budget (NIfTI out; patch-wise for whole volumes).")
    register_recipe("ct-visualize", based_on="visualize", defaults=VISUALIZE,
                    description="The sub-volumes that most excite each unit of a 3D encoder, as orthogonal slices.")
