"""How much CPU a ``convgen`` command spends before it does anything: start-up cost.

Each command runs as a fresh child process; its CPU time (user + system, from the kernel's
accounting of waited-for children, so thread pools count) is compared with the floor of
any typer command line, ``python -c "import typer"``, measured in the same run. The best of
``--repeat`` runs is kept (the least disturbed by other load). Goals (issue 15):
``--help`` within 2x the floor, ``recipes list`` within 4x.

    python benchmarks/bench_startup.py [--repeat 7]

``gallery list`` runs on a small gallery the script creates (random embeddings; listing
never embeds). The last column says whether the child imported torch or MONAI
(``-X importtime``, one extra run per command). For context, one more row times a
two-command typer app asked for a sub-command's help: typer (0.29) imports pydantic to
coerce the parameters of any sub-command it runs, a cost every ``convgen SUB ...`` pays.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HEAVY = ("torch", "monai")

MINIMAL_APP = """import typer
app = typer.Typer(rich_markup_mode=None)
@app.command()
def hello(loud: bool = False):
    print("hello")
@app.command()
def bye():
    print("bye")
app()
"""


def convgen_command() -> list[str]:
    """The installed ``convgen`` script beside this interpreter, else ``python -m convgen``."""
    script = Path(sys.executable).parent / "convgen"
    return [str(script)] if script.is_file() else [sys.executable, "-m", "convgen"]


def cpu_seconds(argv: list[str], env: dict) -> float:
    """User + system CPU seconds of one child run (it must succeed)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed ({done.returncode}): {done.stderr.decode()[-500:]}")
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def imports_heavy(argv: list[str], env: dict) -> list[str]:
    """The heavy top-level packages the command imports (``-X importtime`` on stderr)."""
    env = {**env, "PYTHONPROFILEIMPORTTIME": "1"}
    done = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, text=True)
    found = {line.rsplit("|", 1)[-1].strip().split(".")[0] for line in done.stderr.splitlines() if line.startswith("import time:")}
    return [name for name in HEAVY if name in found]


def make_gallery(folder: Path, people: int = 20) -> Path:
    """A small gallery to list (the command never embeds, so random vectors suffice)."""
    import numpy as np

    from convgen.gallery.store import Gallery

    path = folder / "people.db"
    rng = np.random.default_rng(0)
    with Gallery.create(path, fingerprint="bench", encoder={"name": "bench", "embedding_dim": 16}, dim=16) as gallery:
        vectors = rng.standard_normal((people * 3, 16)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        gallery.enrol_many({f"person-{i:02d}": vectors[3 * i : 3 * i + 3] for i in range(people)})
    return path


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7, help="Runs per command; the best is kept.")
    args = parser.parse_args(argv)

    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    env.pop("PYTHONPROFILEIMPORTTIME", None)
    convgen = convgen_command()
    with tempfile.TemporaryDirectory() as tmp:
        db = make_gallery(Path(tmp))
        minimal = Path(tmp) / "minimal_app.py"
        minimal.write_text(MINIMAL_APP)
        commands = {
            'python -c "import typer"': [sys.executable, "-c", "import typer"],
            "(a 2-command typer app: hello --help)": [sys.executable, str(minimal), "hello", "--help"],
            "convgen --version": [*convgen, "--version"],
            "convgen --help": [*convgen, "--help"],
            "convgen gallery --help": [*convgen, "gallery", "--help"],
            "convgen gallery list DB": [*convgen, "gallery", "list", str(db)],
            "convgen recipes list": [*convgen, "recipes", "list"],
            "convgen plugins": [*convgen, "plugins"],
            "convgen run --help": [*convgen, "run", "--help"],
        }
        best = {name: float("inf") for name in commands}
        for _ in range(args.repeat):  # interleaved, so a burst of other load hits every command alike
            for name, command in commands.items():
                best[name] = min(best[name], cpu_seconds(command, env))
        heavy = {name: imports_heavy(command, env) for name, command in commands.items()}

    floor = best['python -c "import typer"']
    goals = {"convgen --help": 2.0, "convgen recipes list": 4.0}
    print(f"convgen start-up: CPU seconds (user+sys), best of {args.repeat}; Python {platform.python_version()}, "
          f"{platform.machine()}, {os.cpu_count()} CPUs, {shutil.which('convgen') or ' '.join(convgen)}")  # fmt: skip
    print()
    width = max(map(len, commands))
    print(f"| {'command':<{width}} | CPU s | x floor | goal | imports torch/MONAI |")
    print(f"|{'-' * (width + 2)}|------:|--------:|-----:|---------------------|")
    for name, seconds in best.items():
        goal = f"{goals[name]:.0f}x" if name in goals else ""
        print(f"| {name:<{width}} | {seconds:5.3f} | {seconds / floor:6.2f}x | {goal:>4} | {', '.join(heavy[name]) or 'no':<19} |")


if __name__ == "__main__":
    main()
