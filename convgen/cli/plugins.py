"""``convgen plugins``: every loaded plugin, its version, and what it registered."""

from __future__ import annotations

import json

import typer
from rich.console import Console
from rich.table import Table

from convgen.cli import app


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


@app.command()
def plugins(as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table.")):
    """List loaded plugins (the core's built-ins, then entry-point plugins) and their components."""
    report = plugin_report()
    if as_json:
        typer.echo(json.dumps(report, indent=2))
        return
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
