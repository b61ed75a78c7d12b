"""``wide-conv``: one wide layer of convolutions of several widths, meant to stay random.

Sound textures are matched well by the Gram matrices of a single, wide, random
convolution layer over a log-magnitude spectrogram (Ulyanov & Lebedev 2016, "Audio
texture synthesis and style transfer"; Ustyuzhaninov et al. 2017 for images): with
frequency bins as channels, each filter spans the whole spectrum and ``kernel_size``
frames, so several widths see short events and longer patterns at once. Taps: ``conv``
(every width's filters, concatenated) and ``relu``.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import torch
from monai.networks.layers.factories import Conv
from torch import nn

from convgen.errors import ConfigError
from convgen.nets.resnet import embedding_head
from convgen.nets.tapped import TappedEncoder, check_dims


class MultiWidthConv(nn.Module):
    """``filters`` convolutions per width in ``kernel_sizes`` (odd, 'same' padding), concatenated on channels."""

    def __init__(self, spatial_dims: int, in_channels: int, filters: int, kernel_sizes: Sequence[int]):
        super().__init__()
        conv = Conv[Conv.CONV, spatial_dims]
        self.branches = nn.ModuleList(conv(in_channels, filters, k, padding=k // 2) for k in sorted(kernel_sizes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([branch(x) for branch in self.branches], 1)

    def receptive_path(self):
        return [self.branches[-1]]  # the widest branch sees the most


class WideConv(TappedEncoder):
    """A single wide convolution layer and ReLU (default: 3 widths × 256 filters = 768 channels)."""

    def __init__(self, spatial_dims: int, in_channels: int = 1, embedding_dim: int = 128, filters: int = 256,
                 kernel_sizes: Sequence[int] = (3, 9, 27)):  # fmt: skip
        check_dims(spatial_dims, in_channels)
        if not isinstance(filters, int) or filters < 1:
            raise ConfigError(f"wide-conv filters must be a positive integer, got {filters!r}")
        if not kernel_sizes or any(not isinstance(k, int) or k < 1 or k % 2 == 0 for k in kernel_sizes):
            raise ConfigError(f"wide-conv kernel_sizes must be odd positive integers, got {list(kernel_sizes or [])}")
        width = filters * len(kernel_sizes)
        body = OrderedDict(conv=MultiWidthConv(spatial_dims, in_channels, filters, kernel_sizes), relu=nn.ReLU())
        super().__init__(spatial_dims, in_channels, body, embedding_head(spatial_dims, width, embedding_dim))
