"""How good a style transfer looks, measured without the loss it minimised, for any spatial_dims.

A falling style cost says little when it is measured by the encoder that was optimised:
the optimiser can meet those Gram statistics with patterns no other encoder would call
the style. So the three measures here use other means (inputs ``(C, *spatial)``):

- **style distance** (`style_distance`): the relative Gram distance of the result to the
  style, taken by an *independent* encoder (`measuring_encoder`: its own random weights
  and layout, never optimised against), divided by the same distance between two halves
  of the style input itself. 1.0 means as close to the style as the style is to itself.
- **content kept** (`content_ssim`): SSIM (Wang et al. 2004, Gaussian window sigma 1.5,
  generalised to 1D and 3D by a separable window) between the result and the content,
  both low-pass filtered: style transfer is meant to replace the fine texture and keep
  the coarse structure.
- **artefacts** (`hf_ratio`): the energy of the discrete Laplacian (the finest-scale
  detail: noise, checkerboards) of the result relative to the style's.
"""

from __future__ import annotations

from typing import Sequence

import torch

from convgen.style.costs import GramCost, gaussian_lowpass

MEASURING_SEED = 20170
"""The independent encoder's seed; the stylize recipes default to seed 0 and other layouts."""
SSIM_SIGMA, SSIM_K1, SSIM_K2 = 1.5, 0.01, 0.03


def gaussian_blur(x: torch.Tensor, sigma: float | Sequence[float]) -> torch.Tensor:
    """``x`` ``(C, *spatial)`` convolved with a Gaussian of ``sigma`` samples per axis (reflected borders).

    The kernel reaches 3 sigma (at most the axis length minus one, for reflection);
    ``sigma = 0`` leaves an axis alone. Computed in float64 by the engine's own low-pass
    (`convgen.style.costs.gaussian_lowpass`).
    """
    return gaussian_lowpass(x[None].double(), sigma)[0].to(x.dtype)


def ssim(x: torch.Tensor, y: torch.Tensor, data_range: float, sigma: float | None = SSIM_SIGMA) -> float:
    """Mean structural similarity of ``x`` and ``y`` ``(C, *spatial)``, averaged over channels.

    Local means, variances and covariance are Gaussian-weighted (``sigma``, in samples; as
    Wang et al. 2004 and ``skimage``'s ``gaussian_weights=True``), in any number of axes.
    ``sigma=None`` takes one window over the whole input (the global SSIM).
    """
    if x.shape != y.shape:
        raise ValueError(f"ssim needs equal shapes, got {tuple(x.shape)} and {tuple(y.shape)}")
    x, y = x.double(), y.double()
    c1, c2 = (SSIM_K1 * data_range) ** 2, (SSIM_K2 * data_range) ** 2
    if sigma is None:
        axes = tuple(range(1, x.ndim))
        mean = lambda t: t.mean(axes, keepdim=True)  # noqa: E731
    else:
        mean = lambda t: gaussian_blur(t, sigma)  # noqa: E731
    mx, my = mean(x), mean(y)
    vx, vy, cxy = mean(x * x) - mx**2, mean(y * y) - my**2, mean(x * y) - mx * my
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
    return float(s.mean())


def content_ssim(result: torch.Tensor, content: torch.Tensor, lowpass: float, data_range: float | None = None) -> float:
    """SSIM of the result and the content after both are low-pass filtered (Gaussian, ``lowpass`` samples)."""
    if data_range is None:
        data_range = float(content.max() - content.min()) or 1.0
    return ssim(gaussian_blur(result, lowpass), gaussian_blur(content, lowpass), data_range)


def laplacian_energy(x: torch.Tensor) -> float:
    """Mean squared discrete Laplacian ``sum over axes of x[i-1] - 2 x[i] + x[i+1]`` of ``(C, *spatial)``, interior samples."""
    x = x.double()
    dims = x.ndim - 1
    inner = tuple(slice(1, -1) for _ in range(dims))
    lap = torch.zeros_like(x[(slice(None), *inner)])
    for axis in range(1, x.ndim):
        lap += torch.diff(x, n=2, dim=axis)[(slice(None), *[slice(None) if a == axis else slice(1, -1) for a in range(1, x.ndim)])]
    return float(lap.pow(2).mean())


def hf_ratio(result: torch.Tensor, style: torch.Tensor) -> float:
    """High-frequency energy (`laplacian_energy`) of the result relative to the style's: 1.0 = as fine-grained as the style."""
    return laplacian_energy(result) / laplacian_energy(style)


def measuring_encoder(spatial_dims: int, in_channels: int):
    """The independent encoder: random multi-scale filters with their own seed and layout.

    Kernel 3 at dilations 1, 3, 9, 27 (the recipes' default encoder uses kernel 5 at powers
    of two, seed 0), 48 filters each; built under a fixed seed, so every run measures with
    the same weights, and never used to optimise.
    """
    from convgen.nets.random_multiscale import RandomMultiScale

    state = torch.random.get_rng_state()
    try:
        torch.manual_seed(MEASURING_SEED)
        encoder = RandomMultiScale(spatial_dims, in_channels, filters=48, kernel_size=3, dilations=(1, 3, 9, 27))
    finally:
        torch.random.set_rng_state(state)
    return encoder.eval().requires_grad_(False)


@torch.no_grad()
def gram_statistics(encoder, x: torch.Tensor, layers: Sequence[str]) -> dict[str, torch.Tensor]:
    """Each layer's Gram matrix per position of ``x`` ``(C, *spatial)``, in float64."""
    cost = GramCost()
    return {name: cost.statistic(a).double() for name, a in encoder.taps(x[None].float(), list(layers)).items()}


def gram_distance(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    """Mean over layers of ``||G_a - G_b||_F / ||G_b||_F`` (``b`` the reference)."""
    return sum(float((a[n] - b[n]).norm() / b[n].norm()) for n in b) / len(b)


def halves(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Two non-overlapping halves of ``(C, *spatial)`` along its longest spatial axis."""
    axis = 1 + max(range(x.ndim - 1), key=lambda i: x.shape[i + 1])
    n = x.shape[axis] // 2
    return x.narrow(axis, 0, n), x.narrow(axis, n, n)


def style_distance(result: torch.Tensor, style: torch.Tensor, encoder=None, layers: Sequence[str] | None = None) -> dict:
    """The result's Gram distance to the style, relative to the distance between the style's two halves.

    Returns ``{"distance": D(result, style), "self": D(half 1, half 2), "ratio": distance / self}``;
    by default the distances are those of `measuring_encoder`'s ``relu`` tap.
    """
    encoder = encoder if encoder is not None else measuring_encoder(style.ndim - 1, style.shape[0])
    layers = list(layers or ["relu"])
    target = gram_statistics(encoder, style, layers)
    first, second = halves(style)
    own = gram_distance(gram_statistics(encoder, first, layers), gram_statistics(encoder, second, layers))
    distance = gram_distance(gram_statistics(encoder, result, layers), target)
    return {"distance": distance, "self": own, "ratio": distance / own}


def quality(result: torch.Tensor, style: torch.Tensor, content: torch.Tensor | None, lowpass: float, encoder=None) -> dict:
    """The three measures of one result: ``style`` (ratio), ``ssim`` (None without content) and ``hf``."""
    inputs = [style] if content is None else [style, content]
    data_range = max(float(t.max()) for t in inputs) - min(float(t.min()) for t in inputs)
    return {
        "style": style_distance(result, style, encoder)["ratio"],
        "ssim": None if content is None else content_ssim(result, content, lowpass, data_range=data_range),
        "hf": hf_ratio(result, style),
    }
