"""Shared pieces of the ``accuracy_*.py`` benchmarks: a recipe's defaults with the ``--set``
overrides, and the mean ± std row of scores measured on several held-out folds (or seeds)."""

from __future__ import annotations

import copy

import numpy as np
import yaml


def parse_set(items) -> dict:
    """``["loss.margin=0.3"]`` (``--set`` arguments) -> ``{"loss.margin": 0.3}``, values read as YAML."""
    return {key: yaml.safe_load(value) for key, _, value in (item.partition("=") for item in items)}


def with_overrides(defaults: dict, overrides: dict | None = None) -> dict:
    """A deep copy of ``defaults`` with each dotted key of ``overrides`` set to its value."""
    config = copy.deepcopy(defaults)
    for key, value in (overrides or {}).items():
        *parents, last = key.split(".")
        node = config
        for part in parents:
            node = node[part]
        node[last] = value
    return config


def summary(ranks, eers, per: str = "fold") -> dict:
    """Rank-1 and EER as mean and std over the folds (or seeds), and each one, rounded (``rank_1_per_fold``...)."""
    ranks, eers = np.asarray(ranks, dtype=float), np.asarray(eers, dtype=float)
    return {"rank_1_mean": float(ranks.mean()), "rank_1_std": float(ranks.std()),
            "eer_mean": float(eers.mean()), "eer_std": float(eers.std()),
            f"rank_1_per_{per}": ranks.round(4).tolist(), f"eer_per_{per}": eers.round(4).tolist()}  # fmt: skip
