"""Gallery recipes for a domain plugin: enrol, verify and identify from the plugin's own files.

The ``convgen gallery`` commands embed a file as one sample. A domain often needs more: a
photo goes through face detection, an ECG record is cut into heartbeats, a recording
into frames of a spectrogram. `register_gallery_recipes` gives a plugin the three
recipes with its own ``prepare(path, config)``, which turns one file into one or more
encoder inputs ``(n, C, *spatial)``. A file's embedding is the mean of the embeddings of
its ``n`` inputs, normalised again: one template per file, so that a 20-second record or
a 2-second utterance is one enrolled sample, or one search.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from rich.console import Console
from rich.table import Table

from convgen.errors import ConfigError, DataError, PathError
from convgen.gallery import api
from convgen.gallery.store import Gallery
from convgen.metric.embedder import Embedder

Prepare = Callable[[Path, dict], torch.Tensor]

GALLERY = {"gallery": "people.db", "weights": None, "threshold": None, "top_k": 5}


def embed_files(encoder: Embedder, prepare: Prepare, files: list, config: dict) -> np.ndarray:
    """One L2-normalised embedding per file: the mean over the inputs ``prepare`` cuts it into."""
    rows = []
    with torch.no_grad():
        for file in files:
            inputs = prepare(Path(file), config)
            if inputs.ndim < 3 or len(inputs) == 0:
                raise DataError(f"{file}: nothing to embed (the file gave no usable {'window' if inputs.ndim == 3 else 'input'})")
            rows.append(F.normalize(encoder(inputs).mean(0, keepdim=True), dim=1))
    return torch.cat(rows).numpy()


def open_gallery(config: dict, create: bool) -> tuple[Gallery, Embedder]:
    """The configured gallery and its encoder; a new gallery (``create``) needs ``weights``."""
    path = Path(config["gallery"])
    if path.exists():
        gallery = Gallery.open(path)
        return gallery, api.encoder_for(gallery, config["weights"]).model
    if not create:
        raise PathError(f"gallery not found: {path}; enrol someone first")
    encoder = new_gallery_encoder(config)
    return create_gallery(path, encoder), encoder.model


def new_gallery_encoder(config: dict) -> api.Encoder:
    """The encoder a new gallery will be bound to (``weights`` is required)."""
    if not config["weights"]:
        raise ConfigError("a new gallery needs weights=PATH (an encoder.safetensors from a train recipe)")
    return api.Encoder(config["weights"])


def create_gallery(path: Path, encoder: api.Encoder) -> Gallery:
    return Gallery.create(path, fingerprint=encoder.fingerprint, encoder=encoder.spec, dim=encoder.spec["embedding_dim"],
                          weights=encoder.weights)  # fmt: skip


def _list(value) -> list:
    return [value] if isinstance(value, (str, Path)) else list(value or [])


def register_gallery_recipes(register, prefix: str, prepare: Prepare, options: dict, noun: str, what: str) -> None:
    """Register ``PREFIX-enrol``, ``PREFIX-verify`` and ``PREFIX-identify``.

    Args:
        register: the ``register_recipes`` hook's callback.
        prefix: the plugin's recipe prefix, e.g. ``ecg``.
        prepare: ``prepare(path, config) -> (n, C, *spatial)``, the encoder inputs of one file.
        options: extra default keys ``prepare`` reads (e.g. ``{"ecg": {...}}``).
        noun: what a file is called in recipe keys: ``record`` gives ``records=[...]``
            (enrol, identify) and ``record=PATH`` (verify).
        what: the plural shown in descriptions, e.g. ``ECG records``.
    """
    many = noun + "s"
    base = {**copy.deepcopy(GALLERY), **copy.deepcopy(options)}

    def files(config: dict, key: str) -> list:
        found = _list(config[key])
        if not found:
            raise ConfigError(f"no {many} given: set {many}=[a, b] (or {noun}=PATH)")
        return found

    def enrol(config: dict, out_dir: Path) -> dict:
        if not config["name"]:
            raise ConfigError(f"name=PERSON is missing: whose {many} are these?")
        paths = files(config, many)
        path = Path(config["gallery"])
        if path.exists():
            gallery, encoder = open_gallery(config, create=False)
            with gallery:
                embeddings = embed_files(encoder.eval(), prepare, paths, config)
                gallery.enrol(config["name"], embeddings, sources=[str(p) for p in paths], append=config["append"])
                people = len(gallery)
        else:  # embed first: a bad file must not leave an empty new gallery behind
            encoder = new_gallery_encoder(config)
            embeddings = embed_files(encoder.model.eval(), prepare, paths, config)
            with create_gallery(path, encoder) as gallery:
                gallery.enrol(config["name"], embeddings, sources=[str(p) for p in paths], append=config["append"])
                people = len(gallery)
        Console().print(f"enrolled {config['name']} from {len(paths)} {noun}(s); {config['gallery']} holds {people} people")
        return {"name": config["name"], many: len(paths), "people": people}

    def verify(config: dict, out_dir: Path) -> dict:
        if not config["name"]:
            raise ConfigError("name=PERSON is missing: who is claimed?")
        path = files(config, noun)[0]
        gallery, encoder = open_gallery(config, create=False)
        with gallery:
            result = api.verify(gallery, embed_files(encoder.eval(), prepare, [path], config)[0], config["name"], config["threshold"])
        word = "MATCH" if result["match"] else "no match"
        Console().print(f"{word}: {path} vs {config['name']} (distance {result['distance']:.4f}, threshold {result['threshold']:.4f})")
        return {**result, "match": bool(result["match"])}

    def identify(config: dict, out_dir: Path) -> dict:
        paths = files(config, many)
        gallery, encoder = open_gallery(config, create=False)
        with gallery:
            results = api.identify(gallery, embed_files(encoder.eval(), prepare, paths, config), config["top_k"], config["threshold"])
        table = Table(title=f"identify against {config['gallery']}")
        for column in (noun, "who", "distance", "threshold"):
            table.add_column(column)
        for path, r in zip(paths, results):
            table.add_row(str(path), r["name"] or "unknown", f"{r['distance']:.4f}", f"{r['threshold']:.4f}")
        Console().print(table)
        return {"results": [{noun: str(p), **r} for p, r in zip(paths, results)]}

    register(f"{prefix}-enrol", enrol, defaults={**base, "name": None, many: [], "append": False},
             description=f"Enrol a person into an SQLite gallery from one or more {what}.")  # fmt: skip
    register(f"{prefix}-verify", verify, defaults={**copy.deepcopy(base), "name": None, noun: None},
             description=f"1:1: is this {noun} the claimed person? (gallery of {what})")  # fmt: skip
    register(f"{prefix}-identify", identify, defaults={**copy.deepcopy(base), many: []},
             description=f"Who is in each of these {what}, or 'unknown'?")  # fmt: skip
