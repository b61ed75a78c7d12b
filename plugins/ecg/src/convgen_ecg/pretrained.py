"""The heartbeat encoder that ships with the plugin, and its model card.

Trained by ``ecg-train`` (the recipe's defaults) on the ECG-ID persons of folds 1–4 (36
people); fold 0 (9 people) is held out for measuring it (docs/ecg.md, model card).
Its weights file records its input pipeline (one lead, band-pass, 250 Hz, one window
per R peak), so records are cut exactly as in training. ``ecg-evaluate`` and the ECG
gallery recipes use it when no ``weights`` are given. Of the bundled sample's 10
people, it never saw persons 2, 3 and 5.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

NAME = "ecg-resnet-ecgid"


def path() -> Path:
    """The shipped weights file (``models/ecg-resnet-ecgid.safetensors`` inside the package)."""
    return Path(str(resources.files("convgen_ecg") / "models" / f"{NAME}.safetensors"))


def card() -> dict:
    """The model card: data, held-out people, the command that retrains it, its scores."""
    return json.loads(path().with_suffix(".json").read_text(encoding="utf-8"))


def load():
    """``(encoder, spec, fingerprint)`` of the shipped weights."""
    from convgen.plugin_api import load_encoder

    return load_encoder(path())


def shipped_encoder(spatial_dims: int = 1, in_channels: int = 1):
    """The shipped encoder with its weights, registered as encoder ``ecg-resnet-ecgid``.

    New ECG galleries use it when no ``weights`` are given; its ``pipeline`` attribute is
    the input pipeline recorded with the weights.
    """
    from convgen.plugin_api import ConfigError, read_pipeline

    if (spatial_dims, in_channels) != (1, 1):
        raise ConfigError(f"{NAME} takes one-lead heartbeats (spatial_dims=1, in_channels=1), not {spatial_dims}D with {in_channels} channel(s)")
    encoder, _, _ = load()
    encoder.pipeline = read_pipeline(path())
    return encoder
