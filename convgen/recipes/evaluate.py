"""The ``evaluate`` recipe: how well does an encoder verify and identify people it never saw?

It embeds a labelled dataset and reports verification (ROC, AUC, EER, TAR@FAR, LFW-style
k-fold accuracy on balanced same/different pairs, or on the dataset's own ``pairs``),
one-shot closed-set identification (rank-k, one enrolled sample per identity), open-set
identification (half the identities enrolled, thresholds calibrated on searches for the
others, DIR@FPIR), N-way k-shot episodes and, for a dataset of recordings (``sessions``),
enrol-from-one-recording identification across recordings, as ``report.json`` plus
``roc.png`` and ``distances.png``. Every FAR / FPIR it measures comes with its 95%
Clopper–Pearson interval and a warning when the data are too thin for the target.

Beside the encoder it scores, on the same people and by the same protocol (across
sessions where the dataset has them, else one-shot), the baselines named in
``baselines``: ``samples`` (the dataset's preprocessed samples, flattened and
L2-normalised: nearest neighbour without learning), ``untrained`` (the same
architecture with seeded random weights) and any a plugin registers (see
``register_baselines``), so a report shows what training bought. When the weights file
carries a trained pair-classifier head, verification is also scored by its probability.
"""

from __future__ import annotations

import json
from pathlib import Path

from convgen.io import atomic_write_text, finite_json
from convgen.metric import evaluation, reports
from convgen.metric.embedder import Embedder, embed_dataset
from convgen.metric.inputs import dataset_and_encoder, input_report, print_input_summary, print_inputs, recorded_inputs
from convgen.metric.losses import load_pair_head
from convgen.metric.plots import plot_distance_histograms, plot_roc
from convgen.running import RecipeResult
from convgen.runtime import resolve_device
from convgen.weights import Model, weights_path

DEFAULTS = {
    "seed": 0,
    "spatial_dims": 2,
    # the train recipe's generator (same seed), people it never saw (identity_offset)
    "dataset": {"name": "synthetic", "identities": 32, "samples_per_identity": 6, "identity_offset": 1000},
    "encoder": None,
    "weights": None,
    "pipeline": None,  # explicit changes to the weights' recorded input pipeline (pipeline.name=... pipeline.KEY=...)
    "batch_size": 64,
    "device": "auto",
    "max_pairs": 200000,
    "folds": 10,
    "ranks": [1, 5],
    "far_targets": [0.1, 0.01, 0.001],
    "fpir_targets": [0.1, 0.01],
    "open_set_fraction": 0.5,
    "episodes": {"n_way": 5, "k_shot": 1, "queries": 5, "episodes": 200},
    "baselines": ["samples", "untrained"],
}


def run(config: dict, out_dir: Path) -> RecipeResult:
    config, inputs = recorded_inputs(config)
    dataset, encoder, spec, fp = dataset_and_encoder(config)
    device = resolve_device(config["device"])
    model = Embedder(encoder).to(device).eval()
    embeddings = embed_dataset(model, dataset, config["batch_size"], device, show_progress=True)
    given_pairs, sessions = getattr(dataset, "pairs", None), getattr(dataset, "sessions", None)
    result, pairs = reports.report(embeddings, dataset.labels, config, given_pairs, sessions)
    result = {"encoder": spec["name"], "encoder_fingerprint": fp, "inputs": inputs, **result}
    head = load_pair_head(config["weights"], fp) if config.get("weights") else None
    if head is not None:
        result["verification_head"] = reports.head_verification(head, embeddings, pairs, config)
    result["baselines"] = reports.baseline_reports(dataset, dataset.labels, config, spec, device, given_pairs, sessions)
    result["comparison"] = reports.comparison(result)
    if (inputs_seen := input_report(dataset)) is not None:
        result["input_report"] = inputs_seen
    readouts = reports.plugin_readouts(reports.Evaluation(config, dataset, embeddings, model, spec, device, result))
    result.update({readout.key: readout.report for readout in readouts})
    atomic_write_text(out_dir / "report.json", json.dumps(finite_json(result), indent=2) + "\n")
    print_inputs(inputs)

    v = result["verification"]
    far, tar, _ = evaluation.roc(pairs.distances, pairs.same)
    plot_roc(out_dir / "roc.png", far, tar, eer=v["eer"], label=spec["name"])
    plot_distance_histograms(out_dir / "distances.png", pairs.distances, pairs.same, threshold=v["eer_threshold"])
    reports.print_report(result)
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
    summary["protocol"] = result["protocol"]
    summary["comparison"] = result["comparison"]
    if "input_report" in result:
        summary["input_report"] = result["input_report"]
    for readout in readouts:
        summary.update(readout.summary)
    print_input_summary(dataset, config["dataset"]["name"])
    return RecipeResult(summary, report=result, model=Model(encoder, spec, fp, inputs["pipeline"], weights_path(config)),
                        embeddings=embeddings, labels=dataset.labels,
                        files={"report": out_dir / "report.json", "roc": out_dir / "roc.png", "distances": out_dir / "distances.png"})  # fmt: skip
