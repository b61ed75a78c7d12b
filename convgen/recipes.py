"""Recipes: named jobs with a complete default config, run by ``convgen run``."""

from __future__ import annotations

import copy
import inspect
import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from convgen import config as configuration
from convgen.distributed import env_rank
from convgen.errors import ConfigError, ConvgenError
from convgen.io import atomic_write_text


@dataclass(frozen=True)
class Recipe:
    """A registered recipe.

    Attributes:
        name: what ``convgen run NAME`` calls it.
        run: ``run(config, out_dir) -> summary | None``.
        defaults: the complete default config; its keys are the keys a user may set.
        components: top-level keys that name registry components, and their kind.
        description: one line for ``convgen recipes list``.
    """

    name: str
    run: Callable[[dict, Path], Any]
    defaults: dict = field(default_factory=dict)
    components: dict[str, str] = field(default_factory=dict)
    description: str = ""


def with_changes(defaults: dict, **changes) -> dict:
    """A deep copy of a recipe's ``defaults`` with top-level keys replaced: how a plugin
    derives its recipe (``faces-train``) from a core one (``train``) without sharing state."""
    out = copy.deepcopy(defaults)
    out.update(copy.deepcopy(changes))
    return out


def seed_everything(seed: int | None) -> None:
    """Seed Python, NumPy and torch, so that a resolved config reproduces its run on CPU."""
    if seed is None:
        return
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def supports_resume(recipe: Recipe) -> bool:
    return "resume" in inspect.signature(recipe.run).parameters


def run_recipe(recipe: Recipe, config: dict, out_dir: Path, resume: bool = False) -> Any:
    """Write the resolved config next to the outputs, seed, and run the recipe.

    With ``resume``, ``out_dir`` must hold the same resolved config (the run being
    continued); recipes that can resume take a ``resume`` keyword argument.
    Under ``torchrun`` only rank 0 writes the config and the summary. A run refused with
    a user error before it wrote any output leaves nothing behind, not even its config.
    """
    text = configuration.dump(recipe.name, config)
    main = env_rank() == 0
    if resume:
        if not supports_resume(recipe):
            raise ConfigError(f"recipe {recipe.name!r} cannot resume; run it again instead")
        saved = out_dir / "config.yaml"
        if not saved.is_file():
            raise ConfigError(f"nothing to resume in {out_dir}: it has no config.yaml")
        if saved.read_text(encoding="utf-8") != text:
            raise ConfigError(f"{saved} differs from this run's config; resume with `convgen run {out_dir} --resume`")
    created = [p for p in (out_dir, *out_dir.parents) if not p.exists()]  # deepest first
    out_dir.mkdir(parents=True, exist_ok=True)
    if main:
        atomic_write_text(out_dir / "config.yaml", text)
    seed_everything(config.get("seed"))
    try:
        summary = recipe.run(config, out_dir, resume=True) if resume else recipe.run(config, out_dir)
    except ConvgenError:
        if main and not resume:
            _discard_if_untouched(out_dir, created)
        raise
    if summary is not None and main:
        atomic_write_text(out_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
    return summary


def _discard_if_untouched(out_dir: Path, created: list[Path]) -> None:
    """Remove the config of a run that failed before writing anything else, and the folders it made."""
    if any(p.name != "config.yaml" for p in out_dir.iterdir()):
        return  # partial results (checkpoints, logs) are kept: they say how far it got and allow --resume
    (out_dir / "config.yaml").unlink(missing_ok=True)
    for folder in created:
        try:
            folder.rmdir()
        except OSError:
            break  # not empty (another run shares runs/): keep it and everything above


def resolve_device(name: str) -> torch.device:
    """``"auto"`` picks CUDA when present, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(name)
    except RuntimeError:
        raise ConfigError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N") from None
