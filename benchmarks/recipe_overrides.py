"""A recipe's defaults with dotted overrides (``{"loss.margin": 0.3}``), for the accuracy benchmarks' ``--set``."""

from __future__ import annotations

import copy


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
