"""Speakers (FSDD): a trained 1D encoder on log-mel frames vs MFCC means and log-mel means.

Two protocols on the Free Spoken Digit Dataset (6 speakers × 10 digits × 50 takes):

- **unseen utterances** (closed set of speakers): the encoder trains on takes 5–44 of all
  6 speakers and picks its best epoch on takes 45–49; everything is measured on takes
  0–4 (FSDD's test split, 300 utterances the encoder never heard).
- **unseen speakers**: the encoder trains on 4 speakers (takes 5–44, best epoch on
  45–49) and is measured on takes 0–4 of the other 2 (100 utterances). With two test
  speakers, one-shot rank-1 is a two-way choice (chance 0.5) and the EER rests on
  one different-speaker pairing: it says whether the encoder separates two voices it
  never heard, not how it ranks among many.

Every method goes through the same code, `convgen.metric.reports.report`: verification
EER / AUC over all pairs, one-shot identification (one enrolled utterance per speaker,
rank-1 over the rest). Rows: the encoder of the ``audio-train`` recipe (1D ResNet over
40 log-mel bands × 1 s, triplet loss, trained here by the core's `Trainer`), the same
network untrained, and two baselines: MFCC means (20 MFCCs averaged over the utterance)
and log-mel means (40 bands averaged), each z-scored with the training utterances'
statistics and L2-normalised (cosine scoring).

    python benchmarks/bench_audio.py                                # ../shared/data/audio/fsdd
    python benchmarks/bench_audio.py PATH --seeds 0 1 2 --epochs 6
    python benchmarks/bench_audio.py --quick                        # 2 epochs, one seed: check that it runs

Both protocols drive the core's `Trainer` directly (the ``train`` recipe's loop without its
split), so that the epoch is chosen on other takes of the training speakers and the test
takes are never seen, in training or in model selection.
"""

from __future__ import annotations

import argparse
import copy
import re
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.table import Table
from torch.utils.data import Subset

from convgen import registry
from convgen.metric.engine import Trainer
from convgen.metric import reports
from convgen.metric.augment import Augment, Augmented
from convgen.metric.embedder import Embedder, embed_dataset
from convgen.metric.reports import validation_metrics
from convgen.metric.sampling import PKSampler
from convgen.runtime import seed_everything
from convgen.weights import build_encoder, encoder_spec, load_encoder
from convgen_audio import recipes
from convgen_audio.datasets import FSDD_PATTERN
from convgen_audio.features import Representation

DEFAULT_ROOT = Path("../shared/data/audio/fsdd")  # the development data beside a checkout
TRAIN_TAKES, VAL_TAKES, TEST_TAKES = range(5, 45), range(45, 50), range(5)


def recordings_dir(root: Path) -> Path:
    return root / "recordings" if (root / "recordings").is_dir() else root


def load(root: Path):
    """Every recording once: the encoder's inputs (cached), labels, takes, and per-file baseline vectors."""
    data = registry.build("dataset", {**recipes.SPEAKERS, "root": str(root), "takes": None})
    takes = np.array([int(re.fullmatch(FSDD_PATTERN, f.stem)["take"]) for f in data.files])
    labels = np.array(data.labels)
    inputs = torch.stack([data[i][0] for i in range(len(data))])
    whole = Representation.of({**recipes.REPRESENTATION, "seconds": None})  # the whole (trimmed) utterance
    mel = Representation.of({**recipes.REPRESENTATION, "seconds": None, "normalize": "none"})
    mfcc, mel_means = [], []
    import librosa

    for file in data.files:
        y = whole.load(file)
        mfcc.append(librosa.feature.mfcc(y=y, sr=whole.sample_rate, n_mfcc=20, n_fft=whole.n_fft, hop_length=whole.hop,
                                         n_mels=whole.n_mels).mean(1))  # fmt: skip
        mel_means.append(mel.features(y).mean(1))
    return data, inputs, labels, takes, np.array(mfcc), np.array(mel_means)


def cosine_baseline(vectors: np.ndarray, train: np.ndarray, test: np.ndarray) -> np.ndarray:
    """Vectors z-scored with the training utterances' statistics, then L2-normalised."""
    mean, std = vectors[train].mean(0), vectors[train].std(0) + 1e-8
    z = (vectors[test] - mean) / std
    return z / np.linalg.norm(z, axis=1, keepdims=True)


def measure(embeddings: np.ndarray, labels: np.ndarray, seed: int) -> dict:
    config = {**registry.recipe("audio-evaluate").defaults, "seed": seed, "open_set_fraction": 1.0}
    report, _ = reports.report(embeddings, labels, config)
    return {"eer": report["verification"]["eer"], "auc": report["verification"]["auc"],
            "rank_1": report["identification_one_shot"]["rank_1"]}  # fmt: skip


def train_encoder(data, inputs, labels, train_idx, val_idx, seed: int, epochs: int, out: Path) -> tuple[Embedder, float]:
    """The audio-train recipe's encoder, loss, optimiser and augmentation, through the core's Trainer."""
    config = copy.deepcopy(registry.recipe("audio-train").defaults)
    seed_everything(seed)
    spec = encoder_spec(config["encoder"], spatial_dims=1, in_channels=inputs.shape[1])
    model = Embedder(build_encoder(spec))
    loss_fn = registry.build("loss", config["loss"], embedding_dim=spec["embedding_dim"])
    speakers = len(set(labels[train_idx].tolist()))
    sampler = PKSampler(labels[train_idx].tolist(), p=speakers, k=8, seed=seed)
    val_set, val_labels = Subset(data, val_idx.tolist()), labels[val_idx].tolist()

    def validate(m):
        embeddings = embed_dataset(m, val_set, 128, torch.device("cpu"))
        return {f"val_{k}": v for k, v in validation_metrics(embeddings, val_labels).items()}

    trainer = Trainer(model, loss_fn, spec=spec, out_dir=out, epochs=epochs, optimizer=config["optimizer"],
                      scheduler=config["scheduler"], grad_clip=config["grad_clip"], validate=validate)  # fmt: skip
    start = time.perf_counter()
    trainer.fit(Augmented(Subset(data, train_idx.tolist()), Augment(**config["augment"])), sampler)
    seconds = time.perf_counter() - start
    encoder, _, _ = load_encoder(out / "encoder.safetensors")
    return Embedder(encoder).eval(), seconds


def embed(model: Embedder, x: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        return torch.cat([model(x[i : i + 256]) for i in range(0, len(x), 256)]).numpy()


def protocol_rows(name, data, inputs, labels, mfcc, mel_means, train_idx, val_idx, test_idx, seed, epochs) -> list[dict]:
    common = {"protocol": name, "seed": seed, "train": len(train_idx), "test": len(test_idx),
              "test_speakers": len(set(labels[test_idx].tolist()))}  # fmt: skip
    y = labels[test_idx]
    with tempfile.TemporaryDirectory() as tmp:
        model, seconds = train_encoder(data, inputs, labels, train_idx, val_idx, seed, epochs, Path(tmp))
    rows = [{**common, "method": f"1D ResNet, log-mel, triplet ({epochs} epochs)", "train_s": seconds, **measure(embed(model, inputs[test_idx]), y, seed)}]
    seed_everything(seed)
    untrained = Embedder(build_encoder(encoder_spec(recipes.ENCODER, spatial_dims=1, in_channels=inputs.shape[1]))).eval()
    rows.append({**common, "method": "same network, untrained", "train_s": 0.0, **measure(embed(untrained, inputs[test_idx]), y, seed)})
    rows.append({**common, "method": "MFCC means (20), cosine", "train_s": 0.0, **measure(cosine_baseline(mfcc, train_idx, test_idx), y, seed)})
    rows.append({**common, "method": "log-mel means (40), cosine", "train_s": 0.0, **measure(cosine_baseline(mel_means, train_idx, test_idx), y, seed)})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", nargs="?", type=Path, default=DEFAULT_ROOT, help="FSDD (its folder or its recordings/ folder)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--held-out", action=argparse.BooleanOptionalAction, default=True, help="also the unseen-speakers protocol")
    parser.add_argument("--quick", action="store_true", help="2 epochs, one seed")
    args = parser.parse_args()
    seeds, epochs = ([args.seeds[0]], 2) if args.quick else (args.seeds, args.epochs)

    start = time.perf_counter()
    data, inputs, labels, takes, mfcc, mel_means = load(recordings_dir(args.root))
    print(f"{len(data)} recordings of {len(data.classes)} speakers read in {time.perf_counter() - start:.0f} s")
    in_takes = lambda r: np.isin(takes, list(r))
    rows = []
    for seed in seeds:
        rows += protocol_rows("unseen utterances", data, inputs, labels, mfcc, mel_means, np.flatnonzero(in_takes(TRAIN_TAKES)),
                              np.flatnonzero(in_takes(VAL_TAKES)), np.flatnonzero(in_takes(TEST_TAKES)), seed, epochs)  # fmt: skip
        if args.held_out:
            test_speakers = np.random.default_rng(seed).permutation(len(data.classes))[:2]
            known = ~np.isin(labels, test_speakers)
            rows += protocol_rows(f"unseen speakers ({', '.join(data.classes[s] for s in sorted(test_speakers))})", data, inputs, labels,
                                  mfcc, mel_means, np.flatnonzero(known & in_takes(TRAIN_TAKES)), np.flatnonzero(known & in_takes(VAL_TAKES)),
                                  np.flatnonzero(~known & in_takes(TEST_TAKES)), seed, epochs)  # fmt: skip
    _print(rows, args.root)
    print(f"total {time.perf_counter() - start:.0f} s")


def _print(rows: list[dict], root) -> None:
    table = Table(title=f"speakers: FSDD ({root}), every method through convgen.metric.reports.report")
    for column in ("protocol", "seed", "method", "train / test utt.", "train time", "EER", "AUC", "one-shot rank-1"):
        table.add_column(column, justify="left" if column in ("protocol", "method") else "right")
    for r in rows:
        table.add_row(r["protocol"], str(r["seed"]), r["method"], f"{r['train']} / {r['test']}", f"{r['train_s']:.0f} s",
                      f"{r['eer']:.3f}", f"{r['auc']:.3f}", f"{r['rank_1']:.3f}")  # fmt: skip
    Console(width=150).print(table)
    summary = Table(title="mean ± std over seeds")
    for column in ("protocol", "method", "EER", "AUC", "one-shot rank-1"):
        summary.add_column(column, justify="left" if column in ("protocol", "method") else "right")
    kinds = dict.fromkeys((r["protocol"].split(" (")[0], r["method"]) for r in rows)
    for protocol, method in kinds:
        group = [r for r in rows if r["protocol"].startswith(protocol) and r["method"] == method]
        cells = [f"{np.mean([g[k] for g in group]):.3f} ± {np.std([g[k] for g in group]):.3f}" for k in ("eer", "auc", "rank_1")]
        summary.add_row(protocol, method, *cells)
    Console(width=150).print(summary)


if __name__ == "__main__":
    main()
