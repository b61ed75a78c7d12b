"""The ``convgen`` command line (typer). One module per command group, each adding its
commands to the root `app` (`convgen.cli.root`), then the plugins' commands.

User errors (`convgen.errors.ConvgenError`) become one line on stderr and the
error's exit code; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import os
import sys

from convgen.cli import gallery as _gallery  # noqa: F401  (commands register on import)
from convgen.cli import plugins as _plugins  # noqa: F401
from convgen.cli import recipes as _recipes  # noqa: F401
from convgen.cli import run as _run  # noqa: F401
from convgen.cli.root import app


def _add_plugin_commands() -> None:
    from convgen.plugins import get_plugin_manager

    get_plugin_manager().hook.register_commands(cli=app)


_add_plugin_commands()


def _launched_by_torchrun() -> bool:
    from convgen import distributed

    return distributed.launched_by_torchrun()


def _invoke() -> int:
    """Run the app; a usage error (unknown option, bad value) is one line, like every user error."""
    import typer

    try:  # typer vendors click (typer._click) from 0.2x on; earlier releases use click itself
        from typer._click import exceptions
    except ImportError:
        from click import exceptions

    try:
        result = app(standalone_mode=False)
    except exceptions.NoArgsIsHelpError as exc:  # `convgen gallery` alone: the group's help
        exc.show()
        return exc.exit_code
    except exceptions.UsageError as exc:
        where = f" (see `{exc.ctx.command_path} --help`)" if exc.ctx is not None else ""
        print(f"error: {exc.format_message().rstrip('.')}{where}", file=sys.stderr)
        return exc.exit_code
    except exceptions.ClickException as exc:
        print(f"error: {exc.format_message()}", file=sys.stderr)
        return exc.exit_code
    except typer.Abort:
        print("error: aborted", file=sys.stderr)
        return 1
    return result if isinstance(result, int) and not isinstance(result, bool) else 0


def main() -> None:
    """Console-script entry point."""
    try:
        code = _invoke()
    except SystemExit as exc:
        code = exc.code
    if code != 130 and "torch.distributed" in sys.modules and _launched_by_torchrun():  # no gloo threads without torch; after Ctrl-C torch may be half-imported
        # gloo's worker threads can abort the interpreter's finalisation (SIGABRT after all
        # work is done and saved; pytorch/pytorch#190489), which torchrun reports as a
        # failed run. Every file is written and the process group is destroyed by now.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code if isinstance(code, int) else 1)
    raise SystemExit(code)
