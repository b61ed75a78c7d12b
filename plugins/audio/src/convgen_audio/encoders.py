"""The audio plugin's encoders: ``tdnn`` (a speaker encoder) and ``wide-conv`` (random, for textures).

``tdnn`` is the x-vector layout (Snyder et al. 2018, "X-vectors: robust DNN embeddings
for speaker recognition"): dilated convolutions over frames, then the mean and standard
deviation of every channel over the whole utterance, then a projection. The statistics
pooling makes the embedding independent of the utterance's length and of where in it
anything was said: what remains is how the voice sounds on average and how it varies.

``wide-conv``: one wide layer of convolutions of several widths, meant to stay random.

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
from monai.networks.blocks import Convolution
from monai.networks.layers.factories import Conv
from torch import nn

from convgen.plugin_api import ConfigError, TappedEncoder, check_dims, embedding_head


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


class StatisticsPooling(nn.Module):
    """Mean and standard deviation of every channel over all spatial positions: ``(N, C, ...) -> (N, 2C)``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.flatten(2)
        return torch.cat([flat.mean(-1), flat.std(-1, unbiased=False)], 1)


class TDNN(TappedEncoder):
    """Dilated convolution layers (taps ``layer1`` ...), statistics pooling, a linear embedding.

    Args:
        channels, kernel_sizes, dilations: one entry per layer; the default sees 15 frames
            (0.15 s at 100 frames/s) and widens to 384 channels before pooling.
        norm, act, dropout: each layer's normalisation, activation and dropout (MONAI names).
    """

    def __init__(self, spatial_dims: int, in_channels: int = 1, embedding_dim: int = 128,
                 channels: Sequence[int] = (128, 128, 128, 128, 384), kernel_sizes: Sequence[int] = (5, 3, 3, 1, 1),
                 dilations: Sequence[int] = (1, 2, 3, 1, 1), norm: str = "batch", act: str = "relu", dropout: float = 0.0):  # fmt: skip
        check_dims(spatial_dims, in_channels)
        channels, kernel_sizes, dilations = list(channels), list(kernel_sizes), list(dilations)
        if not channels or not len(channels) == len(kernel_sizes) == len(dilations):
            raise ConfigError(f"tdnn needs one kernel size and dilation per layer: channels={channels} "
                              f"kernel_sizes={kernel_sizes} dilations={dilations}")  # fmt: skip
        for name, values in (("channels", channels), ("kernel_sizes", kernel_sizes), ("dilations", dilations)):
            if any(not isinstance(v, int) or isinstance(v, bool) or v < 1 for v in values):
                raise ConfigError(f"tdnn {name} must be positive integers, got {values}")
        if any(k % 2 == 0 for k in kernel_sizes):
            raise ConfigError(f"tdnn kernel_sizes must be odd (centred windows), got {kernel_sizes}")
        body, previous = OrderedDict(), in_channels
        for i, (width, k, d) in enumerate(zip(channels, kernel_sizes, dilations), start=1):
            body[f"layer{i}"] = Convolution(spatial_dims, previous, width, kernel_size=k, dilation=d, norm=norm, act=act,
                                            dropout=dropout or None)  # fmt: skip
            previous = width
        head = nn.Sequential(StatisticsPooling(), nn.Linear(2 * previous, embedding_dim))
        super().__init__(spatial_dims, in_channels, body, head)
