"""Helpers for testing convgen and its plugins through the command line, as users run it."""

from __future__ import annotations


def invoke(*args):
    """Run the convgen CLI in-process; returns click's Result (``exit_code``, ``stdout``, ``stderr``)."""
    from typer.testing import CliRunner

    from convgen.cli import app

    return CliRunner().invoke(app, [str(a) for a in args])


def one_line_error(result, *contains: str) -> None:
    """Assert a user error: non-zero exit, one ``error: ...`` line on stderr holding ``contains``, no traceback."""
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.exit_code != 0 and len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.output
    for text in contains:
        assert text in lines[0], lines[0]
