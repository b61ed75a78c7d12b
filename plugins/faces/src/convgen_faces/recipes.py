"""Face recipes: the core's recipes with face defaults, gallery recipes on photos, and the demo.

``faces-train``, ``faces-train-pairs``, ``faces-evaluate``, ``faces-stylize`` and
``faces-visualize`` are the core recipes (``train``, ``evaluate``, ``stylize``,
``visualize``) with defaults for photos of faces. ``faces-enrol``, ``faces-verify`` and
``faces-identify`` run photos through the face pipeline into an SQLite gallery.
``faces-demo`` is the README's end-to-end run: train, enrol one photo per held-out
person, calibrate the threshold on other people, identify everyone else.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from convgen import plugin_api as api
from convgen.plugin_api import (ConfigError, Embedder, Gallery, RecipeResult, atomic_write_text, plot_distance_histograms,
                                plot_roc, recipe, register_gallery_recipes, with_changes)
from convgen_faces.datasets import sample_dir

# The bundled ORL sample: face crops, 92 × 112 grey. At 32 × 26 (not 56 × 46) faces-train transfers better to other
# people, cameras and lighting and trains 2-3x faster (docs/faces.md, accuracy_faces.py).
FACES = {"name": "faces", "root": None, "size": [32, 26], "channels": 1, "detect": False, "people": None}
ENCODER = {"name": "resnet", "channels": [16, 32, 64, 128], "strides": [1, 2, 2, 2], "stem_stride": 2, "embedding_dim": 128}
# A mirror image, a slightly different framing, head tilt or lighting is the same person.
AUGMENT = {"flip": [2], "shift": 0.06, "rotate": 8.0, "scale": 0.08, "contrast": 0.3, "noise": 0.02}


# Each recipe below is the core recipe it is based on (register(..., based_on=...)) with these keys changed.
TRAIN = dict(
    dataset=FACES, encoder=ENCODER, augment=AUGMENT, epochs=120, sampler={"p": 8, "k": 4},
    optimizer={"name": "adamw", "lr": 0.002, "weight_decay": 0.0005, "momentum": 0.9},
    # ArcFace over the training people, not the triplet loss; 120 epochs, and 2 validation people (5%) so that ArcFace
    # trains on all the others: across ORL <-> Georgia Tech (accuracy_faces.py, seeds 0-2) rank-1 0.382 -> 0.544 and
    # 0.588 -> 0.769 (triplet, 80 epochs, 25% -> now), 16 and 10 points above Eigenfaces (docs/faces.md).
    loss={"name": "arcface", "margin": 0.2, "scale": 30.0}, batch_size=64, split={"val_fraction": 0.05, "by": "identity"},
    # The last epoch: the epoch that a few validation people of one camera pick transfers worse to other people and photos.
    keep="last",
)  # fmt: skip
# The pair head as before ArcFace's defaults: 80 epochs, a quarter of the people for validation.
TRAIN_PAIRS = {**TRAIN, "loss": {"name": "pair-classifier"}, "epochs": 80, "split": {"val_fraction": 0.25, "by": "identity"}}
EVALUATE = {"dataset": FACES, "encoder": None, "open_set_fraction": 0.5}
# dlib's pretrained encoder on its own aligned 150 × 150 RGB chips (face box from the default detector, then 5 landmarks).
DLIB_FACES = {**FACES, "size": [150, 150], "channels": 3, "detect": True, "align": "dlib", "if_no_face": "whole"}
EVALUATE_DLIB = {**EVALUATE, "dataset": DLIB_FACES, "encoder": {"name": "dlib-resnet"}, "batch_size": 16}
# Fine-tuning dlib's encoder on your people: small steps, so it keeps what it knows.
# The triplet loss (ArcFace's class vectors would start random and barely move at this learning rate), and a quarter
# of the people to validate on, since keep=best picks the epoch by them.
FINE_TUNE_DLIB = {
    "dataset": DLIB_FACES, "encoder": {"name": "dlib-resnet"}, "epochs": 5, "batch_size": 16, "keep": "best",
    "loss": {"name": "triplet", "margin": 0.2, "mining": "all"}, "split": {"val_fraction": 0.25, "by": "identity"},
    "augment": {**AUGMENT, "rotate": 0.0, "scale": 0.0, "shift": 0.02},
    "optimizer": {"name": "adamw", "lr": 0.00001, "weight_decay": 0.0001, "momentum": 0.9},
}  # fmt: skip
TRAIN_DLIB = {**TRAIN, **FINE_TUNE_DLIB}
STYLIZE = dict(
    content=str(sample_dir("photos") / "astronaut.png"), style=str(sample_dir("photos") / "brick.png"),
    channels=3, size=[192, 192], style_size=[192, 192], output="stylized.png", iterations=50,
    # One wide random layer at five scales, content kept from the start, and the content's structure coarser than
    # 2 pixels kept by the low-pass term (the style decides what is finer): chosen by bench_style.py's quality table.
    encoder={"name": "random-multiscale", "filters": 32, "embedding_dim": 64}, content_layers=["relu"], style_layers=["relu"],
    beta=30.0, lowpass=2.0, lowpass_sigma=2.0, init="content",
)  # fmt: skip
VISUALIZE = {"dataset": FACES, "encoder": ENCODER, "top_k": 9}

# Weights that record no pipeline (saved by an older convgen): detect, crop and resize as the trained encoders did.
PIPELINE = {"name": "faces", "size": [56, 46], "channels": 1, "detect": True, "margin": 0.2, "align": "none", "if_no_face": "error"}


DEMO = {**TRAIN, "held_out": {"enrolled": 10, "calibration": 5, "impostors": 5}, "fpir": 0.05, "split": {"val_fraction": 0.2}}


def split_people(classes: list[str], held_out: dict, seed: int) -> dict[str, list[str]]:
    """Disjoint groups of people: train, enrolled (one photo each), calibration, impostors."""
    wanted = {k: int(held_out[k]) for k in ("enrolled", "calibration", "impostors")}
    if min(wanted.values()) < 1 or sum(wanted.values()) + 4 > len(classes):
        raise ConfigError(f"held_out {wanted} leaves fewer than 4 of the {len(classes)} people for training")
    order = [classes[i] for i in np.random.default_rng(seed).permutation(len(classes))]
    groups, start = {}, 0
    for key, n in wanted.items():
        groups[key] = sorted(order[start : start + n])
        start += n
    groups["train"] = sorted(order[start:])
    return groups


def demo(config: dict, out_dir: Path) -> RecipeResult:
    """Train on some people; enrol one photo of each of others; identify the rest, and strangers."""
    everyone = api.build_component("dataset", {**config["dataset"], "people": None})
    groups = split_people(everyone.classes, config["held_out"], config["seed"])
    atomic_write_text(out_dir / "people.json", json.dumps(groups, indent=1) + "\n")

    train_config = with_changes(config, dataset={**config["dataset"], "people": groups["train"]})
    for key in ("held_out", "fpir"):
        train_config.pop(key)
    trained = recipe("train").run(train_config, out_dir / "train").model
    weights = Path(trained.path)
    model, spec, fp = trained.encoder, trained.spec, trained.fingerprint
    encoder = Embedder(model).eval()

    def embed(people):
        data = api.build_component("dataset", {**config["dataset"], "people": people})
        with torch.no_grad():
            vectors = torch.cat([encoder(data[i][0][None]) for i in range(len(data))]).numpy()
        return vectors, np.array([data.classes[label] for label in data.labels]), [str(f) for f in data.files]

    enrolled, enrolled_names, enrolled_files = embed(groups["enrolled"])
    first = np.array([np.flatnonzero(enrolled_names == name)[0] for name in groups["enrolled"]])
    db = out_dir / "people.db"
    db.unlink(missing_ok=True)
    with Gallery.create(db, fingerprint=fp, encoder=spec, dim=spec["embedding_dim"], weights=str(weights.resolve()),
                        pipeline=trained.pipeline) as gallery:  # fmt: skip
        gallery.enrol_many({name: enrolled[[i]] for name, i in zip(groups["enrolled"], first)})
        calibration, calibration_names, _ = embed(groups["calibration"])
        calibrated = api.calibrate(gallery, calibration, calibration_names, mode="1:N", target=config["fpir"])
        impostors, impostor_names, impostor_files = embed(groups["impostors"])
        genuine = np.setdiff1d(np.arange(len(enrolled)), first)
        probes = np.concatenate([enrolled[genuine], impostors])
        truth = [str(n) for n in enrolled_names[genuine]] + [None] * len(impostors)
        results = api.identify(gallery, probes, k=5)
        nearest = [r["candidates"][0]["name"] for r in results]

    answers = [r["name"] for r in results]
    n_genuine = len(genuine)
    held = np.concatenate([enrolled, impostors])
    held_labels = np.concatenate([enrolled_names, impostor_names])
    pairs = api.pairs_from_labels(held, held_labels)
    eer, eer_threshold = api.eer(pairs.distances, pairs.same)
    far, tar, _ = api.roc(pairs.distances, pairs.same)
    report = {
        "people": {k: len(v) for k, v in groups.items()},
        "encoder": spec["name"],
        "encoder_fingerprint": fp,
        "threshold": calibrated["threshold"],
        "calibration": calibrated,
        "rank_1_accuracy": float(np.mean([n == t for n, t in zip(nearest[:n_genuine], truth[:n_genuine])])),
        "identified": float(np.mean([a == t for a, t in zip(answers[:n_genuine], truth[:n_genuine])])),
        "impostors_rejected": float(np.mean([a is None for a in answers[n_genuine:]])),
        "accuracy": float(np.mean([a == t for a, t in zip(answers, truth)])),
        "eer": eer,
        "eer_threshold": eer_threshold,
        "searches": {"enrolled_people": n_genuine, "never_enrolled": len(impostors)},
    }
    atomic_write_text(out_dir / "report.json", json.dumps(api.finite_json(report), indent=2) + "\n")
    plot_roc(out_dir / "roc.png", far, tar, eer=eer, label=f"held-out people ({len(set(held_labels))})")
    plot_distance_histograms(out_dir / "distances.png", pairs.distances, pairs.same, threshold=calibrated["threshold"])
    _write_markdown(out_dir / "report.md", report, groups, [*zip([enrolled_files[i] for i in genuine] + impostor_files, truth, results)])
    _print_demo(report)
    summary = {k: report[k] for k in ("accuracy", "rank_1_accuracy", "identified", "impostors_rejected", "eer", "threshold")}
    return RecipeResult(summary, report=report, model=trained, files={"report": out_dir / "report.json", "gallery": db})


def _print_demo(report: dict) -> None:
    table = Table(title="faces demo: one photo enrolled per person, people never seen in training")
    table.add_column("measure")
    table.add_column("value", justify="right")
    p, s = report["people"], report["searches"]
    table.add_row("people: train / enrolled / calibration / never enrolled", f"{p['train']} / {p['enrolled']} / {p['calibration']} / {p['impostors']}")
    table.add_row("searches: enrolled people / never enrolled", f"{s['enrolled_people']} / {s['never_enrolled']}")
    table.add_row("rank-1 accuracy (nearest enrolled person)", f"{report['rank_1_accuracy']:.3f}")
    table.add_row("enrolled people identified (within threshold)", f"{report['identified']:.3f}")
    table.add_row("never-enrolled people rejected", f"{report['impostors_rejected']:.3f}")
    table.add_row("open-set accuracy (right name, or 'unknown')", f"{report['accuracy']:.3f}")
    table.add_row("verification EER (held-out people)", f"{report['eer']:.3f}")
    c = report["calibration"]
    table.add_row(f"calibrated threshold (FPIR {c['target']:g})", f"{report['threshold']:.4f}")
    Console().print(table)


def _write_markdown(path: Path, report: dict, groups: dict, searches) -> None:
    """A short human-readable report: the numbers, then every search and its answer."""
    lines = [
        "# Face identification demo", "",
        f"Trained on {len(groups['train'])} people; enrolled ONE photo of each of {len(groups['enrolled'])} others; "
        f"threshold calibrated at FPIR {report['calibration']['target']:g} on {len(groups['calibration'])} more people; "
        f"searched the other photos of the enrolled people and every photo of {len(groups['impostors'])} people never enrolled.", "",
        "| measure | value |", "|---|---|",
        f"| rank-1 accuracy (nearest enrolled person) | {report['rank_1_accuracy']:.3f} |",
        f"| enrolled people identified (within threshold) | {report['identified']:.3f} |",
        f"| never-enrolled people rejected | {report['impostors_rejected']:.3f} |",
        f"| open-set accuracy | {report['accuracy']:.3f} |",
        f"| verification EER | {report['eer']:.3f} |",
        f"| calibrated threshold (squared distance) | {report['threshold']:.4f} |", "",
        "![ROC](roc.png)", "",
        "| photo | truth | answer | distance |", "|---|---|---|---|",
    ]  # fmt: skip
    for photo, truth, result in searches:
        answer = result["name"] or "unknown"
        mark = "" if answer == (truth or "unknown") else " ✗"
        lines.append(f"| {Path(photo).parent.name}/{Path(photo).name} | {truth or 'never enrolled'} | {answer}{mark} | {result['distance']:.4f} |")
    atomic_write_text(path, "\n".join(lines) + "\n")


def register(register_recipe) -> None:
    """Every face recipe, registered through the plugin's ``register_recipes`` hook."""
    register_recipe("faces-train", based_on="train", defaults=TRAIN,
                    description="Train a face encoder with the ArcFace loss over the training people (default: the bundled ORL sample).")
    register_recipe("faces-train-dlib", based_on="train", defaults=TRAIN_DLIB,
                    description="Fine-tune dlib's pretrained face encoder with the triplet loss (needs convgen-faces[dlib]).")
    register_recipe("faces-train-pairs", based_on="train", defaults=TRAIN_PAIRS,
                    description="Train a Siamese face verifier with the pair-classifier head.")
    register_recipe("faces-evaluate", based_on="evaluate", defaults=EVALUATE,
                    description="Face verification ROC/EER and one-shot identification on people unseen in training.")
    register_recipe("faces-evaluate-dlib", based_on="evaluate", defaults=EVALUATE_DLIB,
                    description="The same evaluation with dlib's pretrained face encoder (needs convgen-faces[dlib]).")
    register_gallery_recipes(register_recipe, "faces", PIPELINE, noun="photo", what="face photos", encoder={"name": "dlib-resnet"})
    register_recipe("faces-stylize", based_on="stylize", defaults=STYLIZE,
                    description="Style transfer on photos (default: the bundled portrait styled with a brick texture), PNG out.")
    register_recipe("faces-visualize", based_on="visualize", defaults=VISUALIZE,
                    description="The face patches that most excite each unit of a face encoder.")
    register_recipe("faces-demo", demo, based_on="train", defaults=DEMO,
                    description="End to end: train, enrol one photo per person, calibrate, identify (bundled ORL sample).")
