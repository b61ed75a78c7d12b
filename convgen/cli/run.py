"""``convgen run RECIPE [key=value ...]``."""

from __future__ import annotations

import time
from pathlib import Path
from typing import List, Optional

import typer

from convgen.cli.root import app
from convgen.errors import ConfigError


def complete_recipe(incomplete: str) -> list:
    """Shell completion: recipe names (with their descriptions; nothing heavy is imported),
    then recipe files and run folders."""
    from convgen.registry import get_registry

    names = [(e.name, e.description) for e in get_registry("recipe").entries() if e.name.startswith(incomplete)]
    paths = sorted(Path().glob(incomplete + "*")) if incomplete and not incomplete.startswith("/") else []
    return names + [str(p) + ("/" if p.is_dir() else "") for p in paths if p.is_dir() or p.suffix in (".yaml", ".yml")]


@app.command(context_settings={"allow_extra_args": False})
def run(
    recipe: str = typer.Argument(..., help="A registered recipe name (see `convgen recipes list`) or a recipe YAML file.",
                                 autocompletion=complete_recipe),  # fmt: skip
    overrides: Optional[List[str]] = typer.Argument(None, help="Dotted overrides parsed as YAML, e.g. encoder.embedding_dim=64."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Output folder [default: runs/RECIPE-TIMESTAMP]."),
    print_config: bool = typer.Option(False, "--print-config", help="Print the resolved config as YAML and exit."),
    resume: bool = typer.Option(False, "--resume", help="Continue an interrupted run: `convgen run RUN_DIR --resume`."),
    force: bool = typer.Option(False, "--force", help="Write into an -o folder that is not empty (another run's outputs, or other files), overwriting what the run writes."),
):
    """Run a recipe. The resolved config is saved as OUTPUT/config.yaml; `convgen run OUTPUT/config.yaml` reruns it.

    An existing OUTPUT folder must be empty (a run never overwrites another's outputs): continue an
    interrupted run with --resume, or overwrite with --force.
    """
    from convgen import config
    from convgen.running import run_recipe

    if Path(recipe).is_dir():
        if not resume:
            raise ConfigError(f"{recipe} is a folder; to continue that run use `convgen run {recipe} --resume`")
        output = output or Path(recipe)
        recipe = str(Path(recipe) / "config.yaml")
    elif resume and output is None and config.is_recipe_file(recipe):
        output = Path(recipe).parent
    if resume and output is None:
        raise ConfigError("--resume needs the run's folder: `convgen run RUN_DIR --resume`")
    resolved_recipe, resolved = config.resolve(recipe, overrides or [])
    if print_config:
        typer.echo(config.dump(resolved_recipe.name, resolved), nl=False)
        return
    out = output or Path("runs") / f"{resolved_recipe.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    run_recipe(resolved_recipe, resolved, out, resume=resume, force=force)
    typer.echo(f"outputs: {out}")
