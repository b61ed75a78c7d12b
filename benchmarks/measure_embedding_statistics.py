"""Mean and covariances of real face embeddings, for `bench_gallery.py --model dlib-orl`.

Embeds every ORL photo (40 people x 10) with dlib's pretrained encoder (convgen-faces[dlib]),
L2-normalises, and writes ``benchmarks/data/dlib_orl_statistics.safetensors``:

- ``mean`` (128,): the mean embedding;
- ``total`` (128, 128): the covariance of all embeddings (what a gallery of many people looks like);
- ``within`` (128, 128): the pooled covariance of each person's embeddings about their own mean
  (how two photos of one person differ).

A million vectors drawn from a Gaussian with these moments have the spectrum of real
embeddings (90% of the variance in ~30 directions, all in a cap around the mean), which
uniform random vectors (every direction equal) do not; graph indexes care about exactly that.

    python benchmarks/measure_embedding_statistics.py ../shared/data/faces/orl
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

OUT = Path(__file__).resolve().parent / "data" / "dlib_orl_statistics.safetensors"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", help="ORL: one folder of photos per person")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_faces import embed, faces
    from convgen import registry
    from convgen.metric.embedder import Embedder
    from convgen_faces import recipes

    _, chips, labels = faces(args.root, None, recipes.DLIB_FACES)
    x = embed(Embedder(registry.build("encoder", {"name": "dlib-resnet"})).eval(), chips).astype(np.float64)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    people = np.unique(labels)
    deviations = np.concatenate([x[labels == p] - x[labels == p].mean(0) for p in people])
    stats = {
        "mean": x.mean(0),
        "total": np.cov(x.T),
        "within": deviations.T @ deviations / (len(x) - len(people)),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: torch.from_numpy(v.astype(np.float32)) for k, v in stats.items()}, str(args.out),
              metadata={"source": "ORL faces (AT&T Laboratories Cambridge), dlib_face_recognition_resnet_model_v1",
                        "photos": str(len(x)), "people": str(len(people))})  # fmt: skip
    spectrum = np.linalg.eigvalsh(stats["total"])[::-1]
    share = np.cumsum(spectrum) / spectrum.sum()
    print(f"{len(x)} photos of {len(people)} people -> {args.out}; 90% of the variance in {int(np.searchsorted(share, 0.9)) + 1} directions")


if __name__ == "__main__":
    main()
