"""``convgen recipes list|show|cp``."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from convgen.cli.root import app
from convgen.errors import ConfigError

recipes_app = typer.Typer(help="List, show and copy recipes.", no_args_is_help=True)
app.add_typer(recipes_app, name="recipes")


def _recipe(name: str):
    from convgen.registry import get_registry

    return get_registry("recipe").get(name)


@recipes_app.command("list")
def list_recipes(as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table.")):
    """List every registered recipe, with the plugin that provides it (imports no recipe's code)."""
    from convgen.registry import get_registry

    rows = [{"recipe": e.name, "plugin": e.plugin, "description": e.description} for e in get_registry("recipe").entries()]
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table("recipe", "plugin", "description")
    for row in rows:
        table.add_row(*row.values())
    Console().print(table)


@recipes_app.command("show")
def show(name: str = typer.Argument(..., help="Recipe name.")):
    """Print a recipe's default config as YAML (every key it accepts)."""
    from convgen.config import dump

    recipe = _recipe(name)
    if recipe.description:
        typer.echo(f"# {recipe.description}")
    if recipe.based_on:
        typer.echo(f"# based on the {recipe.based_on!r} recipe")
    typer.echo(dump(recipe.name, recipe.defaults), nl=False)


@recipes_app.command("cp")
def copy(
    name: str = typer.Argument(..., help="Recipe name."),
    destination: Path = typer.Argument(..., help="YAML file to write (a folder: NAME.yaml inside it)."),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing file."),
):
    """Copy a recipe's default config to a YAML file to edit and run with `convgen run FILE`."""
    from convgen.config import dump
    from convgen.io import atomic_write_text

    recipe = _recipe(name)
    if destination.is_dir():
        destination = destination / f"{name}.yaml"
    if destination.exists() and not force:
        raise ConfigError(f"{destination} already exists; pass --force to overwrite it")
    atomic_write_text(destination, dump(recipe.name, recipe.defaults))
    typer.echo(f"wrote {destination}")
