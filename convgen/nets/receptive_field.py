"""Exact receptive-field arithmetic, per spatial axis.

For a stack of convolutions and poolings, unit ``i`` of a layer sees the input samples
``offset + i * stride ± (size - 1) / 2`` on each axis (``offset`` is the centre of unit
0's field in input coordinates; padding can make it negative). Composing one layer with
kernel ``k``, stride ``s``, padding ``p`` and dilation ``d`` (effective kernel
``d (k - 1) + 1``) updates ``size += (k_eff - 1) * stride``,
``offset += ((k_eff - 1) / 2 - p) * stride`` and ``stride *= s``.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

_SPATIAL_LAYERS = (
    nn.Conv1d, nn.Conv2d, nn.Conv3d,
    nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d,
    nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d,
)  # fmt: skip


def _per_axis(value, dims: int) -> tuple:
    if isinstance(value, (tuple, list)):
        if len(value) != dims:
            raise ValueError(f"expected {dims} values, got {value!r}")
        return tuple(value)
    return (value,) * dims


@dataclass(frozen=True)
class ReceptiveField:
    """The receptive field of the units of one layer: ``size``, ``stride``, ``offset`` per axis."""

    size: tuple[int, ...]
    stride: tuple[int, ...]
    offset: tuple[float, ...]

    @classmethod
    def identity(cls, dims: int) -> "ReceptiveField":
        return cls((1,) * dims, (1,) * dims, (0.0,) * dims)

    def then(self, kernel, stride=1, padding=0, dilation=1) -> "ReceptiveField":
        """The field after one more convolution or pooling layer."""
        dims = len(self.size)
        k, s, p, d = (_per_axis(v, dims) for v in (kernel, stride, padding, dilation))
        size, new_stride, offset = [], [], []
        for axis in range(dims):
            k_eff = d[axis] * (k[axis] - 1) + 1
            size.append(self.size[axis] + (k_eff - 1) * self.stride[axis])
            offset.append(self.offset[axis] + ((k_eff - 1) / 2 - p[axis]) * self.stride[axis])
            new_stride.append(self.stride[axis] * s[axis])
        return ReceptiveField(tuple(size), tuple(new_stride), tuple(offset))

    def window(self, index) -> tuple[tuple[int, int], ...]:
        """Half-open input window ``(start, stop)`` per axis seen by the unit at ``index``.

        Windows may extend past the input's borders (into the padding); clip them to the
        input shape before cropping.
        """
        index = _per_axis(index, len(self.size))
        out = []
        for axis, i in enumerate(index):
            centre = self.offset[axis] + i * self.stride[axis]
            start = centre - (self.size[axis] - 1) / 2
            out.append((int(round(start)), int(round(start)) + self.size[axis]))
        return tuple(out)


def compose(field: ReceptiveField, module: nn.Module) -> ReceptiveField:
    """Extend ``field`` through ``module``.

    Convolutions and poolings change the field; modules with no spatial children
    (activations, norms, dropout) leave it alone; ``nn.Sequential`` composes its children
    in order. A branching module (a residual block) tells which of its children form
    its widest path through a ``receptive_path()`` method, or through ``.conv`` for
    MONAI's ``ResidualUnit`` (whose shortcut never sees more than its main path).
    """
    if isinstance(module, _SPATIAL_LAYERS):
        if getattr(module, "ceil_mode", False):
            raise ValueError(f"{type(module).__name__} with ceil_mode=True has no fixed receptive-field arithmetic")
        padding = getattr(module, "padding", 0)
        if isinstance(padding, str):
            raise ValueError(f"{type(module).__name__} uses padding={padding!r}; use integer padding")
        return field.then(module.kernel_size, module.stride, padding, getattr(module, "dilation", 1))
    if hasattr(module, "receptive_path"):
        for child in module.receptive_path():
            field = compose(field, child)
        return field
    from monai.networks.blocks import ResidualUnit

    if isinstance(module, ResidualUnit):
        return compose(field, module.conv)
    children = list(module.children())
    if isinstance(module, nn.Sequential):
        for child in children:
            field = compose(field, child)
        return field
    if any(isinstance(m, _SPATIAL_LAYERS) for m in module.modules()):
        raise ValueError(
            f"cannot follow the receptive field through {type(module).__name__}: "
            "give it a receptive_path() method returning its widest path"
        )
    return field


def format_axes(values) -> str:
    """Per-axis values as people write sizes: ``(5, 5)`` -> ``5×5``; ``(2.5,)`` -> ``2.5``."""
    return "×".join(f"{v:g}" for v in values)
