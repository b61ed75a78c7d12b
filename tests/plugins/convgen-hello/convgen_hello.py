"""A small third-party plugin: a text-file reader/writer, a tiny encoder, a dataset, a loss,
a style cost, an input pipeline, a recipe and a CLI command. The tests install it through its entry point."""

from collections import OrderedDict
from pathlib import Path

import torch
from monai.networks.layers.factories import Conv, Pool
from torch import nn

import convgen
from convgen import registry
from convgen.errors import DataError
from convgen.io import atomic_path
from convgen.nets import TappedEncoder


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
    dataset = registry.build("dataset", config["dataset"])
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


@convgen.hookimpl
def register_recipes(register):
    register(
        "count",
        count_samples,
        defaults={"dataset": {"name": "folder", "root": "."}},
        components={"dataset": "dataset"},
        description="Count the samples of each identity in a dataset.",
    )


@convgen.hookimpl
def register_commands(cli):
    @cli.command()
    def hello(name: str = "world"):
        """Say hello (from the convgen-hello plugin)."""
        print(f"hello {name}, from convgen-hello")
