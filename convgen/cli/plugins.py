"""``convgen plugins``: every loaded plugin, its version, and what it registered;
``convgen plugins new NAME``: scaffold a plugin package (`convgen.scaffold`)."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from convgen.cli.root import app

plugins_app = typer.Typer(
    help="List the loaded plugins and what each registers (`convgen plugins`), or scaffold a new one (`convgen plugins new NAME`).",
    subcommand_metavar="[COMMAND [ARGS]...]",  # bare `convgen plugins` lists
)
app.add_typer(plugins_app, name="plugins")


def plugin_report() -> list[dict]:
    """One dict per plugin: name, distribution, version, and components by kind."""
    from convgen.plugins import get_plugin_manager
    from convgen.registry import KINDS, get_registry

    pm = get_plugin_manager()
    report = {
        name: {"name": name, "distribution": info.distribution, "version": info.version, "components": {}}
        for name, info in pm.infos.items()
    }
    for kind in KINDS:
        for entry in get_registry(kind).entries():
            report[entry.plugin]["components"].setdefault(kind, []).append(entry.name)
    for name, impls in ((n, pm.get_hookcallers(pm.get_plugin(n))) for n in report):
        if any(caller.name == "register_commands" for caller in impls or []):
            report[name]["components"].setdefault("command", []).append("(adds CLI commands)")
    failed = [{"name": f.name, "target": f.target, "error": f.error} for f in pm.failures]
    return list(report.values()) + [{"name": f["name"], "failed": f["error"]} for f in failed]


@plugins_app.callback(invoke_without_command=True)
def plugins(ctx: typer.Context, as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table.")):
    """List loaded plugins (the core's built-ins, then entry-point plugins) and their components.

    With a sub-command (`convgen plugins new NAME`), do that instead.
    """
    if ctx.invoked_subcommand is not None:
        return
    report = plugin_report()
    if as_json:
        typer.echo(json.dumps(report, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table("plugin", "distribution", "registers")
    table.columns[0].no_wrap = True
    for item in report:
        if "failed" in item:
            table.add_row(item["name"], "[red]failed to load[/red]", item["failed"])
            continue
        dist = f"{item['distribution']} {item['version']}" if item["distribution"] else "-"
        registers = "\n".join(f"{kind}: {', '.join(names)}" for kind, names in item["components"].items())
        table.add_row(item["name"], dist, registers or "-")
    Console().print(table)


@plugins_app.command("new")
def new(
    name: str = typer.Argument(..., help="The plugin's name: lowercase letters, digits and dashes, e.g. 'zstack'."),
    directory: Path = typer.Option(".", "--dir", help="The folder to create convgen-NAME/ in."),
):
    """Scaffold a plugin package convgen-NAME/: pyproject.toml with the entry point, a module with one recipe, a test and a README."""
    from convgen import scaffold

    target = scaffold.create(name, directory)
    typer.echo(f"created {target}/")
    for relative in sorted(scaffold.files(name)):
        typer.echo(f"  {relative}")
    typer.echo(f"next: pip install -e '{target}[test]' && (cd {target} && pytest)")
