"""GPU check: the same code path on CUDA as on the CPU, and how fast mining runs there.

Not part of CI (CI has no GPU). Run on a machine with CUDA:

    python benchmarks/device_check.py

1. every registered encoder, 1D/2D/3D: CUDA output equals the CPU output;
2. every triplet mining mode: CUDA loss and gradients equal the CPU ones;
3. time of a forward+backward semi-hard / batch-hard / all step at large B on CUDA;
4. the train and evaluate recipes end to end with ``device=cuda``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from convgen.metric.losses import TripletLoss
from convgen.registry import get_registry

SMALL = {"resnet": {"channels": (8, 16, 16, 32)}, "vgg": {"channels": (8, 8, 16, 16, 16)}}


def encoders(table: Table) -> None:
    for name in sorted(get_registry("encoder")):
        for dims in (1, 2, 3):
            torch.manual_seed(0)
            enc = get_registry("encoder").get(name)(dims, in_channels=2, **SMALL.get(name, {})).eval()
            x = torch.randn(4, 2, *(32,) * dims)
            with torch.no_grad():
                cpu = enc(x)
                gpu = enc.cuda()(x.cuda()).cpu()
            err = (cpu - gpu).abs().max().item()
            table.add_row(f"encoder {name} {dims}D", f"max |cpu − cuda| = {err:.2e}", "ok" if err < 1e-3 else "MISMATCH")


def mining(table: Table) -> None:
    gen = torch.Generator().manual_seed(0)
    labels = torch.arange(64).repeat_interleave(4)
    emb = torch.nn.functional.normalize(torch.randn(256, 128, generator=gen), dim=1)
    for mode in ("all", "semi-hard", "batch-hard"):
        results = []
        for device in ("cpu", "cuda"):
            e = emb.detach().to(device).clone().requires_grad_(True)
            loss = TripletLoss(mining=mode)(e, labels.to(device))
            loss.backward()
            results.append((loss.item(), e.grad.cpu()))
        d_loss = abs(results[0][0] - results[1][0])
        d_grad = (results[0][1] - results[1][1]).abs().max().item()
        ok = d_loss < 1e-5 and d_grad < 1e-5
        table.add_row(f"triplet {mode} B=256", f"|Δloss| {d_loss:.1e}, max |Δgrad| {d_grad:.1e}", "ok" if ok else "MISMATCH")


def speed(table: Table) -> None:
    for batch in (1024, 4096, 8192):
        labels = torch.arange(batch // 4).repeat_interleave(4).cuda()
        for mode in ("semi-hard", "batch-hard", "all"):
            loss_fn = TripletLoss(mining=mode)
            emb = torch.nn.functional.normalize(torch.randn(batch, 128, device="cuda"), dim=1).requires_grad_(True)
            times = []
            torch.cuda.reset_peak_memory_stats()
            for _ in range(6):
                torch.cuda.synchronize()
                start = time.perf_counter()
                loss_fn(emb, labels).backward()
                torch.cuda.synchronize()
                times.append(time.perf_counter() - start)
            peak = torch.cuda.max_memory_allocated() / 2**20
            table.add_row(f"triplet {mode} B={batch} cuda", f"{sorted(times[1:])[2] * 1e3:.2f} ms/step, peak {peak:.0f} MiB", "")


def recipes(table: Table) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        for args in (
            ["train", "device=cuda", "epochs=3", "-o", str(out / "train")],
            ["evaluate", "device=cuda", f"weights={out / 'train' / 'encoder.safetensors'}", "dataset.identity_offset=1000", "-o", str(out / "eval")],
        ):  # fmt: skip
            start = time.perf_counter()
            result = subprocess.run([sys.executable, "-m", "convgen", "run", *args], capture_output=True, text=True)
            took = time.perf_counter() - start
            if result.returncode:
                table.add_row(f"recipe {args[0]} cuda", result.stderr.strip().splitlines()[-1][:120], "FAILED")
                continue
            summary = json.loads((out / args[-1].split("/")[-1] / "summary.json").read_text())
            keys = ("best_val_eer", "samples_per_s") if args[0] == "train" else ("eer", "auc", "rank_1")
            table.add_row(f"recipe {args[0]} cuda", ", ".join(f"{k} {summary[k]:.4g}" for k in keys) + f" ({took:.0f} s)", "ok")


def main() -> None:
    if not torch.cuda.is_available():
        sys.exit("no CUDA device: this check is for a GPU machine")
    table = Table("check", "result", "", title=f"convgen on {torch.cuda.get_device_name()} (torch {torch.__version__})")
    for step in (encoders, mining, speed, recipes):
        step(table)
    Console(width=140).print(table)


if __name__ == "__main__":
    main()
