"""A VGG-style plain convolution stack with the classic stable layer names."""

from __future__ import annotations

from collections import OrderedDict
from typing import Sequence

from monai.networks.layers.factories import Conv, Pool
from torch import nn

from convgen.errors import ConfigError
from convgen.nets.resnet import embedding_head
from convgen.nets.tapped import TappedEncoder, check_dims


class VGGEncoder(TappedEncoder):
    """Blocks of 3-wide convolutions + ReLU, each closed by a 2-wide pooling.

    Layers are named as in the Gatys et al. style-transfer literature: ``conv{b}_{i}``,
    ``relu{b}_{i}``, ``pool{b}``. The defaults are VGG-19's layout (``convs=(2, 2, 4, 4,
    4)``, ``channels=(64, 128, 256, 512, 512)``); ``pool="avg"`` is often preferred for
    style transfer.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int = 1,
        embedding_dim: int = 128,
        channels: Sequence[int] = (64, 128, 256, 512, 512),
        convs: Sequence[int] = (2, 2, 4, 4, 4),
        kernel_size: int = 3,
        pool: str = "max",
        head_grid: int = 1,
    ):
        check_dims(spatial_dims, in_channels)
        if len(channels) != len(convs) or not channels:
            raise ConfigError(f"vgg needs one conv count per block: channels={list(channels)} convs={list(convs)}")
        pools = {"max": Pool.MAX, "avg": Pool.AVG}
        if pool not in pools:
            raise ConfigError(f"vgg pool must be 'max' or 'avg', got {pool!r}")
        conv_type, pool_type = Conv[Conv.CONV, spatial_dims], Pool[pools[pool], spatial_dims]
        body: OrderedDict[str, nn.Module] = OrderedDict()
        previous = in_channels
        for block, (width, count) in enumerate(zip(channels, convs), start=1):
            for i in range(1, count + 1):
                body[f"conv{block}_{i}"] = conv_type(previous, width, kernel_size, padding=kernel_size // 2)
                body[f"relu{block}_{i}"] = nn.ReLU()
                previous = width
            body[f"pool{block}"] = pool_type(kernel_size=2, stride=2)
        super().__init__(spatial_dims, in_channels, body, embedding_head(spatial_dims, previous, embedding_dim, head_grid))
