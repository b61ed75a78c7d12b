"""Running a recipe (a `convgen.registry.Recipe`) as ``convgen run`` does: its output folder
checked, its resolved config written beside the outputs, seeded, run; and what a recipe
returns (`RecipeResult`)."""

from __future__ import annotations

import inspect
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from convgen import config as configuration
from convgen.distributed import env_rank
from convgen.errors import ConfigError, ConvgenError, PathError, from_environment
from convgen.io import atomic_write_text, os_error
from convgen.registry import Recipe
from convgen.runtime import seed_everything


@dataclass
class RecipeResult:
    """What a recipe's ``run`` returns: the summary (``summary.json``) and the objects a caller
    goes on with, so that code running a recipe never re-reads or rebuilds what it made.

    Attributes:
        summary: the headline numbers, JSON-ready; `run_recipe` writes them to ``summary.json``.
        report: the full report (``report.json``), when the recipe writes one.
        model: the encoder the run trained or used, as a `convgen.weights.Model`
            (in memory, with its spec, fingerprint, input pipeline and weights file).
        embeddings: ``(n, d)`` embeddings of the run's samples, when it made them.
        labels: one identity index per embedding.
        files: what the run wrote, by role (``{"weights": Path, "report": Path, ...}``).
    """

    summary: dict
    report: dict | None = None
    model: Any = None
    embeddings: Any = None
    labels: Any = None
    files: dict[str, Path] = field(default_factory=dict)


def summary_of(result: Any) -> dict | None:
    """The summary of what a recipe returned: a `RecipeResult`'s, a plain dict, or None."""
    return result.summary if isinstance(result, RecipeResult) else result


def supports_resume(recipe: Recipe) -> bool:
    return "resume" in inspect.signature(recipe.run).parameters


def run_recipe(recipe: Recipe, config: dict, out_dir: Path, resume: bool = False, force: bool = False) -> Any:
    """Write the resolved config next to the outputs, seed, and run the recipe.

    With ``resume``, ``out_dir`` must hold the same resolved config (the run being
    continued); recipes that can resume take a ``resume`` keyword argument. Otherwise
    an existing ``out_dir`` must be empty, unless ``force`` (a run never silently
    overwrites another run's outputs); outputs are never written through a symlinked
    folder inside ``out_dir``.
    Under ``torchrun`` only rank 0 writes the config and the summary. A run refused with
    a user error before it wrote any output leaves nothing behind, not even its config.
    """
    text = configuration.dump(recipe.name, config)
    main = env_rank() == 0
    configuration.check_device_available(config)
    if main:  # under torchrun rank 0 decides; the others follow (or are stopped with it)
        check_output_folder(out_dir, text, resume, force, config)
    if resume:
        if not supports_resume(recipe):
            raise ConfigError(f"recipe {recipe.name!r} cannot resume; run it again instead")
        saved = out_dir / "config.yaml"
        if not saved.is_file():
            raise ConfigError(f"nothing to resume in {out_dir}: it has no config.yaml")
        if saved.read_text(encoding="utf-8") != text:
            raise ConfigError(f"{saved} differs from this run's config; resume with `convgen run {out_dir} --resume`")
    check_confined(out_dir, config)
    created = [p for p in (out_dir, *out_dir.parents) if not p.exists()]  # deepest first
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        if main:
            atomic_write_text(out_dir / "config.yaml", text)
    except OSError as exc:
        raise os_error(exc, out_dir, "write the run's outputs to") from None
    seed_everything(config.get("seed"))
    try:
        result = recipe.run(config, out_dir, resume=True) if resume else recipe.run(config, out_dir)
    except Exception as exc:
        error = exc if isinstance(exc, ConvgenError) else from_environment(exc)  # disk full, out of memory...
        if error is None:
            raise
        if main and not resume:
            _discard_if_untouched(out_dir, created)
        if error is exc:
            raise
        raise error from exc
    summary = summary_of(result)
    if summary is not None and main:
        atomic_write_text(out_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
    return result


RUN_FILES = ("config.yaml", "summary.json", "checkpoint.safetensors")  # what marks a folder as a run's


def check_output_folder(out_dir: Path, text: str, resume: bool, force: bool, config: dict | None = None) -> None:
    """Refuse ``-o`` a file, or a folder that is not empty (another run's outputs, this run's
    without ``--resume``, or anyone's files): a run never overwrites what it did not write,
    unless ``--force`` says so."""
    if out_dir.exists() and not out_dir.is_dir():
        raise PathError(f"-o {out_dir} is a file; give a folder for the run's outputs")
    if resume or force or not out_dir.is_dir():
        return
    try:
        entries = sorted(entry.name for entry in out_dir.iterdir())
        saved = out_dir / "config.yaml"
        same = saved.is_file() and saved.read_text(encoding="utf-8", errors="replace") == text
    except OSError as exc:
        raise os_error(exc, out_dir, "read the output folder") from None
    if not entries:
        return
    if same:
        raise PathError(f"{out_dir} already holds this run; continue it with `convgen run {out_dir} --resume`, or pass --force to run it again over its outputs")
    if any(name in entries for name in RUN_FILES):
        what = "another run's outputs"
    else:
        what = f"{len(entries)} entr{'y' if len(entries) == 1 else 'ies'} ({', '.join(entries[:3])}{', ...' if len(entries) > 3 else ''})"
    raise PathError(f"{out_dir} is not empty: it holds {what}; choose a new folder with -o, or pass --force to write into it")


def check_confined(out_dir: Path, config: dict) -> None:
    """Refuse an ``output`` whose folders inside the run folder include a symlink (it would write elsewhere)."""
    for key in configuration.OUTPUT_KEYS:
        value = config.get(key)
        if not isinstance(value, str):
            continue
        folder = out_dir
        for part in Path(value).parts[:-1]:
            folder = folder / part
            if folder.is_symlink():
                raise PathError(f"{key}={value!r}: {folder} is a symlink, so the output would land outside the run's folder; remove the link or choose another output")
            if folder.exists() and not folder.is_dir():
                raise PathError(f"{key}={value!r}: {folder} is a file, not a folder; choose another output")


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
