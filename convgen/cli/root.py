"""The root ``convgen`` command: ``--version``, ``--debug``, and user errors as one line.

The command groups (`convgen.cli.gallery`, ``plugins``, ``recipes``, ``run``) add their
commands to `app` here; `convgen.cli` imports them all, so no group imports the package
that imports it.
"""

from __future__ import annotations

import typer
from typer.core import TyperGroup

from convgen.errors import ConvgenError, from_environment


class _ConvgenGroup(TyperGroup):
    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except Exception as exc:  # noqa: BLE001 - a user error, or a fault of the machine (disk full...), is one line
            error = exc if isinstance(exc, ConvgenError) else from_environment(exc)
            if error is None or ctx.params.get("debug"):
                raise
            typer.echo(f"error: {error}", err=True)
            raise typer.Exit(error.exit_code) from None


app = typer.Typer(
    cls=_ConvgenGroup,
    help="convgen: Siamese/triplet similarity learning and Gram style transfer, for 1D, 2D and 3D data.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # click's plain help: shows every default (rich markup ate "[default: ...]") and starts faster
)


def _version(value: bool):
    if value:
        from convgen import __version__  # read from the package metadata: only --version needs it

        typer.echo(f"convgen {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Show the version and exit."),
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks for errors."),
):
    """convgen: one ConvNet toolkit for 1D signals, 2D images and 3D volumes."""
