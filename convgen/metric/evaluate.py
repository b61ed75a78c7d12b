"""The ``evaluate`` recipe: how well does an encoder verify and identify people it never saw?

It embeds a labelled dataset and reports verification (ROC, AUC, EER, TAR@FAR, LFW-style
k-fold accuracy on balanced same/different pairs, or on the dataset's own ``pairs``),
one-shot closed-set identification (rank-k, one enrolled sample per identity), open-set
identification (half the identities enrolled, thresholds calibrated on searches for the
others, DIR@FPIR), N-way k-shot episodes and, for a dataset of recordings (``sessions``),
enrol-from-one-recording identification across recordings, as ``report.json`` plus
``roc.png`` and ``distances.png``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from convgen.errors import DataError
from convgen.io import atomic_write_text
from convgen.metric import evaluation
from convgen.metric.embed import dataset_and_encoder
from convgen.metric.embedder import Embedder, embed_dataset
from convgen.metric.plots import plot_distance_histograms, plot_roc
from convgen.recipes import resolve_device

DEFAULTS = {
    "seed": 0,
    "spatial_dims": 2,
    # the train recipe's generator (same seed), people it never saw (identity_offset)
    "dataset": {"name": "synthetic", "identities": 32, "samples_per_identity": 6, "identity_offset": 1000},
    "encoder": None,
    "weights": None,
    "batch_size": 64,
    "device": "auto",
    "max_pairs": 200000,
    "folds": 10,
    "ranks": [1, 5],
    "far_targets": [0.1, 0.01, 0.001],
    "fpir_targets": [0.1, 0.01],
    "open_set_fraction": 0.5,
    "episodes": {"n_way": 5, "k_shot": 1, "queries": 5, "episodes": 200},
}


def one_shot_gallery(labels, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """One enrolled sample per identity (seeded), the rest as probes: ``(gallery, probes)`` indices."""
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    gallery = np.array([rng.choice(np.flatnonzero(labels == label)) for label in np.unique(labels)])
    probes = np.setdiff1d(np.arange(len(labels)), gallery)
    return gallery, probes


def balanced_pairs(pairs: evaluation.Pairs, seed: int = 0) -> np.ndarray:
    """Indices of every same pair and as many (seeded, random) different pairs.

    Accuracy is only meaningful on balanced pairs (the LFW protocol): on all pairs of a
    labelled set, "different" dominates and answering "different" always scores high.
    """
    same, different = np.flatnonzero(pairs.same), np.flatnonzero(~pairs.same)
    n = min(len(same), len(different))
    rng = np.random.default_rng(seed)
    return np.sort(np.concatenate([rng.choice(same, n, replace=False), rng.choice(different, n, replace=False)]))


def validation_metrics(embeddings: np.ndarray, labels, max_pairs: int = 50000) -> dict:
    """The few numbers a training run watches: EER, AUC and one-shot rank-1 on unseen identities."""
    pairs = evaluation.pairs_from_labels(embeddings, labels, max_pairs=max_pairs)
    far, tar, _ = evaluation.roc(pairs.distances, pairs.same)
    gallery, probes = one_shot_gallery(labels)
    labels = np.asarray(labels)
    ident = evaluation.identification(embeddings[gallery], labels[gallery], embeddings[probes], labels[probes], ranks=(1,))
    return {
        "eer": evaluation.eer(pairs.distances, pairs.same)[0],
        "auc": evaluation.auc(far, tar),
        "rank_1": ident["rank_1"],
    }


def report(embeddings: np.ndarray, labels, config: dict, given_pairs=None, sessions=None) -> tuple[dict, evaluation.Pairs]:
    """Every metric of the recipe, as a JSON-ready dict (plus the pairs, for the plots).

    ``given_pairs`` (``[(i, j, same), ...]``, from a dataset with a ``pairs`` attribute such
    as an LFW pairs file) replaces the pairs drawn from the labels for verification.
    ``sessions`` (one recording name per sample, from a dataset with a ``sessions``
    attribute) adds ``cross_session``: enrol from one recording, identify from the others
    (see `convgen.metric.evaluation.cross_session`).
    """
    labels = np.asarray(labels)
    if len(np.unique(labels)) < 2:
        raise DataError("evaluation needs at least 2 identities")
    if given_pairs:
        given = np.asarray(given_pairs, dtype=np.int64).reshape(-1, 3)
        pairs = evaluation.pairs_from_index(embeddings, given[:, :2], given[:, 2].astype(bool))
    else:
        pairs = evaluation.pairs_from_labels(embeddings, labels, max_pairs=config["max_pairs"], seed=config["seed"])
    far, tar, _ = evaluation.roc(pairs.distances, pairs.same)
    eer, eer_threshold = evaluation.eer(pairs.distances, pairs.same)
    balanced = balanced_pairs(pairs, config["seed"])
    acc, acc_std, _ = evaluation.kfold_accuracy(pairs.distances[balanced], pairs.same[balanced], folds=config["folds"], seed=config["seed"])
    out = {
        "samples": len(labels),
        "identities": int(len(np.unique(labels))),
        "verification": {
            "same_pairs": int(pairs.same.sum()),
            "different_pairs": int((~pairs.same).sum()),
            "auc": evaluation.auc(far, tar),
            "eer": eer,
            "eer_threshold": eer_threshold,
            "tar_at_far": {str(k): v for k, v in evaluation.tar_at_far(pairs.distances, pairs.same, config["far_targets"]).items()},
            "kfold_accuracy": acc,
            "kfold_accuracy_std": acc_std,
            "kfold_pairs": int(len(balanced)),
            "folds": config["folds"],
        },
    }
    gallery, probes = one_shot_gallery(labels, config["seed"])
    ident = evaluation.identification(embeddings[gallery], labels[gallery], embeddings[probes], labels[probes], config["ranks"])
    out["identification_one_shot"] = {k: v for k, v in ident.items() if k != "cmc"}

    identities = np.unique(labels)
    rng = np.random.default_rng(config["seed"])
    enrolled = rng.choice(identities, size=max(1, round(config["open_set_fraction"] * len(identities))), replace=False)
    if len(enrolled) < len(identities):
        enrolled_gallery = gallery[np.isin(labels[gallery], enrolled)]
        searches = np.setdiff1d(np.arange(len(labels)), enrolled_gallery)
        open_set = evaluation.open_set(embeddings[enrolled_gallery], labels[enrolled_gallery], embeddings[searches],
                                       labels[searches], config["fpir_targets"])  # fmt: skip
        out["identification_open_set"] = {**open_set, "fpir": {str(k): v for k, v in open_set["fpir"].items()}}

    if sessions is not None:
        out["cross_session"] = evaluation.cross_session(embeddings, labels, sessions, config["open_set_fraction"],
                                                        config["fpir_targets"], config["ranks"], config["seed"])  # fmt: skip
    try:
        out["episodes"] = evaluation.few_shot_episodes(embeddings, labels, seed=config["seed"], **config["episodes"])
    except DataError as exc:
        out["episodes"] = {"skipped": str(exc)}
    return out, pairs


def run(config: dict, out_dir: Path) -> dict:
    dataset, encoder, spec, fp = dataset_and_encoder(config)
    device = resolve_device(config["device"])
    embeddings = embed_dataset(Embedder(encoder).to(device), dataset, config["batch_size"], device, show_progress=True)
    result, pairs = report(embeddings, dataset.labels, config, getattr(dataset, "pairs", None), getattr(dataset, "sessions", None))
    result = {"encoder": spec["name"], "encoder_fingerprint": fp, **result}
    atomic_write_text(out_dir / "report.json", json.dumps(_finite(result), indent=2) + "\n")

    v = result["verification"]
    far, tar, _ = evaluation.roc(pairs.distances, pairs.same)
    plot_roc(out_dir / "roc.png", far, tar, eer=v["eer"], label=spec["name"])
    plot_distance_histograms(out_dir / "distances.png", pairs.distances, pairs.same, threshold=v["eer_threshold"])
    _print(result)
    summary = {
        "auc": v["auc"],
        "eer": v["eer"],
        "eer_threshold": v["eer_threshold"],
        "kfold_accuracy": v["kfold_accuracy"],
        "rank_1": result["identification_one_shot"]["rank_1"],
        "episode_accuracy": result["episodes"].get("accuracy"),
    }
    if "cross_session" in result:
        c = result["cross_session"]
        summary.update(cross_session_rank_1=c["closed_set"]["sessions"]["rank_1"], cross_session_eer=c["verification"]["eer"])
    return summary


def _finite(value):
    """JSON has no infinities: an unbounded threshold is written as null."""
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


def _print(result: dict) -> None:
    v = result["verification"]
    table = Table(title=f"evaluate: {result['encoder']} on {result['identities']} identities, {result['samples']} samples")
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_row("ROC AUC", f"{v['auc']:.4f}")
    table.add_row("EER (threshold)", f"{v['eer']:.4f} ({v['eer_threshold']:.4f})")
    for far, entry in v["tar_at_far"].items():
        table.add_row(f"TAR @ FAR {far}", f"{entry['tar']:.4f}" if entry["tar"] is not None else "n/a: too few pairs")
    table.add_row(f"{v['folds']}-fold accuracy (balanced pairs)", f"{v['kfold_accuracy']:.4f} ± {v['kfold_accuracy_std']:.4f}")
    for key, value in result["identification_one_shot"].items():
        if key.startswith("rank_"):
            table.add_row(f"one-shot {key.replace('_', '-')}", f"{value:.4f}")
    if "identification_open_set" in result:
        for fpir, entry in result["identification_open_set"]["fpir"].items():
            table.add_row(f"open-set DIR @ FPIR {fpir}", f"{entry['dir']:.4f}" if entry["dir"] is not None else "n/a: too few searches")
    if "cross_session" in result:
        c = result["cross_session"]
        where = f"{c['people_with_2_sessions']} people with 2+ of {c['sessions']} sessions"
        for unit in ("sessions", "samples"):
            table.add_row(f"enrol 1 session, identify other {unit}: rank-1", f"{c['closed_set'][unit]['rank_1']:.4f}")
        table.add_row("cross-session EER (session templates)", f"{c['verification']['eer']:.4f}")
        for fpir, entry in c["open_set"]["fpir"].items():
            value = f"{entry['dir']:.4f}" if entry["dir"] is not None else "n/a: too few strangers"
            table.add_row(f"cross-session DIR @ FPIR {fpir}", value)
        table.caption = f"cross-session: {where}"
    e = result["episodes"]
    if "accuracy" in e:
        table.add_row(f"{e['n_way']}-way {e['k_shot']}-shot", f"{e['accuracy']:.4f} ± {e['ci95']:.4f} (chance {e['chance']:.2f})")
    Console().print(table)
