"""The Siamese embedder: one encoder, shared by both inputs of a pair, L2-normalised output."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from convgen import progress


class Embedder(nn.Module):
    """f(x) = encoder(x) / ||encoder(x)||.

    Normalising puts every embedding on the unit sphere, so squared distances lie in
    [0, 4] and a margin (α = 0.2) or a threshold τ means the same thing for any encoder.
    There is one set of weights: a pair is compared by running both inputs through it.
    """

    def __init__(self, encoder: nn.Module):
        super().__init__()
        self.encoder = encoder

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.encoder(x), dim=1)

    def distance(self, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
        """d(x1, x2) = ||f(x1) − f(x2)||², one value per pair of rows."""
        return (self(x1) - self(x2)).pow(2).sum(1)


def embed_dataset(model: torch.nn.Module, dataset, batch_size: int, device: torch.device, show_progress: bool = False) -> np.ndarray:
    """Embeddings ``(N, D)`` of every sample, in dataset order, without gradients."""
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False)
    batches = progress.iterate(loader, "embedding") if show_progress else loader
    was_training = model.training
    model.eval()
    with torch.no_grad():
        chunks = [model(x.to(device)).float().cpu() for x, _ in batches]
    model.train(was_training)
    return torch.cat(chunks).numpy()
