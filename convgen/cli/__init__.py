"""The ``convgen`` command line (typer). One module per command group.

User errors (`convgen.errors.ConvgenError`) become one line on stderr and the
error's exit code; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import os
import sys

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


from convgen.cli import gallery as _gallery  # noqa: E402,F401  (commands register on import)
from convgen.cli import plugins as _plugins  # noqa: E402,F401
from convgen.cli import recipes as _recipes  # noqa: E402,F401
from convgen.cli import run as _run  # noqa: E402,F401


def _add_plugin_commands() -> None:
    from convgen.plugins import get_plugin_manager

    get_plugin_manager().hook.register_commands(cli=app)


_add_plugin_commands()


def _launched_by_torchrun() -> bool:
    from convgen import distributed

    return distributed.launched_by_torchrun()


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    except SystemExit as exc:
        code = exc.code
    else:
        code = 0
    if "torch.distributed" in sys.modules and _launched_by_torchrun():  # a command that never imported torch has no gloo threads
        # gloo's worker threads can abort the interpreter's finalisation (SIGABRT after all
        # work is done and saved; pytorch/pytorch#190489), which torchrun reports as a
        # failed run. Every file is written and the process group is destroyed by now.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code if isinstance(code, int) else 1)
    raise SystemExit(code)
