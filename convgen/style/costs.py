"""Content, style and smoothness costs on activations ``(N, C, *spatial)``, any spatial_dims.

Notation: an activation has ``n_C`` channels and ``M = prod(spatial)`` positions.

- Gram matrix: ``G_kk' = sum over positions of a_k * a_k'`` (``n_C x n_C``).
- Content cost: ``J_content = 1/2 * ||a(C) - a(G)||^2``.
- Style cost of one layer (Gatys et al., generalised from ``n_H * n_W`` to ``M``):
  ``J_style = 1 / (2 * n_C * M)^2 * ||G(S) - G(G)||_F^2``. It is computed as
  ``||G(S)/M_S - G(G)/M_G||_F^2 / (2 * n_C)^2``, which is the same number when style and
  generated inputs have the same size, and stays meaningful when they do not.
- Total variation: ``sum over axes of the mean squared difference of neighbours``.
- Low-pass content cost (`lowpass_cost`, on inputs, not activations): ``||B(G) - B(C)||^2``
  with ``B`` a Gaussian blur of ``sigma`` samples per axis, relative to
  ``||B(C) - mean||^2`` (the content's own coarse variation, per channel): Gatys et al.
  2017's scale control, the coarse structure from the content and the finer texture from
  the style.

A style cost (the ``style_cost`` registry) is a `StyleCost`: a callable
``cost(generated, target)``. It may also be a `StatisticCost`, offering
``statistic(activation)`` and ``distance(generated, statistic)``: the style transfer
engine then computes the target statistic (e.g. the Gram) once instead of every
iteration, blends several style inputs by blending their statistics, and can style a
large input tile by tile against the statistics of the whole style (`convgen.style.tiled`).
"""

from __future__ import annotations

import math
from typing import Protocol, Sequence, runtime_checkable

import torch
import torch.nn.functional as F


@runtime_checkable
class StyleCost(Protocol):
    """What every style cost is: the cost of generated activations against target activations."""

    def __call__(self, generated: torch.Tensor, target: torch.Tensor) -> torch.Tensor: ...


@runtime_checkable
class StatisticCost(StyleCost, Protocol):
    """A style cost that compares a fixed per-layer statistic, computed once from the target."""

    def statistic(self, activation: torch.Tensor) -> torch.Tensor: ...

    def distance(self, generated: torch.Tensor, statistic: torch.Tensor) -> torch.Tensor: ...


class _Gram(torch.autograd.Function):
    """``F Fᵀ`` per sample, with the backward ``(dG + dGᵀ) F`` in one contiguous product.

    Autograd's own backward of ``F @ F.transpose`` adds two gradient halves, one of them
    in a transposed (strided) layout, which costs as much as the product itself.
    """

    @staticmethod
    def forward(ctx, features):
        ctx.save_for_backward(features)
        return torch.bmm(features, features.transpose(1, 2))

    @staticmethod
    def backward(ctx, grad):
        (features,) = ctx.saved_tensors
        return torch.bmm(grad + grad.transpose(1, 2), features)


def gram(activation: torch.Tensor) -> torch.Tensor:
    """Gram matrices ``(N, C, C)`` of ``(N, C, *spatial)`` activations: sums over positions."""
    if activation.ndim < 3:
        raise ValueError(f"expected activations (N, C, *spatial), got shape {tuple(activation.shape)}")
    return _Gram.apply(activation.flatten(2))


def content_cost(generated: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``1/2 * ||a(C) - a(G)||^2``, summed over every element."""
    return 0.5 * F.mse_loss(generated, target, reduction="sum")  # one fused pass each way


class GramCost:
    """Gatys' style cost with the normalisation ``1 / (2 n_C M)^2``, for any spatial_dims."""

    def statistic(self, activation: torch.Tensor) -> torch.Tensor:
        """The Gram matrix per position, ``G / M``, averaged over the batch."""
        positions = activation[0, 0].numel()
        return (gram(activation) / positions).mean(0)

    def distance(self, generated: torch.Tensor, statistic: torch.Tensor) -> torch.Tensor:
        channels = generated.shape[1]
        grams = gram(generated) / generated[0, 0].numel()
        return (grams - statistic).pow(2).sum((1, 2)).sum() / (2 * channels) ** 2

    def __call__(self, generated: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.distance(generated, self.statistic(target))


def total_variation(x: torch.Tensor) -> torch.Tensor:
    """Mean squared difference between neighbours, summed over the spatial axes of ``(N, C, *spatial)``."""
    total = x.new_zeros(())
    for axis in range(2, x.ndim):
        if x.shape[axis] > 1:
            total = total + torch.diff(x, dim=axis).pow(2).mean()
    return total


def gaussian_lowpass(x: torch.Tensor, sigma: float | Sequence[float]) -> torch.Tensor:
    """``x`` ``(N, C, *spatial)`` convolved with a Gaussian of ``sigma`` samples (one for every axis, or one per axis).

    Separable (one 1D pass per axis, so 1D, 2D and 3D alike), reflected borders, the kernel
    reaching 3 sigma (at most the axis length minus one, as reflection needs); ``sigma = 0``
    or an axis of one sample leaves that axis alone. Differentiable, in ``x``'s dtype.
    """
    sigmas = [float(sigma)] * (x.ndim - 2) if isinstance(sigma, (int, float)) else [float(s) for s in sigma]
    out = x
    for axis, sigma in zip(range(2, x.ndim), sigmas):
        radius = min(int(math.ceil(3 * sigma)), x.shape[axis] - 1)
        if sigma <= 0 or radius < 1:
            continue
        t = torch.arange(-radius, radius + 1, dtype=torch.float64)
        kernel = torch.exp(-(t**2) / (2 * sigma**2))
        kernel = (kernel / kernel.sum()).to(device=x.device, dtype=x.dtype)
        moved = out.movedim(axis, -1)
        shape = moved.shape
        flat = F.pad(moved.reshape(-1, 1, shape[-1]), (radius, radius), mode="reflect")
        out = F.conv1d(flat, kernel.view(1, 1, -1)).reshape(shape).movedim(-1, axis)
    return out


def lowpass_cost(generated: torch.Tensor, target: torch.Tensor, sigma: float) -> torch.Tensor:
    """``||B(G) - B_target||^2`` (sums) for ``generated`` ``(N, C, *spatial)`` and an already blurred ``target``."""
    return (gaussian_lowpass(generated, sigma) - target).pow(2).sum()
