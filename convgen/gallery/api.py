"""Gallery operations on files: enrol, verify, identify, calibrate, export and import.

A query costs one forward pass (the gallery's embeddings are computed once, at
enrolment) plus a search. The decision threshold τ is never a fixed constant: it is
calibrated on people who are NOT enrolled, at the gallery's own size, because the
false-positive identification rate of a 1:N search grows with N (see
:func:`calibrate`). Until a gallery is calibrated, verify and identify need an explicit
``threshold``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from convgen.errors import ConfigError, DataError, ModelMismatchError, PathError
from convgen.gallery.store import Gallery
from convgen.io import atomic_path, loads_json
from convgen.metric import evaluation
from convgen.metric.embedder import Embedder
from convgen.weights import check_safetensors

EXPORT_FORMAT = "convgen.gallery-export/1"


class Encoder:
    """A gallery's embedding model and input pipeline: every door (CLI, domain recipes) embeds through it.

    The network comes from ``weights`` (else the gallery's recorded weights file; else it
    is built from the gallery's or the given ``encoder`` spec, for encoders whose weights
    come with their code, such as dlib's) and is checked against the gallery's
    fingerprint. The input pipeline is, first to last: the gallery's recorded one, the
    weights' recorded one, ``fallback`` (a domain's default for weights that record
    none), or `convgen.pipelines.LEGACY`; ``overrides`` (a mapping, possibly with a
    ``name``) change it explicitly and are reported in ``overrides``.
    """

    def __init__(self, weights=None, gallery: Gallery | None = None, overrides: dict | None = None,
                 fallback: dict | None = None, encoder: dict | None = None):  # fmt: skip
        from convgen import pipelines
        from convgen.weights import build_encoder, fingerprint, load_model, ships_weights

        weights = weights or (gallery.meta.get("weights") if gallery is not None else None) or None
        if weights:
            model = load_model(weights)
            network, self.spec, self.fingerprint = model.encoder, model.spec, model.fingerprint
            recorded = model.pipeline or getattr(network, "pipeline", None)
            self.weights = model.path
        else:
            spec = gallery.encoder if gallery is not None else encoder
            if not spec:
                raise ConfigError("no encoder: pass --weights (an encoder.safetensors from a train recipe)")
            network = build_encoder(spec)  # weights that ship with the encoder's code (dlib-resnet), and its pipeline
            self.spec, self.fingerprint, self.weights = spec, fingerprint(spec, network.state_dict()), ""
            if gallery is None and not ships_weights(spec, network):  # a new gallery: the encoder must rebuild the same every time
                raise ConfigError(f"encoder {spec['name']!r} has no weights of its own (it starts random); "
                                  "give weights=PATH (--weights), an encoder.safetensors from a train recipe")  # fmt: skip
            recorded = getattr(network, "pipeline", None)
        legacy = False
        if gallery is not None:
            gallery.check_model(self.fingerprint)
            stored = gallery.meta.get("pipeline")
            if stored and stored != "null":
                recorded = json.loads(stored)
            else:
                legacy = True
                if not recorded and fallback is None:  # a gallery made before pipelines: its spatial_size, as then
                    fallback = {"name": "array", "spatial_size": json.loads(gallery.meta.get("spatial_size") or "null")}
        self.model = Embedder(network).eval()
        resolved = pipelines.resolve(recorded, overrides, fallback)
        self.pipeline, self.overrides, self.notice = resolved["pipeline"], resolved["overrides"], resolved["notice"]
        if legacy:
            self.notice = (f"notice: {gallery.path} was made before galleries recorded their input pipeline; files go through "
                           f"{pipelines.describe(self.pipeline)} (as {'its weights record' if recorded else 'then'})")  # fmt: skip
        self._inputs = pipelines.build_pipeline(self.pipeline)

    @property
    def dim(self) -> int:
        """The embedding size: the spec's ``embedding_dim``, else the last linear layer's width."""
        if self.spec.get("embedding_dim"):
            return int(self.spec["embedding_dim"])
        linear = [m for m in self.model.encoder.modules() if isinstance(m, torch.nn.Linear)]
        if not linear:
            raise ConfigError(f"cannot tell the embedding size of encoder {self.spec['name']!r}; give it an embedding_dim")
        return int(linear[-1].out_features)

    def embed_files(self, files, show_progress: bool = False) -> np.ndarray:
        """One embedding per file: the normalised mean over the inputs its pipeline makes."""
        from convgen import pipelines

        return pipelines.embed_files(self.model, self._inputs, files, self.spec, show_progress=show_progress)

    def preview(self, file):
        """The pipeline's picture of a file (``(C, *spatial)`` in [0, 1]), or None."""
        preview = getattr(self._inputs, "preview", None)
        return preview(Path(file)) if preview is not None else None

    @property
    def is_sample(self):
        """The pipeline's test for a folder that is one sample (a DICOM series), or None: folders hold samples."""
        return getattr(self._inputs, "is_sample", None)

    def input_summary(self) -> str | None:
        """The pipeline's one-line account of its inputs so far, if it keeps one (e.g. photos with no face found)."""
        summary = getattr(self._inputs, "input_summary", None)
        return summary() if summary is not None else None

    def input_report(self) -> dict | None:
        """The pipeline's account of its inputs so far as numbers (its optional ``input_report()``), for a run's summary."""
        report = getattr(self._inputs, "input_report", None)
        return report() if report is not None else None

    def record(self) -> dict:
        """What a run writes about how it embedded: the pipeline, the user's overrides and what the pipeline reports."""
        inputs = self.input_report()
        return {"pipeline": self.pipeline, "pipeline_overrides": self.overrides, **({"input_report": inputs} if inputs else {})}

    def print_notices(self) -> None:
        """After success, on stderr, for every door (the CLI, the domain recipes): what the input pipeline
        did (if it says), a legacy encoder's notice, and any pipeline override."""
        from rich.console import Console

        from convgen import pipelines

        console = Console(stderr=True)
        lines = [f"{self.pipeline['name']}: {summary}" if (summary := self.input_summary()) else None, self.notice]
        if self.overrides:
            changed = ", ".join(f"{k}={v}" for k, v in self.overrides.items())
            lines.append(f"notice: pipeline override {changed}: files went through {pipelines.describe(self.pipeline)}")
        for line in filter(None, lines):
            console.print(line, highlight=False, soft_wrap=True)


def encoder_for(gallery: Gallery, weights=None, overrides: dict | None = None, fallback: dict | None = None) -> Encoder:
    """The gallery's encoder: ``weights`` if given, else the one recorded at creation."""
    return Encoder(weights, gallery, overrides, fallback)


def create(path, encoder: Encoder, scoring: str = "closest", backend: str = "exact", backend_options: dict | None = None) -> Gallery:
    """A new gallery bound to ``encoder``: its fingerprint, weights file and input pipeline are recorded."""
    return Gallery.create(path, fingerprint=encoder.fingerprint, encoder=encoder.spec, dim=encoder.dim, weights=encoder.weights,
                          scoring=scoring, backend=backend, backend_options=backend_options, pipeline=encoder.pipeline,
                          pipeline_overrides=encoder.overrides)  # fmt: skip


def open_gallery(path, weights=None, overrides: dict | None = None, fallback: dict | None = None, create: bool = False,
                 encoder: dict | None = None, scoring: str = "closest", backend: str = "exact",
                 backend_options: dict | None = None) -> tuple[Gallery, Encoder]:  # fmt: skip
    """An existing gallery and its encoder; or, with ``create``, the encoder of a new one (created by `enrol_people`).

    For a gallery that does not exist yet, the returned gallery is None: it is created
    only once the files have embedded, so a bad file leaves no empty gallery behind.
    """
    path = Path(path)
    if path.exists():
        gallery = Gallery.open(path)
        try:
            return gallery, Encoder(weights, gallery, overrides, fallback)
        except BaseException:
            gallery.close()
            raise
    if not create:
        raise PathError(f"gallery not found: {path}; enrol someone first (or `convgen gallery create`)")
    if not weights and not encoder:
        raise ConfigError("a new gallery needs weights=PATH (an encoder.safetensors from a train recipe)")
    return None, Encoder(weights, None, overrides, fallback, encoder=encoder)


def readable_files(folder: Path, recursive: bool = False, is_sample=None, _seen: set | None = None) -> list[Path]:
    """The files of a folder that a registered reader claims, sorted (hidden files and folders skipped).

    ``is_sample(folder)`` (a pipeline's, see `Encoder.is_sample`) says a folder is itself
    one sample (a DICOM series): it is taken whole, not searched. A folder linked twice
    (a symlink loop) is searched once.
    """
    from convgen.registry import get_registry

    seen = set() if _seen is None else _seen
    if Path(folder).resolve() in seen:
        return []
    seen.add(Path(folder).resolve())
    suffixes = tuple(get_registry("reader"))
    found = []
    for entry in Path(folder).iterdir():
        if entry.name.startswith("."):
            continue
        if entry.is_dir():
            if is_sample is not None and is_sample(entry):
                found.append(entry)
            elif recursive:
                found += readable_files(entry, True, is_sample, seen)
        elif entry.is_file() and entry.name.lower().endswith(suffixes):
            found.append(entry)
    return sorted(found)


def people_in(folder, nested: bool = False, is_sample=None) -> dict[str, list[Path]]:
    """``{person: files}`` of a folder with one sub-folder per person.

    ``nested``: a person is any folder below that holds files, named by its path
    relative to ``folder`` (``alphabet/character``). ``is_sample``: see `readable_files`.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise PathError(f"{folder} is not a folder; give a folder with one sub-folder of samples per person")
    people: dict[str, list[Path]] = {}
    subs = sorted(p for p in (folder.rglob("*") if nested else folder.iterdir()) if p.is_dir() and not p.name.startswith("."))
    for sub in subs:
        if any(part.startswith(".") for part in sub.relative_to(folder).parts):
            continue
        files = readable_files(sub, is_sample=is_sample)
        if files:
            people[sub.relative_to(folder).as_posix()] = files
    if not people:
        loose = readable_files(folder)
        hint = (f"; its {len(loose)} sample(s) sit directly in it: move each person's into a sub-folder named after them"
                if loose else "" if nested else " (nested folders: --nested)")  # fmt: skip
        raise DataError(f"no people under {folder}: expected one sub-folder of readable samples per person{hint}")
    return people


def query_files(paths, is_sample=None) -> list[Path]:
    """Files to search: files as given, folders expanded to the readable files below them (``is_sample``: see `readable_files`)."""
    files = []
    for path in map(Path, paths):
        if path.is_dir() and is_sample is not None and is_sample(path):
            files.append(path)
        elif path.is_dir():
            found = readable_files(path, recursive=True, is_sample=is_sample)
            if not found:
                raise DataError(f"no readable samples under {path}")
            files += found
        elif path.exists():
            files.append(path)
        else:
            raise PathError(f"file not found: {path}")
    if not files:
        raise DataError("no input files given")
    return files


def enrol_people(path, gallery: Gallery | None, encoder: Encoder, people: dict[str, list], append: bool = False,
                 show_progress: bool = False, **create_options) -> Gallery:  # fmt: skip
    """Embed every file of every person (one batched pass), then enrol them; creates the gallery if ``gallery`` is None.

    Everything is embedded and checked before anything is written: a bad file or a
    person already enrolled (without ``append``) leaves the gallery as it was.
    """
    names = list(people)
    files = [f for name in names for f in people[name]]
    if gallery is not None:
        _check_stored_pipeline(gallery, encoder, "enrolling")
    if gallery is not None and not append:
        enrolled = {p.name for p in gallery.people()}
        already = [n for n in names if n in enrolled]
        if already:
            who = ", ".join(repr(n) for n in already[:3]) + (f" and {len(already) - 3} more" if len(already) > 3 else "")
            raise DataError(f"{who} {'is' if len(already) == 1 else 'are'} already enrolled; add samples with --append, or remove them first")
    embeddings = encoder.embed_files(files, show_progress=show_progress)
    if gallery is None:
        gallery = create(path, encoder, **create_options)
    start = 0
    for name in names:
        n = len(people[name])
        gallery.enrol(name, embeddings[start : start + n], sources=[str(f) for f in people[name]], append=append)
        start += n
    return gallery


def _check_stored_pipeline(gallery: Gallery, encoder: Encoder, doing: str) -> None:
    """What a gallery stores (embeddings, τ) must come through its own pipeline: an override may only read, not write."""
    from convgen.pipelines import describe, pipeline_spec

    stored = gallery.pipeline
    if not encoder.overrides or not stored or pipeline_spec(stored) == encoder.pipeline:
        return
    raise ModelMismatchError(f"{gallery.path} stores what came through {describe(pipeline_spec(stored))}; {doing} through "
                             f"{describe(encoder.pipeline)} would mix inputs its distances cannot compare; leave out the "
                             "pipeline override, or make a new gallery with it")  # fmt: skip


def identify_files(gallery: Gallery, encoder: Encoder, files, k: int = 5, threshold: float | None = None,
                   show_progress: bool = False) -> list[dict]:  # fmt: skip
    """`identify` for files, each result with its ``file``."""
    if threshold is None:
        _threshold(gallery, threshold)  # no embedding before a missing threshold is reported
    results = identify(gallery, encoder.embed_files(files, show_progress=show_progress), k, threshold)
    return [{"file": str(f), **r} for f, r in zip(files, results)]


def calibrate_folder(gallery: Gallery, encoder: Encoder, folder, mode: str = "1:N", target: float = 0.01,
                     nested: bool = False, show_progress: bool = False) -> dict:  # fmt: skip
    """`calibrate` on a folder of people who are not enrolled (one sub-folder each), through the gallery's pipeline."""
    _check_stored_pipeline(gallery, encoder, "calibrating")
    people = people_in(folder, nested, encoder.is_sample)
    files = [f for files in people.values() for f in files]
    labels = [name for name, files in people.items() for _ in files]
    return calibrate(gallery, encoder.embed_files(files, show_progress=show_progress), labels, mode, target)


def identify_table(results: list[dict], title: str):
    """A rich table of identify results: file, answer, distance, threshold, runner-up."""
    from rich.table import Table

    table = Table(title=title)
    for column in ("file", "who", "distance", "threshold", "next candidate"):
        table.add_column(column, justify="right" if column in ("distance", "threshold") else "left")
    # Files relative to the folder they share, so that a narrow terminal keeps their names.
    root = _common_folder([r["file"] for r in results])
    if root:
        table.caption = f"files under {root}"
    for r in results:
        runner = r["candidates"][1] if len(r["candidates"]) > 1 else None
        table.add_row(os.path.relpath(r["file"], root) if root else r["file"], r["name"] or "unknown", f"{r['distance']:.4f}", f"{r['threshold']:.4f}",
                      f"{runner['name']} {runner['distance']:.4f}" if runner else "")  # fmt: skip
    return table


def _common_folder(files: list[str]) -> str:
    """The folder above the files' common one ('' when none: mixed relative and absolute paths)."""
    try:
        common = os.path.commonpath(files) if len(files) > 1 else files[0] if files else ""
    except ValueError:
        return ""
    return os.path.dirname(common)


def results_record(gallery: Gallery, encoder: Encoder, results: list[dict]) -> dict:
    """What ``identify`` answers (``results.json``, ``--json``): the gallery, the pipeline with overrides, the results."""
    return {"gallery": str(gallery.path), **encoder.record(), "results": results}


def write_results(out_dir, gallery: Gallery, encoder: Encoder, results: list[dict]) -> Path:
    """``results.json``, ``sheet.png`` and ``sheet.html`` in ``out_dir``; returns the PNG (see `convgen.gallery.sheet`)."""
    from convgen.gallery import sheet
    from convgen.io import atomic_write_text

    out_dir = Path(out_dir)
    atomic_write_text(out_dir / "results.json", json.dumps(results_record(gallery, encoder, results), indent=2) + "\n")

    def first_source(name):
        row = gallery.db.execute("SELECT s.source FROM samples s JOIN people p ON s.person = p.id WHERE p.name = ? "
                                 "ORDER BY s.id LIMIT 1", (name,)).fetchone()  # fmt: skip
        return row[0] if row else None

    rows = [{**r, "match_file": first_source(r["name"]) if r["name"] else None} for r in results]
    png, _ = sheet.write(out_dir, f"identify against {gallery.path.name}", rows, encoder.preview)
    return png


def _threshold(gallery: Gallery, threshold: float | None) -> float:
    from convgen.gallery.store import check_threshold

    tau = check_threshold(threshold) if threshold is not None else gallery.threshold
    if tau is None:
        raise ConfigError(
            f"{gallery.path} has no calibrated threshold; run `convgen gallery calibrate` on people who are not "
            "enrolled, or pass --threshold"
        )
    return float(tau)


def verify(gallery: Gallery, embedding, name: str, threshold: float | None = None) -> dict:
    """1:1: is this the claimed person? Accept when the distance is at most τ.

    When the gallery's weights come with a trained pair head (a ``pair-classifier``
    run), the result also holds the head's ``probability`` that the two are the same
    person (against the person's closest-scoring sample), and, once ``calibrate --far``
    has set a probability threshold, ``head_match``.
    """
    tau = _threshold(gallery, threshold)
    distance = gallery.distance_to(embedding, name)
    result = {"name": name, "match": distance <= tau, "distance": distance, "threshold": tau}
    head = pair_head(gallery)
    if head is not None:
        with torch.no_grad():
            query = torch.as_tensor(np.asarray(embedding, dtype=np.float32).reshape(1, -1))
            enrolled = torch.as_tensor(np.asarray(gallery.embeddings_of(name), dtype=np.float32))
            result["probability"] = float(head.score(query, enrolled).max())
        calibrated = (json.loads(gallery.meta.get("calibration") or "null") or {}).get("head") or {}
        if calibrated.get("threshold_probability") is not None:
            result["head_threshold"] = calibrated["threshold_probability"]
            result["head_match"] = result["probability"] >= calibrated["threshold_probability"]
    return result


def pair_head(gallery: Gallery):
    """The pair head trained with the gallery's encoder (beside its weights file), or None."""
    from convgen.metric.losses import load_pair_head

    weights = gallery.meta.get("weights")
    return load_pair_head(weights, gallery.fingerprint) if weights else None


def identify(gallery: Gallery, embeddings, k: int = 5, threshold: float | None = None) -> list[dict]:
    """1:N: who is this, or nobody? The nearest person when within τ, else ``None`` (unknown)."""
    tau = _threshold(gallery, threshold)
    results = []
    for candidates in gallery.search(embeddings, k):
        name, distance = candidates[0]
        results.append({
            "name": name if distance <= tau else None,
            "distance": distance,
            "threshold": tau,
            "candidates": [{"name": n, "distance": d} for n, d in candidates],
        })  # fmt: skip
    return results


def calibrate(gallery: Gallery, embeddings: np.ndarray, labels, mode: str = "1:N", target: float = 0.01) -> dict:
    """Choose τ from labelled embeddings of people who are not enrolled, and store it.

    ``1:N`` (default): every sample is searched against the gallery as it is; none of
    these people is enrolled, so every accepted search is a false positive. τ is the
    largest distance with FPIR ≤ ``target`` at this gallery's size. To report DIR at
    that τ, one sample of each calibration identity is added to the gallery (in memory
    only) and their other samples are searched. ``1:1``: τ at FAR ≤ ``target`` over
    same/different pairs of the calibration set; with a trained pair head (see
    `verify`), its probability threshold at the same FAR too (``head``). Either way τ and
    the report are stored in the gallery.

    The FPIR (FAR) reached comes with its 95% Clopper–Pearson interval (``fpir_ci95``,
    ``far_ci95``), the number of distinct calibration people behind it, and a one-line
    ``warning`` when they are too few to support the target (see
    `convgen.metric.evaluation.rate_estimate`: FPIR 1% needs 718 searches from 10 people
    for an upper bound below 2%).
    """
    labels = np.asarray(labels)
    if mode not in ("1:N", "1:1"):
        raise ConfigError(f"calibration mode must be '1:N' or '1:1', got {mode!r}")
    if not 0 < target < 1:
        raise ConfigError(f"the target rate must be between 0 and 1, got {target}")
    e = gallery._check_embeddings(embeddings)
    if len(e) != len(labels):
        raise DataError(f"{len(e)} embeddings but {len(labels)} labels")
    report = {"mode": mode, "target": target, "gallery_people": len(gallery), "calibration_samples": len(e)}
    if mode == "1:1":
        pairs = evaluation.pairs_from_labels(e, labels)
        entry = evaluation.tar_at_far(pairs.distances, pairs.same, [target])[target]
        if entry["threshold"] is None:
            raise DataError(f"cannot calibrate FAR {target}: {entry['note']}")
        tau = entry["threshold"]
        report |= {"threshold": tau, "far": entry["far"], "tar": entry["tar"], "different_pairs": entry["different_pairs"]}
        sure = evaluation.rate_estimate(round(entry["far"] * entry["different_pairs"]), entry["different_pairs"],
                                        len(np.unique(labels)), target, "FAR")  # fmt: skip
        report |= {"far_ci95": sure["ci95"], "people": sure["people"], "warning": sure["warning"]}
        head = pair_head(gallery)
        if head is not None:
            with torch.no_grad():
                t = torch.as_tensor(e, dtype=torch.float32)
                score = -head.logits(t[pairs.index[:, 0]], t[pairs.index[:, 1]]).double().numpy()
            h = evaluation.tar_at_far(score, pairs.same, [target])[target]
            if h["threshold"] is not None:
                report["head"] = {"threshold_probability": float(1 / (1 + np.exp(h["threshold"]))), "far": h["far"],
                                  "far_ci95": h["far_ci95"], "tar": h["tar"]}  # fmt: skip
    else:
        if len(gallery) == 0:
            raise DataError("the gallery is empty: enrol people before calibrating for 1:N search")
        n = len(e)
        if n < 1 / target:  # checked before searching: a refused calibration writes nothing, not even the index
            raise DataError(f"FPIR {target} needs at least {int(np.ceil(1 / target))} searches of people not enrolled; got {n}")
        _, vectors, names = gallery.entries()
        gallery_labels = np.array([f"gallery:{n}" for n in names])
        probe_labels = np.array([f"calibration:{label}" for label in labels])
        best = np.array([hits[0][1] for hits in gallery.search(e, 1)])
        allowed = int(np.floor(target * n))
        ordered = np.sort(best)
        tau = float(np.nextafter(ordered[allowed], -np.inf)) if allowed < n else float(ordered[-1])
        fpir = float((best <= tau).mean())
        # DIR: the calibration people, one-shot enrolled next to the real gallery (in memory).
        gallery_idx = []
        for label in np.unique(labels):
            members = np.flatnonzero(labels == label)
            if len(members) >= 2:
                gallery_idx.append(members[0])
        dir_rate = None
        if gallery_idx:
            gallery_idx = np.array(gallery_idx)
            probes = np.setdiff1d(np.flatnonzero(np.isin(labels, labels[gallery_idx])), gallery_idx)
            augmented = np.concatenate([vectors, e[gallery_idx]])
            augmented_labels = np.concatenate([gallery_labels, probe_labels[gallery_idx]])
            if len(probes):
                nearest, distance = _nearest(e[probes], augmented)
                correct = augmented_labels[nearest] == probe_labels[probes]
                dir_rate = float((correct & (distance <= tau)).mean())
        report |= {"threshold": tau, "fpir": fpir, "non_mated_searches": n, "dir": dir_rate}
        sure = evaluation.rate_estimate(int((best <= tau).sum()), n, len(np.unique(labels)), target, "FPIR",
                                        evaluation.design_effect(best, labels))  # fmt: skip
        report |= {"fpir_ci95": sure["ci95"], "effective_searches": sure["effective_trials"],
                   "non_mated_people": sure["people"], "warning": sure["warning"]}  # fmt: skip
    gallery.set_threshold(tau, report)
    return report


def _nearest(probes: np.ndarray, gallery: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Index and squared distance of each probe's nearest gallery row, in bounded memory."""
    g = gallery.astype(np.float64)
    norms = (g**2).sum(1)
    step = max(1, 2**24 // max(len(gallery), 1))
    index, distance = [], []
    for start in range(0, len(probes), step):
        p = probes[start : start + step].astype(np.float64)
        d = (p**2).sum(1)[:, None] + norms[None] - 2 * p @ g.T
        i = d.argmin(1)
        index.append(i)
        distance.append(np.maximum(d[np.arange(len(p)), i], 0.0))
    return np.concatenate(index), np.concatenate(distance)


def export(gallery: Gallery, path) -> Path:
    """Every person's embeddings and the gallery's model record, as one safetensors file."""
    names, vectors, owners = [], [], []
    for i, person in enumerate(gallery.people()):
        e = gallery.embeddings_of(person.name)
        names.append(person.name)
        vectors.append(e)
        owners += [i] * len(e)
    matrix = np.concatenate(vectors) if vectors else np.zeros((0, gallery.dim), np.float32)
    metadata = {
        "format": EXPORT_FORMAT, "names": json.dumps(names), "fingerprint": gallery.fingerprint,
        "encoder": gallery.meta["encoder"], "dim": str(gallery.dim), "scoring": gallery.scoring,
        "threshold": gallery.meta["threshold"], "calibration": gallery.meta["calibration"],
        "pipeline": json.dumps(gallery.pipeline, sort_keys=True),
    }  # fmt: skip
    with atomic_path(Path(path), mode=0o600) as tmp:  # embeddings are biometric data: owner-only, like the gallery
        save_file({"embeddings": torch.from_numpy(matrix), "person": torch.tensor(owners, dtype=torch.int64)}, str(tmp), metadata=metadata)
    return Path(path)


def import_(gallery: Gallery, path) -> int:
    """Add the people of an export to ``gallery`` (same encoder only); returns how many."""
    path = Path(path)
    if not path.is_file():
        raise PathError(f"gallery export not found: {path}" if not path.exists() else f"{path} is a folder; give a file written by `convgen gallery export`")
    check_safetensors(path, "gallery export")
    try:
        with safe_open(str(path), framework="np") as handle:
            metadata = handle.metadata() or {}
            if metadata.get("format") != EXPORT_FORMAT:
                raise DataError(f"{path} is not a convgen gallery export")
            matrix, owners = handle.get_tensor("embeddings"), handle.get_tensor("person")
    except (OSError, ValueError, Exception) as exc:
        if isinstance(exc, DataError):
            raise
        raise DataError(f"{path} is not a readable gallery export ({str(exc).splitlines()[0]})") from None
    names, matrix, owners = _check_export(path, metadata, matrix, owners, gallery)
    theirs, ours = loads_json(metadata.get("pipeline") or "null", f"{path}: its pipeline record"), gallery.pipeline
    if theirs and ours and theirs != ours:
        from convgen.pipelines import describe

        raise ModelMismatchError(f"{path} holds embeddings of files read through {describe(theirs)} but {gallery.path} reads "
                                 f"them through {describe(ours)}; import it into a gallery with the same input pipeline")  # fmt: skip
    gallery.enrol_many({name: matrix[owners == i] for i, name in enumerate(names)})
    return len(names)


def _check_export(path: Path, metadata: dict, matrix, owners, gallery: Gallery):
    """An export is untrusted: its records, names and vectors are checked before anything is enrolled."""
    from convgen.gallery.store import check_name

    def refuse(why: str):
        raise DataError(f"{path} is not a usable gallery export: {why}; export it again with `convgen gallery export`")

    if not isinstance(metadata.get("fingerprint"), str):
        refuse("it records no encoder fingerprint")
    if metadata["fingerprint"] != gallery.fingerprint:
        raise ModelMismatchError(f"{path} was exported from a gallery of another encoder; import it into a gallery built with that encoder")
    names = loads_json(metadata.get("names", "null"), f"{path}: its list of names")
    if not isinstance(names, list):
        refuse(f"its names are {type(names).__name__}, not a list")
    for name in names:
        if not isinstance(name, str):
            refuse(f"the name {name!r} is not text")
        try:
            check_name(name)
        except DataError as exc:
            refuse(str(exc).partition(";")[0])
    if len(set(names)) != len(names):
        refuse(f"the name {next(n for n in names if names.count(n) > 1)!r} appears twice")
    if matrix.ndim != 2 or matrix.shape[1] != gallery.dim or matrix.dtype != np.float32:
        refuse(f"its embeddings are {matrix.dtype} of shape {tuple(matrix.shape)}, not float32 (n, {gallery.dim})")
    if owners.ndim != 1 or len(owners) != len(matrix) or not np.issubdtype(owners.dtype, np.integer):
        refuse(f"its person index is {owners.dtype} of shape {tuple(owners.shape)}, not one integer per embedding")
    if len(owners) and (owners.min() < 0 or owners.max() >= len(names)):
        refuse(f"its person index points past its {len(names)} names")
    if names and (np.bincount(owners, minlength=len(names)) == 0).any():
        refuse("a person has no embeddings")
    if not np.isfinite(matrix).all():
        refuse("its embeddings hold NaN or infinite values")
    norms = np.linalg.norm(matrix.astype(np.float64), axis=1)
    if np.abs(norms - 1).max() > 1e-3:
        refuse(f"its embeddings have norms up to {norms.max():.4g} (down to {norms.min():.4g}); the gallery's encoder makes unit-length ones")
    return names, matrix, owners
