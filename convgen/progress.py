"""Progress bars that show on a terminal and stay silent in logs (CI, pipes, files)."""

from __future__ import annotations

from typing import Iterable, TypeVar

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, track

T = TypeVar("T")


def live() -> bool:
    return Console().is_terminal


def bar(label: str, show: bool = True) -> Progress:
    """A transient bar with a free-text ``info`` field (loss, throughput, ...)."""
    return Progress(
        TextColumn(label), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"), TimeElapsedColumn(),
        disable=not (show and live()), transient=True,
    )  # fmt: skip


def iterate(items: Iterable[T], description: str) -> Iterable[T]:
    """``items`` with a transient bar on a terminal, plain otherwise."""
    return track(items, description=description, transient=True) if live() else items
