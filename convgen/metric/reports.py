"""Scoring embeddings the way a user will use them, as one JSON-ready report: verification
(ROC, EER, TAR@FAR with intervals, balanced k-fold accuracy), one-shot and open-set
identification, N-way k-shot episodes, enrol-from-one-session identification across
sessions; the baselines scored beside the encoder on the same people; the pair head's
verification; and the few numbers a training run validates with.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from rich.console import Console
from rich.table import Table

from convgen import plugins, registry
from convgen.errors import DataError
from convgen.metric import evaluation
from convgen.metric.embedder import Embedder, embed_dataset
from convgen.weights import build_encoder, ships_weights

#: Above this many values (samples × values per sample) the ``samples`` baseline is skipped.
MAX_BASELINE_VALUES = 1 << 28


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


def validation_protocol(labels, sessions=None) -> str:
    """``"cross-session"`` when at least 2 people have 2 or more sessions, else ``"one-shot"``."""
    if sessions is None:
        return "one-shot"
    people: dict = {}
    for label, session in zip(np.asarray(labels).tolist(), np.asarray(sessions).astype(str).tolist()):
        people.setdefault(label, set()).add(session)
    return "cross-session" if sum(len(s) >= 2 for s in people.values()) >= 2 else "one-shot"


def validation_metrics(embeddings: np.ndarray, labels, max_pairs: int = 50000, sessions=None) -> dict:
    """The few numbers a training run watches, scored by the protocol a user will run.

    With ``sessions`` (one recording name per sample) and at least 2 people recorded
    twice, ``cross-session``: each person is enrolled from one recording (its template)
    and identified from each of their other recordings (``rank_1``; single samples of
    those recordings: ``rank_1_samples``), never within a recording, and ``eer`` / ``auc``
    are over pairs of recording templates (see `convgen.metric.evaluation.cross_session`).
    Otherwise ``one-shot``: one enrolled sample per person, the others searched; ``eer`` /
    ``auc`` over pairs of samples. ``protocol`` says which.
    """
    labels = np.asarray(labels)
    if validation_protocol(labels, sessions) == "cross-session":
        c = evaluation.cross_session(embeddings, labels, sessions, ranks=(1,))
        return {
            "protocol": "cross-session",
            "rank_1": c["closed_set"]["sessions"]["rank_1"],
            "rank_1_samples": c["closed_set"]["samples"]["rank_1"],
            "eer": c["verification"]["eer"],
            "auc": c["verification"]["auc"],
        }
    pairs = evaluation.pairs_from_labels(embeddings, labels, max_pairs=max_pairs)
    far, tar, _ = evaluation.roc(pairs.distances, pairs.same)
    gallery, probes = one_shot_gallery(labels)
    ident = evaluation.identification(embeddings[gallery], labels[gallery], embeddings[probes], labels[probes], ranks=(1,))
    return {
        "protocol": "one-shot",
        "rank_1": ident["rank_1"],
        "eer": evaluation.eer(pairs.distances, pairs.same)[0],
        "auc": evaluation.auc(far, tar),
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
            "tar_at_far": {str(k): v for k, v in evaluation.tar_at_far(pairs.distances, pairs.same, config["far_targets"],
                                                                       people=int(len(np.unique(labels)))).items()},  # fmt: skip
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
    out["protocol"] = "cross-session" if "cross_session" in out else "one-shot"
    return out, pairs


def headline(result: dict) -> dict:
    """The protocol's rank-1 and EER of a report: across sessions when it has them, else one-shot."""
    if "cross_session" in result:
        c = result["cross_session"]
        return {"protocol": "cross-session", "rank_1": c["closed_set"]["sessions"]["rank_1"], "eer": c["verification"]["eer"]}
    return {"protocol": "one-shot", "rank_1": result["identification_one_shot"]["rank_1"], "eer": result["verification"]["eer"]}


def samples_baseline(dataset, **context) -> np.ndarray:
    """The dataset's preprocessed samples, flattened: nearest neighbour with no learning at all."""
    first, _ = dataset[0]
    if len(dataset) * first.numel() > MAX_BASELINE_VALUES:
        raise DataError(f"{len(dataset)} samples of {first.numel()} values are too many to compare raw; "
                        "leave 'samples' out of baselines")  # fmt: skip
    rows = [dataset[i][0].reshape(-1).float().numpy() for i in range(len(dataset))]
    if len({len(r) for r in rows}) > 1:
        raise DataError("samples of different sizes cannot be compared value by value")
    return np.stack(rows)


def random_network(spec: dict, seed: int = 0):
    """``(network, ships_weights)``: the architecture of ``spec`` with seeded random weights.

    An encoder whose weights come with its code (dlib's, built from its model file) is
    the same network whatever the seed (``ships_weights``); its layers are then reset to
    PyTorch's default initialisation, seeded, so that "untrained" never means "pretrained".
    """
    torch.manual_seed(seed)
    network = build_encoder(spec)
    ships = ships_weights(spec, network)
    if ships:
        torch.manual_seed(seed)
        for module in network.modules():
            if hasattr(module, "reset_parameters"):
                module.reset_parameters()
    return network, ships


def untrained_baseline(dataset, *, spec: dict, seed: int = 0, batch_size: int = 64, device=None, **context) -> np.ndarray:
    """The evaluated architecture with seeded random weights: what the network gives before training."""
    device = device or torch.device("cpu")
    return embed_dataset(Embedder(random_network(spec, seed)[0]).to(device), dataset, batch_size, device)


def baseline_reports(dataset, labels, config: dict, spec: dict, device, given_pairs=None, sessions=None) -> dict:
    """Each of ``config["baselines"]`` scored like the encoder: ``{name: report}`` (or ``{"skipped": why}``)."""
    out = {}
    for name in config.get("baselines") or []:
        fn = registry.get("baseline", name)
        if name == "untrained" and not config.get("weights") and not ships_weights(spec):
            out[name] = {"skipped": "the evaluated encoder is itself untrained"}
            continue
        try:  # a baseline that cannot handle this data is reported as skipped, never fatal to the evaluation
            features = np.asarray(fn(dataset, spec=spec, seed=config["seed"], batch_size=config["batch_size"], device=device),
                                  dtype=np.float64).reshape(len(dataset), -1)  # fmt: skip
            features /= np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12)
            out[name] = report(features, labels, config, given_pairs, sessions)[0]
        except (DataError, ValueError) as exc:  # ValueError: not one row per sample
            out[name] = {"skipped": str(exc).splitlines()[0] if str(exc) else type(exc).__name__}
            continue
        out[name]["description"] = (fn.__doc__ or name).strip().splitlines()[0]
    return out


def comparison(result: dict) -> list[dict]:
    """One row per method (baselines, the encoder, its pair head): the protocol's rank-1 and EER."""
    rows = []
    for name, entry in result["baselines"].items():
        rows.append({"method": name, **(headline(entry) if "skipped" not in entry else {"skipped": entry["skipped"]})})
    rows.append({"method": "trained", **headline(result)})
    if "verification_head" in result:
        rows.append({"method": "trained, pair head", "protocol": "pairs", "rank_1": None, "eer": result["verification_head"]["eer"]})
    return rows


def head_verification(head, embeddings: np.ndarray, pairs: evaluation.Pairs, config: dict) -> dict:
    """Verification by the pair head's probability on the same pairs as distance scoring.

    The score is the head's negative logit (a "distance": lower means more alike), so the
    ROC, EER and TAR@FAR functions apply unchanged; thresholds are reported as probabilities.
    """
    with torch.no_grad():
        e = torch.from_numpy(np.asarray(embeddings, dtype=np.float32))
        logits = torch.cat([head.logits(e[i[:, 0]], e[i[:, 1]]) for i in np.array_split(pairs.index, max(1, len(pairs.index) // 65536))])
    score = -logits.double().numpy()
    far, tar, _ = evaluation.roc(score, pairs.same)
    rate, tau = evaluation.eer(score, pairs.same)
    at_far = evaluation.tar_at_far(score, pairs.same, config["far_targets"])
    probability = lambda t: None if t is None or not np.isfinite(t) else float(1 / (1 + np.exp(t)))  # noqa: E731
    return {
        "distance": head.distance, "auc": evaluation.auc(far, tar), "eer": rate, "eer_probability": probability(tau),
        "tar_at_far": {str(k): {"tar": v["tar"], "far": v["far"], "far_ci95": v.get("far_ci95"),
                                "probability": probability(v["threshold"]), "note": v["note"]} for k, v in at_far.items()},
    }  # fmt: skip


def separation(embeddings: torch.Tensor, labels: torch.Tensor) -> dict:
    """Mean squared distance within / between identities and leave-one-out 1-NN accuracy."""
    d = torch.cdist(embeddings, embeddings).pow(2)
    same = labels[:, None] == labels[None, :]
    eye = torch.eye(len(labels), dtype=torch.bool)
    d_same, d_diff = d[same & ~eye], d[~same]
    nearest = d.masked_fill(eye, float("inf")).argmin(1)
    return {
        "mean_sq_distance_same": float(d_same.mean()) if d_same.numel() else None,
        "mean_sq_distance_different": float(d_diff.mean()) if d_diff.numel() else None,
        "nn_accuracy": float((labels[nearest] == labels).float().mean()) if len(labels) > 1 else None,
    }


@dataclass
class Evaluation:
    """An evaluation whose core metrics are in, as `convgen.hookspecs.evaluation_readouts` sees it.

    Attributes:
        config: the recipe's resolved config (a recipe based on ``evaluate`` may add keys).
        dataset: the evaluated dataset (its ``labels``, ``classes`` and samples).
        embeddings: ``(n, d)`` L2-normalised embeddings, one row per sample.
        model: the `convgen.metric.embedder.Embedder` (on ``device``, in eval mode) that
            made them: embed more data with it (`embed_dataset`) rather than rebuilding it.
        spec: the encoder's spec.
        device: where ``model`` runs.
        report: the report so far (read it; return additions as a `Readout`).
    """

    config: dict
    dataset: Any
    embeddings: np.ndarray
    model: Any
    spec: dict
    device: Any
    report: dict


@dataclass
class Readout:
    """A plugin's addition to an evaluation: ``report`` under ``key`` in ``report.json``,
    and ``summary``'s headline numbers in ``summary.json``."""

    key: str
    report: Any
    summary: dict = field(default_factory=dict)


def plugin_readouts(evaluation: Evaluation) -> list[Readout]:
    """What every installed plugin's ``evaluation_readouts`` hook adds to ``evaluation``."""
    readouts = [r for r in plugins.get_plugin_manager().hook.evaluation_readouts(evaluation=evaluation) if r is not None]
    for readout in readouts:
        if not isinstance(readout, Readout):
            raise TypeError(f"an evaluation_readouts hook returned {type(readout).__name__}, not a Readout")  # a plugin bug
        if readout.key in evaluation.report or sum(r.key == readout.key for r in readouts) > 1:
            raise TypeError(f"two read-outs of the evaluation write {readout.key!r}")  # a plugin bug
    return readouts


def print_report(result: dict) -> None:
    """The report as tables: the encoder's metrics, what training bought, and each warning once."""
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
    warnings = [e["warning"] for e in v["tar_at_far"].values() if e.get("warning")]
    if "identification_open_set" in result:
        o = result["identification_open_set"]
        for fpir, entry in o["fpir"].items():
            table.add_row(f"open-set DIR @ FPIR {fpir}", _dir(entry, o["non_mated_people"]))
            warnings += [entry["warning"]] if entry.get("warning") else []
    if "cross_session" in result:
        c = result["cross_session"]
        where = f"{c['people_with_2_sessions']} people with 2+ of {c['sessions']} sessions"
        for unit in ("sessions", "samples"):
            table.add_row(f"enrol 1 session, identify other {unit}: rank-1", f"{c['closed_set'][unit]['rank_1']:.4f}")
        table.add_row("cross-session EER (session templates)", f"{c['verification']['eer']:.4f}")
        for fpir, entry in c["open_set"]["fpir"].items():
            table.add_row(f"cross-session DIR @ FPIR {fpir}", _dir(entry, c["open_set"]["non_mated_people"]))
            warnings += [entry["warning"]] if entry.get("warning") else []
        table.caption = f"cross-session: {where}"
    e = result["episodes"]
    if "accuracy" in e:
        table.add_row(f"{e['n_way']}-way {e['k_shot']}-shot", f"{e['accuracy']:.4f} ± {e['ci95']:.4f} (chance {e['chance']:.2f})")
    if "verification_head" in result:
        h = result["verification_head"]
        table.add_row(f"pair head ({h['distance']}): ROC AUC", f"{h['auc']:.4f}")
        table.add_row("pair head: EER (probability)", f"{h['eer']:.4f} ({h['eer_probability']:.4f})" if h["eer_probability"] is not None else f"{h['eer']:.4f}")
    console = Console()
    console.print(table)
    bought = Table(title=f"what training bought ({result['protocol']}, same people)")
    for column in ("method", "rank-1", "EER"):
        bought.add_column(column, justify="left" if column == "method" else "right")
    for row in result["comparison"]:
        if "skipped" in row:
            bought.add_row(row["method"], "skipped", row["skipped"][:60])
        else:
            bought.add_row(row["method"], "—" if row["rank_1"] is None else f"{row['rank_1']:.4f}", f"{row['eer']:.4f}")
    console.print(bought)
    for line in dict.fromkeys(warnings):  # each once, in order
        console.print(f"warning: {line}", style="yellow", highlight=False, soft_wrap=True)


def _dir(entry: dict, people: int) -> str:
    """DIR at an FPIR target, with the FPIR reached, its 95% interval and the strangers behind it."""
    if entry["dir"] is None:
        return "n/a: too few searches"
    lo, hi = entry["fpir_ci95"]
    return f"{entry['dir']:.4f} (FPIR {entry['fpir']:.3g} [{lo:.2g}, {hi:.2g}], {people} people)"
