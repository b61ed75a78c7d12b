"""Generate the figures of the Concepts page with convgen's own code, at build time.

Run by the mkdocs-gen-files plugin (see ``mkdocs.yml``); each figure is computed by the
functions it illustrates (the triplet loss, the evaluation metrics and plots, the Gram
matrix, the receptive-field arithmetic), so a change in the code shows on the page.
Everything is seeded and small: the whole script takes a few seconds on a CPU.
"""

from __future__ import annotations

import io
import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import mkdocs_gen_files  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from convgen.metric import evaluation, plots  # noqa: E402
from convgen.metric.losses import TripletLoss  # noqa: E402
from convgen.style.costs import gram  # noqa: E402
from convgen.style.from_config import demo_pair  # noqa: E402
from convgen.weights import build_encoder, encoder_spec  # noqa: E402

FOLDER = "img/concepts"


def save(fig, name: str) -> None:
    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    with mkdocs_gen_files.open(f"{FOLDER}/{name}", "wb") as handle:
        handle.write(buffer.getvalue())


def on_circle(angle: float) -> list[float]:
    return [math.cos(angle), math.sin(angle)]


def triplet_regions() -> None:
    """The loss of one triplet against d(a, n), for a fixed d(a, p): easy, semi-hard, hard."""
    margin, positive = 0.2, 0.6  # radians between anchor and positive on the unit circle
    loss = TripletLoss(margin=margin, mining="all", reduction="sum")
    d_ap = 2 - 2 * math.cos(positive)
    # from 0.16 rad on, the positive's own triplet (p, a, n) is inactive: the batch loss is (a, p, n)'s alone
    angles = np.linspace(0.16, math.pi, 400)
    d_an = 2 - 2 * np.cos(angles)
    values = []
    for angle in angles:
        x = torch.tensor([on_circle(0.0), on_circle(positive), on_circle(-angle)])
        values.append(float(loss(x, torch.tensor([0, 0, 1]))))
    values = np.array(values)
    fig, ax = plt.subplots(figsize=(7, 3.4))
    ax.axvspan(0, d_ap, color="tab:red", alpha=0.12, label="hard: d(a,n) < d(a,p)")
    ax.axvspan(d_ap, d_ap + margin, color="tab:orange", alpha=0.18, label="semi-hard: inside the margin")
    ax.axvspan(d_ap + margin, 4, color="tab:green", alpha=0.10, label="easy: no loss")
    ax.plot(d_an, values, color="black", lw=2, label="TripletLoss (convgen)")
    ax.set(xlabel="d(a, n): squared distance from the anchor to the negative", ylabel="loss",
           title=f"Triplet loss for d(a, p) = {d_ap:.2f}, margin α = {margin}", xlim=(0, 4))  # fmt: skip
    ax.legend(fontsize=8, loc="upper right")
    save(fig, "triplet-regions.png")


def genuine_impostor(seed: int = 0, n: int = 400, dim: int = 32, spread: float = 0.8):
    """Unit embeddings of 40 synthetic people, 10 samples each."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n // 10, dim))
    x = np.repeat(centres, 10, axis=0) + spread * rng.normal(size=(n, dim))
    return x / np.linalg.norm(x, axis=1, keepdims=True), np.repeat(np.arange(n // 10), 10)


def roc_and_distances() -> None:
    embeddings, labels = genuine_impostor()
    pairs = evaluation.pairs_from_labels(embeddings, labels)
    far, tar, _ = evaluation.roc(pairs.distances, pairs.same)
    eer = evaluation.eer(pairs.distances, pairs.same)
    for name, draw in (("roc.png", lambda p: plots.plot_roc(p, far, tar, eer=eer, label="40 synthetic people")),
                       ("distances.png", lambda p: plots.plot_distance_histograms(p, pairs.distances, pairs.same, threshold=eer[1]))):  # fmt: skip
        import tempfile
        from pathlib import Path

        with tempfile.TemporaryDirectory() as tmp:
            path = draw(Path(tmp) / name)
            with mkdocs_gen_files.open(f"{FOLDER}/{name}", "wb") as handle:
                handle.write(Path(path).read_bytes())


def fpir_grows_with_gallery_size() -> None:
    """One threshold τ, chosen at FAR 1% on 1:1 pairs, against galleries of growing size."""
    embeddings, labels = genuine_impostor(seed=1, n=4000, dim=16, spread=0.9)
    pairs = evaluation.pairs_from_labels(embeddings, labels, max_pairs=200000)
    tau = evaluation.tar_at_far(pairs.distances, pairs.same, [0.01])[0.01]["threshold"]
    rng = np.random.default_rng(2)
    sizes = [1, 3, 10, 30, 100, 300]
    people = np.unique(labels)
    measured = []
    for size in sizes:
        hits = []
        for _ in range(300):
            chosen = rng.choice(people, size=size + 1, replace=False)
            enrolled, stranger = chosen[:-1], chosen[-1]
            gallery = embeddings[[rng.choice(np.flatnonzero(labels == p)) for p in enrolled]]
            probe = embeddings[rng.choice(np.flatnonzero(labels == stranger))]
            hits.append(((gallery - probe) ** 2).sum(1).min() <= tau)
        measured.append(np.mean(hits))
    fig, ax = plt.subplots(figsize=(6.5, 3.4))
    grid = np.logspace(0, math.log10(sizes[-1]), 100)
    ax.plot(grid, 1 - (1 - 0.01) ** grid, color="tab:gray", label="1 − (1 − FAR)^N (independent comparisons)")
    ax.plot(sizes, measured, "o-", color="tab:red", label="measured: strangers accepted (FPIR)")
    ax.set(xscale="log", xlabel="people enrolled (N)", ylabel="false positive identification rate",
           title="A 1:1 threshold (FAR 1%) used for 1:N search")  # fmt: skip
    ax.legend(fontsize=8)
    save(fig, "fpir-vs-gallery-size.png")


def gram_matrices() -> None:
    torch.manual_seed(0)
    spec = encoder_spec({"name": "vgg", "channels": [16, 32], "convs": [1, 1], "pool": "avg"}, spatial_dims=2, in_channels=1)
    encoder = build_encoder(spec).eval()
    content, style = demo_pair(2, 128, seed=0)
    layer = encoder.tap_names[-1]
    fig, axes = plt.subplots(1, 4, figsize=(11, 3))
    for column, (name, sample) in enumerate((("content", content), ("style", style))):
        with torch.no_grad():
            g = gram(encoder.taps(sample[None], [layer])[layer])[0]
        axes[2 * column].imshow(sample[0].numpy(), cmap="gray")
        axes[2 * column].set_title(name)
        axes[2 * column + 1].imshow(g.numpy(), cmap="viridis")
        axes[2 * column + 1].set_title(f"Gram of {layer} ({g.shape[0]}×{g.shape[1]})")
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    save(fig, "gram.png")


def receptive_fields() -> None:
    spec = encoder_spec({"name": "vgg", "channels": [32, 64, 128, 128], "convs": [2, 2, 2, 2]}, spatial_dims=1, in_channels=1)
    fields = build_encoder(spec).receptive_fields()
    names = list(fields)
    fig, ax = plt.subplots(figsize=(7, 3.2))
    ax.bar(names, [fields[n].size[0] for n in names], color="tab:blue", label="field size (input samples)")
    ax.plot(names, [fields[n].stride[0] for n in names], "o-", color="tab:red", label="stride between units")
    ax.set(ylabel="input samples", title="Receptive fields of the taps of a 1D VGG (convgen.nets.receptive_field)")
    ax.tick_params(axis="x", rotation=45)
    ax.legend(fontsize=8)
    save(fig, "receptive-fields.png")


triplet_regions()
roc_and_distances()
fpir_grows_with_gallery_size()
gram_matrices()
receptive_fields()
