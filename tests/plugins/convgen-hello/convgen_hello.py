"""A small third-party plugin: a text-file reader/writer, a tiny encoder, a dataset, a loss,
a style cost, an input pipeline, a gallery search backend, a recipe and a CLI command. The tests install it through its entry point."""

import hashlib
from collections import OrderedDict
from pathlib import Path

import numpy as np

import torch
from monai.networks.layers.factories import Conv, Pool
from torch import nn

import convgen
from convgen.plugin_api import (ConfigError, DataError, Readout, SearchIndex, TappedEncoder, atomic_path, build_component,
                                embed_dataset, padded, parse_options, saved_state, write_json)


class TinyEncoder(TappedEncoder):
    """conv1 (3 wide) -> act1 -> pool1 (2 wide, stride 2) -> mean -> linear."""

    def __init__(self, spatial_dims: int, in_channels: int = 1, embedding_dim: int = 16, width: int = 4):
        body = OrderedDict(
            conv1=Conv[Conv.CONV, spatial_dims](in_channels, width, 3, padding=1),
            act1=nn.ReLU(),
            pool1=Pool[Pool.MAX, spatial_dims](kernel_size=2, stride=2),
        )
        head = nn.Sequential(Pool[Pool.ADAPTIVEAVG, spatial_dims](1), nn.Flatten(1), nn.Linear(width, embedding_dim))
        super().__init__(spatial_dims, in_channels, body, head)


class CenterLoss(nn.Module):
    """Mean squared distance of each embedding to its identity's centroid."""

    def forward(self, embeddings, labels):
        loss = embeddings.new_zeros(())
        for label in labels.unique():
            group = embeddings[labels == label]
            loss = loss + (group - group.mean(0)).pow(2).sum(1).sum()
        return loss / len(labels)


class MeanStdCost:
    """Style as per-channel mean and standard deviation, for any number of spatial axes."""

    def __call__(self, generated, target):
        g, t = generated.flatten(2), target.flatten(2)
        return (g.mean(2) - t.mean(2)).pow(2).mean() + (g.std(2) - t.std(2)).pow(2).mean()


class SineWaves(torch.utils.data.Dataset):
    """Identity k is a sine of frequency k + 1 cycles per window, with random phase and noise."""

    def __init__(self, identities: int = 4, samples_per_identity: int = 5, length: int = 64, seed: int = 0):
        gen = torch.Generator().manual_seed(seed)
        t = torch.arange(length) / length
        self.classes = [f"{k + 1}-cycles" for k in range(identities)]
        self.labels = [k for k in range(identities) for _ in range(samples_per_identity)]
        phases = torch.rand(len(self.labels), generator=gen) * 6.283
        noise = 0.1 * torch.randn(len(self.labels), length, generator=gen)
        freqs = torch.tensor(self.labels, dtype=torch.float32) + 1
        self.samples = (torch.sin(6.283 * freqs[:, None] * t + phases[:, None]) + noise).unsqueeze(1)

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, index):
        return self.samples[index], self.labels[index]


def read_txt(path: Path):
    try:
        values = [float(v) for v in Path(path).read_text().split()]
    except ValueError as exc:
        raise DataError(f"{path} is not a whitespace-separated list of numbers ({exc})") from None
    return torch.tensor(values).unsqueeze(0)  # (1, L): one channel, one spatial axis


def write_txt(path: Path, sample):
    with atomic_path(path) as tmp:  # an interrupted write never leaves half a file
        tmp.write_text(" ".join(f"{v:g}" for v in sample.flatten().tolist()) + "\n")


def count_samples(config, out_dir):
    dataset = build_component("dataset", config["dataset"])
    counts = {}
    for label in dataset.labels:
        name = dataset.classes[label]
        counts[name] = counts.get(name, 0) + 1
    print(f"{len(dataset)} samples, {len(counts)} identities")
    return {"samples": len(dataset), "per_identity": counts}


@convgen.hookimpl
def register_encoders(register):
    register("tiny", TinyEncoder)


@convgen.hookimpl
def register_losses(register):
    register("center", CenterLoss)


@convgen.hookimpl
def register_style_costs(register):
    register("mean-std", MeanStdCost)


@convgen.hookimpl
def register_datasets(register):
    register("sines", SineWaves)


@convgen.hookimpl
def register_readers(register):
    register(".txt", read_txt)


@convgen.hookimpl
def register_writers(register):
    register(".txt", write_txt)


class TextSamples:
    """A text file as one input ``(1, 1, L)``, scaled by ``scale``."""

    def __init__(self, scale: float = 1.0):
        self.scale = scale

    def __call__(self, path):
        return read_txt(path)[None] * self.scale


@convgen.hookimpl
def register_pipelines(register):
    register("text", TextSamples)


def dominant_frequency(dataset, **context):
    """The strongest frequency of each sample: the sines' identity, found without learning."""
    spectra = torch.stack([torch.fft.rfft(x.reshape(-1)).abs() for x, _ in dataset])
    peak = spectra[:, 1:].argmax(1).float() + 1
    return torch.stack([torch.cos(peak / 4), torch.sin(peak / 4)], 1).numpy()


@convgen.hookimpl
def register_baselines(register):
    register("dominant-frequency", dominant_frequency)


class BruteForceIndex(SearchIndex):
    """Plain numpy brute force (float64 distances, ties broken by id), one .npz file beside the gallery."""

    kind = "brute-force"
    defaults = {"queries_per_pass": 64}

    def __init__(self, path, dim, **options):
        super().__init__(path, dim)
        self.per_pass = parse_options(self.kind, options, self.defaults)["queries_per_pass"]
        if isinstance(self.per_pass, bool) or not isinstance(self.per_pass, int) or self.per_pass < 1:
            raise ConfigError(f"brute-force option queries_per_pass must be a whole number >= 1, got {self.per_pass!r}")
        self.file = self.path.with_name(self.path.name + ".brute.npz")
        self.meta_path = self.path.with_name(self.path.name + ".brute.json")
        self._clear()
        _, generation = saved_state(self)  # None: no sidecar, another kind, or a save cut short
        if generation is not None:
            try:
                with np.load(self.file, allow_pickle=False) as saved:
                    self.ids, self.vectors = saved["ids"], saved["vectors"]
                self._generation = generation
            except (OSError, ValueError, KeyError):
                pass  # unreadable: opens empty and unknown, so the gallery rebuilds it

    def __len__(self):
        return len(self.ids)

    def _add(self, ids, vectors):
        if np.isin(ids, self.ids).any():
            raise ValueError("ids already in the index; remove them first")
        self.ids, self.vectors = np.concatenate([self.ids, ids]), np.concatenate([self.vectors, vectors])

    def _remove(self, ids):
        keep = ~np.isin(self.ids, ids)
        if not keep.all():
            self._changing()
            self.ids, self.vectors = self.ids[keep], self.vectors[keep]

    def _search(self, queries, k):
        distances, labels = padded(len(queries), k)
        for start in range(0, len(queries), self.per_pass):
            block = queries[start : start + self.per_pass].astype(np.float64)
            d = ((block[:, None, :] - self.vectors[None].astype(np.float64)) ** 2).sum(-1)
            for row, dist in enumerate(d):
                order = np.lexsort((self.ids, dist))[:k]
                distances[start + row, : len(order)], labels[start + row, : len(order)] = dist[order], self.ids[order]
        return distances, labels

    def _clear(self):
        self.ids, self.vectors = np.empty(0, np.int64), np.empty((0, self.dim), np.float32)

    def checksum(self):
        return hashlib.sha256(self.ids.tobytes() + self.vectors.tobytes()).hexdigest()

    def _save(self, generation):
        meta = {"kind": self.kind, "dim": self.dim}
        write_json(self.meta_path, {**meta, "generation": None})  # "unknown" until the data is written
        with atomic_path(self.file, mode=0o600) as tmp, open(tmp, "wb") as handle:
            np.savez(handle, ids=self.ids, vectors=self.vectors)
        write_json(self.meta_path, {**meta, "generation": generation})


@convgen.hookimpl
def register_search_backends(register):
    register("brute-force", BruteForceIndex)


@convgen.hookimpl
def register_recipes(register):
    register(
        "count",
        count_samples,
        defaults={"dataset": {"name": "folder", "root": "."}},
        components={"dataset": "dataset"},
        description="Count the samples of each identity in a dataset.",
    )
    # the core's evaluate, by name: its run and components, these keys changed, one key added
    register(
        "sines-evaluate",
        based_on="evaluate",
        defaults={"spatial_dims": 1, "dataset": {"name": "sines", "identities": 5, "samples_per_identity": 4},
                  "encoder": {"name": "tiny"}, "norms": True},
        description="Evaluate on sine waves, with the embedding norms read out.",
    )


@convgen.hookimpl
def evaluation_readouts(evaluation):
    """The spread of the embeddings' norms, for evaluations that ask for it (``norms: true``)."""
    if not evaluation.config.get("norms"):
        return None
    norms = np.linalg.norm(evaluation.embeddings, axis=1)
    again = embed_dataset(evaluation.model, evaluation.dataset, 8, evaluation.device)  # the evaluation's own encoder
    return Readout("norms", {"min": float(norms.min()), "max": float(norms.max()), "same_encoder": bool(np.allclose(again, evaluation.embeddings, atol=1e-6))},
                   summary={"norm_max": float(norms.max())})  # fmt: skip


@convgen.hookimpl
def register_commands(cli):
    @cli.command()
    def hello(name: str = "world"):
        """Say hello (from the convgen-hello plugin)."""
        print(f"hello {name}, from convgen-hello")
