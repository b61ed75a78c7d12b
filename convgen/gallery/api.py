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
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from convgen import io
from convgen.errors import ConfigError, DataError, ModelMismatchError, PathError
from convgen.gallery.store import Gallery
from convgen.io import atomic_path
from convgen.metric import evaluation
from convgen.metric.embedder import Embedder
from convgen.weights import check_safetensors, load_encoder

EXPORT_FORMAT = "convgen.gallery-export/1"


class Encoder:
    """The gallery's embedding model, loaded from a weights file and checked against it."""

    def __init__(self, weights, gallery: Gallery | None = None):
        encoder, self.spec, self.fingerprint = load_encoder(weights)
        if gallery is not None:
            gallery.check_model(self.fingerprint)
        self.model = Embedder(encoder).eval()
        self.weights = str(Path(weights).resolve())
        size = json.loads(gallery.meta["spatial_size"]) if gallery is not None else None
        self.spatial_size = size

    def embed_files(self, files) -> np.ndarray:
        """One embedding per file (read by the plugin that knows its file type)."""
        samples = [self._prepare(io.read(f), f) for f in files]
        if not samples:
            raise DataError("no input files given")
        with torch.no_grad():
            return torch.cat([self.model(s[None]) for s in samples]).numpy()

    def _prepare(self, sample: torch.Tensor, source) -> torch.Tensor:
        dims, channels = self.spec["spatial_dims"], self.spec["in_channels"]
        if sample.ndim - 1 != dims or sample.shape[0] != channels:
            raise DataError(
                f"{source}: a sample of shape {tuple(sample.shape)} does not fit the gallery's encoder, "
                f"which takes {channels} channel(s) and {dims} spatial axes"
            )
        if self.spatial_size:
            from monai.transforms import Resize

            sample = torch.as_tensor(Resize(self.spatial_size, mode="area")(sample))
        return sample.float()


def encoder_for(gallery: Gallery, weights=None) -> Encoder:
    """The gallery's encoder: ``weights`` if given, else the file recorded at creation."""
    path = weights or gallery.meta["weights"]
    if not path:
        raise ConfigError(f"{gallery.path} records no weights file; pass --weights")
    return Encoder(path, gallery)


def _threshold(gallery: Gallery, threshold: float | None) -> float:
    tau = threshold if threshold is not None else gallery.threshold
    if tau is None:
        raise ConfigError(
            f"{gallery.path} has no calibrated threshold; run `convgen gallery calibrate` on people who are not "
            "enrolled, or pass --threshold"
        )
    return float(tau)


def verify(gallery: Gallery, embedding, name: str, threshold: float | None = None) -> dict:
    """1:1: is this the claimed person? Accept when the distance is at most τ."""
    tau = _threshold(gallery, threshold)
    distance = gallery.distance_to(embedding, name)
    return {"name": name, "match": distance <= tau, "distance": distance, "threshold": tau}


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
    same/different pairs of the calibration set. Either way τ and the report are stored
    in the gallery.
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
    if metadata["fingerprint"] != gallery.fingerprint:
        raise ModelMismatchError(f"{path} was exported from a gallery of another encoder; import it into a gallery built with that encoder")
    names = json.loads(metadata["names"])
    gallery.enrol_many({name: matrix[owners == i] for i, name in enumerate(names)})
    return len(names)
