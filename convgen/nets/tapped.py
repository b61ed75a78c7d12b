"""The encoder contract: a body of named layers (the feature taps) and an embedding head."""

from __future__ import annotations

from collections import OrderedDict
from typing import Callable, Iterable, Sequence

import torch
from torch import nn

from convgen.errors import ConfigError, DataError
from convgen.nets.receptive_field import ReceptiveField, compose


def check_dims(spatial_dims, in_channels) -> None:
    """Validate the two arguments every encoder takes, before any layer is built."""
    if spatial_dims not in (1, 2, 3) or isinstance(spatial_dims, bool):
        raise ConfigError(f"spatial_dims must be 1, 2 or 3, got {spatial_dims!r}")
    if not isinstance(in_channels, int) or isinstance(in_channels, bool) or in_channels < 1:
        raise ConfigError(f"in_channels must be a positive integer, got {in_channels!r}")


class TappedEncoder(nn.Module):
    """An encoder whose intermediate layers can be read by name.

    ``body`` is an ordered sequence of named layers; each name is a *tap*. ``head`` maps
    the last tap to the embedding. Subclasses only build the two; this class provides
    `taps` (runs the body only as far as the deepest requested layer),
    `receptive_fields` and input checking, for any ``spatial_dims``.
    """

    def __init__(self, spatial_dims: int, in_channels: int, body: "OrderedDict[str, nn.Module]", head: nn.Module):
        super().__init__()
        check_dims(spatial_dims, in_channels)
        self.spatial_dims = spatial_dims
        self.in_channels = in_channels
        self.body = nn.Sequential(body)
        self.head = head

    @property
    def tap_names(self) -> list[str]:
        """The names of the body's layers, shallow to deep."""
        return list(self.body._modules)

    def check_input(self, x: torch.Tensor) -> None:
        expected = self.spatial_dims + 2
        if x.ndim != expected or x.shape[1] != self.in_channels:
            axes = ", ".join(["N", str(self.in_channels)] + [f"d{i + 1}" for i in range(self.spatial_dims)])
            raise DataError(
                f"{type(self).__name__} expects input of shape ({axes}) "
                f"(spatial_dims={self.spatial_dims}, in_channels={self.in_channels}), got {tuple(x.shape)}"
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        return self.head(self.body(x))

    def taps(self, x: torch.Tensor, names: Iterable[str], layers: Sequence[tuple[str, Callable]] | None = None) -> dict[str, torch.Tensor]:
        """Activations of the named layers, running the body no further than needed.

        ``layers`` replaces the body's ``(name, layer)`` pairs by callables that compute the
        same thing another way (the style engine's `convgen.style.frozen.frozen_layers`).
        """
        self.check_input(x)
        wanted = list(dict.fromkeys(names))
        order = {name: i for i, name in enumerate(self.tap_names)}
        unknown = [name for name in wanted if name not in order]
        if unknown:
            raise ConfigError(f"unknown layer(s) {', '.join(map(repr, unknown))}; {type(self).__name__} has: {', '.join(order)}")
        if not wanted:
            return {}
        deepest = max(order[name] for name in wanted)
        out = {}
        for i, (name, layer) in enumerate(layers or self.body.named_children()):
            x = layer(x)
            if name in wanted:
                out[name] = x
            if i == deepest:
                break
        return {name: out[name] for name in wanted}

    def receptive_fields(self) -> dict[str, ReceptiveField]:
        """Receptive field (size, stride, offset per axis) of every tap, in input samples."""
        field = ReceptiveField.identity(self.spatial_dims)
        fields = {}
        for name, layer in self.body.named_children():
            field = compose(field, layer)
            fields[name] = field
        return fields

    def output_shapes(self, spatial_size) -> dict[str, tuple[int, ...]]:
        """Shape ``(C, *spatial)`` of every tap for an input of ``spatial_size`` (one sample)."""
        size = (spatial_size,) * self.spatial_dims if isinstance(spatial_size, int) else tuple(spatial_size)
        x = torch.zeros(1, self.in_channels, *size)
        was_training = self.training
        self.eval()
        try:
            with torch.no_grad():
                return {name: tuple(t.shape[1:]) for name, t in self.taps(x, self.tap_names).items()}
        finally:
            self.train(was_training)
