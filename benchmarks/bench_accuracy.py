"""Accuracy on people never seen in training: baselines, convgen's defaults and shipped encoders.

One table per plugin, from the ``benchmarks/accuracy_*.py`` modules present: each exposes
``rows(quick: bool) -> list[dict]`` with the keys of `KEYS` (rank-1 and EER as mean ± std
over person-disjoint folds or seeds, and the protocol they were measured by). The core
module (``accuracy_core.py``) measures the generated dataset; the plugins' modules use
the development data under ``../shared/data`` and skip what is missing.

    python benchmarks/bench_accuracy.py                     # every module, full settings
    python benchmarks/bench_accuracy.py --quick --only core # a smoke run
    python benchmarks/bench_accuracy.py --markdown          # tables for docs/benchmarks.md
    python benchmarks/bench_accuracy.py --json rows.json    # the rows, for other tools
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
KEYS = ("plugin", "dataset", "protocol", "method", "rank_1_mean", "rank_1_std", "eer_mean", "eer_std", "folds")


def modules(only: list[str] | None = None, root: Path = HERE) -> dict[str, Path]:
    """``{name: path}`` of the ``accuracy_*.py`` modules in ``root`` (core first)."""
    found = {p.stem.removeprefix("accuracy_"): p for p in sorted(Path(root).glob("accuracy_*.py"))}
    order = sorted(found, key=lambda name: (name != "core", name))
    return {name: found[name] for name in order if not only or name in only}


def collect(only: list[str] | None = None, quick: bool = False, root: Path = HERE) -> list[dict]:
    """Every row of every module, checked for the keys; a module that fails is reported, not fatal."""
    sys.path.insert(0, str(root))
    rows = []
    for name in modules(only, root):
        started = time.perf_counter()
        try:
            got = importlib.import_module(f"accuracy_{name}").rows(quick=quick)
        except Exception as exc:  # noqa: BLE001  (one plugin's missing data must not hide the others)
            print(f"accuracy_{name}: skipped ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})", file=sys.stderr)
            continue
        for row in got:
            missing = [k for k in KEYS if k not in row]
            if missing:
                raise ValueError(f"accuracy_{name}.rows() gave a row without {', '.join(missing)}: {row}")
            rows.append(row)
        print(f"accuracy_{name}: {len(got)} rows in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    return rows


def _cell(mean, std) -> str:
    if mean is None:
        return "—"
    return f"{mean:.3f} ± {std:.3f}" if std is not None else f"{mean:.3f}"


def tables(rows: list[dict]) -> dict[str, list[list[str]]]:
    """``{plugin: [[dataset, protocol, method, rank-1, EER, folds], ...]}`` in row order."""
    out: dict[str, list[list[str]]] = {}
    for r in rows:
        out.setdefault(r["plugin"], []).append([r["dataset"], r["protocol"], r["method"], _cell(r["rank_1_mean"], r["rank_1_std"]),
                                                _cell(r["eer_mean"], r["eer_std"]), str(r["folds"])])  # fmt: skip
    return out


HEADER = ["dataset", "protocol", "method", "rank-1", "EER", "folds"]


def markdown(rows: list[dict]) -> str:
    parts = []
    for plugin, lines in tables(rows).items():
        parts.append(f"### {plugin}\n")
        parts.append("| " + " | ".join(HEADER) + " |")
        parts.append("| " + " | ".join("---" if i < 3 else "---:" for i in range(len(HEADER))) + " |")
        parts += ["| " + " | ".join(line) + " |" for line in lines]
        parts.append("")
    return "\n".join(parts)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few seeds and epochs: a smoke run")
    parser.add_argument("--only", nargs="+", help="module names (core, ecg, audio, faces, ...)")
    parser.add_argument("--markdown", action="store_true", help="print markdown tables instead of rich ones")
    parser.add_argument("--json", type=Path, help="also write the rows to this JSON file")
    args = parser.parse_args(argv)
    rows = collect(args.only, args.quick)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")
    if args.markdown:
        print(markdown(rows))
        return 0
    from rich.console import Console
    from rich.table import Table

    console = Console(width=max(120, Console().width))
    for plugin, lines in tables(rows).items():
        table = Table(title=f"{plugin}: people never seen in training")
        for i, column in enumerate(HEADER):
            table.add_column(column, justify="right" if i >= 3 else "left")
        for line in lines:
            table.add_row(*line)
        console.print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
