"""``random-multiscale``: one wide layer of random filters at several scales, for texture without training.

Ustyuzhaninov et al. 2017 ("What does it take to generate natural textures?") found that the
Gram matrices of a *single* convolutional layer with *random* filters generate natural
textures as well as a trained VGG, on three conditions: filters at several scales (theirs:
3 to 55 samples wide), a rectifying nonlinearity after them (without it the Grams are only
second-order statistics of the input, its power spectrum), and filters of zero mean, so
that a filter responds to structure rather than to brightness.

Large dense filters cost ``k^d`` products per position, too many in 3D. Here a scale is a
``kernel_size``-wide filter dilated by ``d``, applied to the input box-blurred over ``2d - 1``
samples (so that the taps ``d`` apart see everything in between): the receptive field is
``(2d - 1) + (k - 1) d`` samples (kernel 5: 5, 11, 23, 47, 95 for d = 1 ... 16), at the cost
of a ``k^d`` filter. Every scale keeps the input's size (stride 1), so the scales are
concatenated on the channel axis and read as one tap.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from monai.networks.layers.factories import Conv
from torch import nn

from convgen.errors import ConfigError
from convgen.nets.resnet import embedding_head
from convgen.nets.tapped import TappedEncoder, check_dims


def box_blur(spatial_dims: int, axis: int, width: int) -> nn.Module:
    """A stride-1 mean over ``width`` samples along one axis (borders: the mean of what lies inside).

    One axis at a time costs a few operations per sample (a running sum) instead of
    ``width^d``; the product of the per-axis means is the mean over the box. It is an
    average pooling layer as far as receptive fields go (kernel ``width`` on ``axis``).
    """
    kernel, padding = [1] * spatial_dims, [0] * spatial_dims
    kernel[axis], padding[axis] = width, width // 2
    return _BOX[spatial_dims](tuple(kernel), stride=1, padding=tuple(padding))


def _running_mean(self, x: torch.Tensor) -> torch.Tensor:
    axis = 2 + next(i for i, k in enumerate(self.kernel_size) if k > 1)
    radius = self.kernel_size[axis - 2] // 2
    moved = x.movedim(axis, -1)
    sums = F.pad(moved, (radius + 1, radius)).cumsum(-1)
    window = sums[..., 2 * radius + 1 :] - sums[..., : -2 * radius - 1]
    n = moved.shape[-1]
    i = torch.arange(n, device=x.device)
    count = (torch.clamp(i + radius, max=n - 1) - torch.clamp(i - radius, min=0) + 1).to(x.dtype)
    return (window / count).movedim(-1, axis)


_BOX = {d: type(f"BoxMean{d}d", (pool,), {"forward": _running_mean}) for d, pool in ((1, nn.AvgPool1d), (2, nn.AvgPool2d), (3, nn.AvgPool3d))}


class MultiScaleConv(nn.Module):
    """For each dilation ``d``: a ``2d - 1`` box blur (stride 1), then ``filters`` zero-mean random
    ``kernel_size`` filters dilated by ``d``; the scales concatenated on channels."""

    def __init__(self, spatial_dims: int, in_channels: int, filters: int, kernel_size: int, dilations: Sequence[int]):
        super().__init__()
        conv = Conv[Conv.CONV, spatial_dims]
        self.branches = nn.ModuleList()
        for d in sorted(dilations):
            layers = [box_blur(spatial_dims, axis, 2 * d - 1) for axis in range(spatial_dims)] if d > 1 else []
            layers.append(conv(in_channels, filters, kernel_size, padding=d * (kernel_size // 2), dilation=d, bias=False))
            self.branches.append(nn.Sequential(*layers))
        with torch.no_grad():  # Kaiming-scaled random filters, each of zero mean over its taps and channels
            for branch in self.branches:
                w = branch[-1].weight
                nn.init.kaiming_normal_(w, nonlinearity="relu")
                w -= w.mean(dim=tuple(range(1, w.ndim)), keepdim=True)
                w *= torch.rsqrt(w.pow(2).sum(dim=tuple(range(1, w.ndim)), keepdim=True))  # unit norm: every scale weighs alike

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([branch(x) for branch in self.branches], 1)

    def receptive_path(self):
        return list(self.branches[-1])  # the widest scale sees the most


class Channels(nn.Module):
    """The channels from ``start`` on: the coarser scales of a `MultiScaleConv`'s output."""

    def __init__(self, start: int):
        super().__init__()
        self.start = start

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, self.start :]


class RandomMultiScale(TappedEncoder):
    """One wide random layer (``filters`` per scale, one scale per entry of ``dilations``) and a ReLU.

    Meant to stay random (style transfer and texture synthesis need no weights file); it
    can also be trained like any encoder. Default: kernel 5 at dilations 1, 2, 4, 8, 16,
    64 filters each (320 channels, receptive fields 5 to 95 samples per axis).
    Taps: ``conv``, ``relu`` (every scale) and ``coarse`` (the scales of dilation
    ``coarse_from`` and more; default: the coarser half): a content cost on ``coarse`` keeps
    the content's layout and leaves its fine texture to the style.
    """

    def __init__(self, spatial_dims: int, in_channels: int = 1, embedding_dim: int = 128, filters: int = 64,
                 kernel_size: int = 5, dilations: Sequence[int] = (1, 2, 4, 8, 16), coarse_from: int | None = None):  # fmt: skip
        check_dims(spatial_dims, in_channels)
        if not isinstance(filters, int) or isinstance(filters, bool) or filters < 1:
            raise ConfigError(f"random-multiscale filters must be a positive integer, got {filters!r}")
        if not isinstance(kernel_size, int) or kernel_size < 2 or kernel_size % 2 == 0:
            raise ConfigError(f"random-multiscale kernel_size must be an odd integer of at least 3, got {kernel_size!r}")
        if not dilations or any(not isinstance(d, int) or isinstance(d, bool) or d < 1 for d in dilations) or len(set(dilations)) != len(dilations):
            raise ConfigError(f"random-multiscale dilations must be distinct positive integers, got {list(dilations or [])}")
        scales = sorted(dilations)
        coarse_from = scales[len(scales) // 2] if coarse_from is None else coarse_from
        if not isinstance(coarse_from, int) or isinstance(coarse_from, bool) or coarse_from > scales[-1]:
            raise ConfigError(f"random-multiscale coarse_from must be a dilation up to {scales[-1]}, got {coarse_from!r}")
        width = filters * len(dilations)
        fine = filters * sum(d < coarse_from for d in dilations)
        body = OrderedDict(conv=MultiScaleConv(spatial_dims, in_channels, filters, kernel_size, dilations), relu=nn.ReLU(),
                           coarse=Channels(fine))  # fmt: skip
        super().__init__(spatial_dims, in_channels, body, embedding_head(spatial_dims, width - fine, embedding_dim))  # from `coarse`
