"""Online triplet mining: convgen's sorted-row mining against pytorch-metric-learning (PML).

PML mines by listing every valid triplet of the batch (O(B³) memory and time); convgen
ranks each negative among its anchor's sorted positives and applies the gradient of the
resulting linear form in the distances (O(B²) memory, O(B²·K) time). This times one forward + backward step on the CPU for
semi-hard, batch-hard and all-triplet mining, D=128, P×K batches with K=4, and measures
each case's peak memory in a fresh subprocess. The loss values are printed side by side
to show that both compute the same thing.

    python benchmarks/bench_mining.py [--sizes 128 512 1024 2048] [--repeats 5] [--big 4096] [--threads 1]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import resource
import statistics
import subprocess
import sys
import time

import torch
import torch.nn.functional as F
from rich.console import Console
from rich.table import Table

DIM, K, MARGIN = 128, 4, 0.2
MODES = ("semi-hard", "batch-hard", "all")
CASE_BUDGET_S = 20.0  # slow cases (PML at large B) run fewer timed steps to stay within this


def make_step(impl: str, mode: str, batch: int):
    """A closure running one forward + backward step; returns the loss value."""
    torch.manual_seed(0)
    x = torch.randn(batch, DIM, requires_grad=True)
    labels = torch.arange(batch) // K
    if impl == "convgen":
        from convgen.metric.losses import TripletLoss

        loss_fn = TripletLoss(margin=MARGIN, mining=mode)
        compute = lambda: loss_fn(F.normalize(x, dim=1), labels)  # noqa: E731
    else:
        from pytorch_metric_learning import distances, losses, miners

        distance = distances.LpDistance(power=2)  # normalises its input, like F.normalize above
        loss_fn = losses.TripletMarginLoss(margin=MARGIN, distance=distance)
        miner = {
            "semi-hard": miners.TripletMarginMiner(margin=MARGIN, type_of_triplets="semihard", distance=distance),
            "batch-hard": miners.BatchHardMiner(distance=distance),
            "all": None,
        }[mode]
        compute = lambda: loss_fn(x, labels, miner(x, labels)) if miner else loss_fn(x, labels)  # noqa: E731

    def step() -> float:
        x.grad = None
        loss = compute()
        loss.backward()
        return float(loss.detach())

    return step


def run_case(impl: str, mode: str, batch: int, repeats: int, threads: int) -> dict:
    """Child process: median step time, loss and peak RSS growth (MiB) of one case."""
    if threads:
        torch.set_num_threads(threads)
    step = make_step(impl, mode, batch)
    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    loss = step()  # warm-up
    warmup = time.perf_counter() - start
    times = []
    for _ in range(max(1, min(repeats, int(CASE_BUDGET_S / max(warmup, 1e-6))))):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    peak = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - baseline) / 1024  # ru_maxrss is KiB on Linux
    return {"seconds": statistics.median(times), "steps": len(times), "loss": loss, "peak_mib": peak}


def measure(impl: str, mode: str, batch: int, repeats: int, threads: int) -> dict | None:
    """Run one case in a fresh interpreter, so that its peak memory is its own."""
    args = [sys.executable, __file__, "--child", json.dumps([impl, mode, batch, repeats, threads])]
    done = subprocess.run(args, capture_output=True, text=True)
    if done.returncode != 0:
        Console(stderr=True).print(f"[red]{impl} {mode} B={batch} failed:[/red] {done.stderr.strip()[-500:]}")
        return None
    return json.loads(done.stdout.splitlines()[-1])


def fmt_ms(result: dict | None, repeats: int) -> str:
    if result is None:
        return "—"
    steps = "" if result["steps"] >= repeats else f" ({result['steps']} step{'s' if result['steps'] > 1 else ''})"
    return f"{result['seconds'] * 1e3:,.1f}{steps}"


def fmt(result: dict | None, key: str, spec: str) -> str:
    return "—" if result is None else format(result[key], spec)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 512, 1024, 2048])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--big", type=int, default=4096, help="also run convgen semi-hard alone at this B (0: skip)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per case (0: torch's default); "
                        "the default, 1, keeps timings stable on a shared machine")  # fmt: skip
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run_case(*json.loads(args.child))))
        return

    console = Console(width=max(Console().width, 150))
    threads = args.threads or torch.get_num_threads()
    table = Table(title=f"Triplet mining, forward + backward, CPU ({threads} thread{'s' * (threads > 1)}), D={DIM}, K={K}")
    for column in ("mining", "B", "convgen ms", "PML ms", "speed-up", "convgen peak MiB", "PML peak MiB",
                   "convgen loss", "PML loss"):  # fmt: skip
        table.add_column(column, justify="left" if column == "mining" else "right")
    have_pml = importlib.util.find_spec("pytorch_metric_learning") is not None
    if not have_pml:
        console.print("pytorch-metric-learning is not installed: timing convgen alone", style="yellow")
    results = {}
    for mode in MODES:
        for batch in args.sizes:
            ours = measure("convgen", mode, batch, args.repeats, args.threads)
            pml = measure("pml", mode, batch, args.repeats, args.threads) if have_pml else None
            results[mode, batch] = ours, pml
            speedup = f"{pml['seconds'] / ours['seconds']:.1f}×" if ours and pml else "—"
            table.add_row(mode, str(batch), fmt_ms(ours, args.repeats), fmt_ms(pml, args.repeats), speedup, fmt(ours, "peak_mib", ",.0f"),
                          fmt(pml, "peak_mib", ",.0f"), fmt(ours, "loss", ".6f"), fmt(pml, "loss", ".6f"))  # fmt: skip
            console.print(f"done: {mode} B={batch}", style="dim")
        table.add_section()
    if args.big:
        big = measure("convgen", "semi-hard", args.big, args.repeats, args.threads)
        table.add_row("semi-hard", str(args.big), fmt_ms(big, args.repeats), "not run", "—", fmt(big, "peak_mib", ",.0f"), "—",
                      fmt(big, "loss", ".6f"), "—")  # fmt: skip
        results["semi-hard", args.big] = big, None
    table.caption = (
        "Time: median over timed steps after one warm-up (fewer steps, shown in brackets, when a step is slow). "
        "Peak: growth of the process's peak RSS (ru_maxrss) from just before the first step, one fresh "
        "subprocess per case; it includes allocator caching. Embeddings are L2-normalised in both."
    )
    console.print(table)
    report_targets(console, results, args.big)


def report_targets(console: Console, results: dict, big: int) -> None:
    """Say whether the speed and memory targets hold for the sizes that were run."""
    targets = [("semi-hard", 512, 10.0), ("semi-hard", 1024, 50.0), ("batch-hard", 2048, 3.0)]
    for mode, batch, wanted in targets:
        ours, pml = results.get((mode, batch), (None, None))
        if ours and pml:
            ratio = pml["seconds"] / ours["seconds"]
            mark = "[green]met[/green]" if ratio >= wanted else "[red]MISSED[/red]"
            console.print(f"{mode} at B={batch}: {ratio:.1f}× faster than PML (target ≥ {wanted:g}×) {mark}")
    ours, _ = results.get(("semi-hard", big), (None, None))
    if ours:
        mark = "[green]met[/green]" if ours["peak_mib"] <= 4096 else "[red]MISSED[/red]"
        console.print(f"semi-hard at B={big}: peak {ours['peak_mib']:,.0f} MiB (target ≤ 4096 MiB) {mark}")


if __name__ == "__main__":
    main()
