"""Feature taps stop at the deepest requested layer; how much does that save?

Compares ``encoder.taps(x, [layer])`` with the naive way (a full forward pass with a
forward hook on the layer) for the VGG-19 layout in 1D, 2D and 3D, on the CPU, and prints
a table of median times and the speed-up.

    python benchmarks/bench_taps.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from rich.console import Console
from rich.table import Table

from convgen.nets import VGGEncoder

CASES = [  # (spatial_dims, input size, channels, tapped layer)
    (1, 4096, (32, 64, 128, 256, 256), "relu2_1"),
    (2, 128, (32, 64, 128, 256, 256), "relu2_1"),
    (3, 32, (8, 16, 32, 64, 64), "relu2_1"),
]


def median_time(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.manual_seed(0)
    table = Table("dims", "input", "layer", "full forward + hook (ms)", "taps (ms)", "speed-up")
    for dims, size, channels, layer in CASES:
        encoder = VGGEncoder(dims, in_channels=1, channels=channels).eval()
        x = torch.randn(4, 1, *(size,) * dims)
        captured = {}
        hook = getattr(encoder.body, layer).register_forward_hook(lambda m, i, o: captured.update(out=o))
        with torch.no_grad():
            naive = median_time(lambda: encoder(x), args.repeats)
            hook.remove()
            tapped = median_time(lambda: encoder.taps(x, [layer]), args.repeats)
            assert torch.equal(encoder.taps(x, [layer])[layer], captured["out"])
        table.add_row(str(dims), "×".join([str(size)] * dims), layer, f"{naive * 1e3:.1f}", f"{tapped * 1e3:.1f}",
                      f"{naive / tapped:.1f}×")  # fmt: skip
    Console().print(table)


if __name__ == "__main__":
    main()
