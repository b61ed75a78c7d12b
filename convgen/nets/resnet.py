"""A residual encoder for any ``spatial_dims``, built from MONAI's ``Convolution`` and ``ResidualUnit``."""

from __future__ import annotations

from collections import OrderedDict
from typing import Sequence

from monai.networks.blocks import Convolution, ResidualUnit
from monai.networks.layers.factories import Pool
from torch import nn

from convgen.errors import ConfigError
from convgen.nets.tapped import TappedEncoder, check_dims


def embedding_head(spatial_dims: int, channels: int, embedding_dim: int, head_grid: int = 1) -> nn.Module:
    """Average pooling to a ``head_grid``-per-axis grid, then a linear projection to the embedding.

    ``head_grid: 1`` (global pooling) ignores where a feature is; a grid of 2-4 keeps the
    coarse layout, which matters for aligned inputs (faces, centred beats) when there are
    too few identities to learn it otherwise. Any input size still works.
    """
    if not isinstance(head_grid, int) or isinstance(head_grid, bool) or head_grid < 1:
        raise ConfigError(f"head_grid must be a positive integer, got {head_grid!r}")
    return nn.Sequential(
        Pool[Pool.ADAPTIVEAVG, spatial_dims](head_grid),
        nn.Flatten(1),
        nn.Linear(channels * head_grid**spatial_dims, embedding_dim),
    )


class ResNetEncoder(TappedEncoder):
    """Stem convolution, then one residual stage per entry of ``channels``.

    Taps: ``stem``, ``stage1`` ... ``stageN``. Each stage is a MONAI ``ResidualUnit``
    (``subunits`` convolutions of ``kernel_size`` on the main path, a projection on the
    shortcut) whose first convolution has the stage's stride. The head pools to a
    ``head_grid`` grid (see `embedding_head`) and projects to ``embedding_dim``.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int = 1,
        embedding_dim: int = 128,
        channels: Sequence[int] = (32, 64, 128, 256),
        strides: Sequence[int] = (1, 2, 2, 2),
        stem_kernel: int = 5,
        stem_stride: int = 2,
        kernel_size: int = 3,
        subunits: int = 2,
        norm: str = "batch",
        act: str = "relu",
        dropout: float = 0.0,
        head_grid: int = 1,
    ):
        check_dims(spatial_dims, in_channels)
        if len(channels) != len(strides) or not channels:
            raise ConfigError(f"resnet needs one stride per stage: channels={list(channels)} strides={list(strides)}")
        common = dict(norm=norm, act=act, dropout=dropout or None)
        body = OrderedDict(
            stem=Convolution(spatial_dims, in_channels, channels[0], strides=stem_stride,
                             kernel_size=stem_kernel, **common)
        )  # fmt: skip
        previous = channels[0]
        for i, (width, stride) in enumerate(zip(channels, strides), start=1):
            body[f"stage{i}"] = ResidualUnit(
                spatial_dims, previous, width, strides=stride, kernel_size=kernel_size, subunits=subunits, **common
            )
            previous = width
        super().__init__(spatial_dims, in_channels, body, embedding_head(spatial_dims, previous, embedding_dim, head_grid))
