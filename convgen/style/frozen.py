"""Running a frozen encoder for gradients with respect to its input only.

Style transfer differentiates the cost with respect to the generated input ``G``, never
the weights, and always with a batch of one. Some of PyTorch's CPU kernel choices are slow
for exactly that case, so the engine runs those layers its own way (same numbers to float
rounding, tested against the plain layers):

- **3D convolutions.** For a batch of one, PyTorch's heuristic sends small volumes to its
  native im2col kernels (``Slow3d``, ``SlowDilated3d``), 3-10x slower than oneDNN on these
  shapes. Where it would, the forward pass runs through oneDNN, and so does the input
  gradient: with the weights frozen and stride 1, the gradient of a convolution with
  respect to its input is a convolution of the output gradient with the spatially flipped
  kernel, input and output channels swapped.
- **Convolutions of a one-channel input** (the first layer of an encoder for signals,
  grey images or CT), stride 1: oneDNN and PyTorch's native kernels run them several
  times slower than a matrix product of the weights with the input's shifted windows,
  forward and backward (2D, 256x256, 1 -> 32 channels: about 9 ms -> 1 ms forward,
  6 ms -> 1.2 ms for the input gradient).
- **Average pooling** with kernel = stride (no padding) is a block mean: per axis, a sum of
  ``k`` strided slices, and its gradient a nearest-neighbour repeat. PyTorch's pooling
  kernels take 2-7x longer forward and backward on these shapes, as long as the
  convolution beside them in 1D.

Every other layer (and every layer on a GPU, or in another dtype) runs as it is.
"""

from __future__ import annotations

import itertools
import math
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn


SLOW_BACKENDS = ("Slow3d", "SlowDilated3d")
"""PyTorch's native 3D kernels, which its heuristic picks for a batch of one on small volumes."""


def _select_backend(x: torch.Tensor, conv: nn.Conv3d) -> str:
    select = getattr(torch._C, "_select_conv_backend", None)
    if select is None:  # a PyTorch without it: keep its own choice
        return ""
    backend = select(x, conv.weight, conv.bias, conv.stride, conv.padding, conv.dilation, False, [0] * 3, conv.groups, None)
    return backend.name


class _OneDnnConv3d(torch.autograd.Function):
    """A stride-1 3D convolution with frozen weights, forward and input gradient through oneDNN."""

    @staticmethod
    def forward(ctx, x, weight, bias, flipped, padding, dilation):
        ctx.flipped, ctx.dilation = flipped, dilation
        ctx.gradient_padding = [d * (k - 1) - p for k, p, d in zip(weight.shape[2:], padding, dilation)]
        return torch.ops.aten.mkldnn_convolution(x, weight, bias, padding, [1, 1, 1], dilation, 1)

    @staticmethod
    def backward(ctx, grad):
        grad_input = torch.ops.aten.mkldnn_convolution(grad.contiguous(), ctx.flipped, None, ctx.gradient_padding, [1, 1, 1], ctx.dilation, 1)
        return grad_input, None, None, None, None, None


class FrozenConv3d:
    """``conv(x)``, through oneDNN where PyTorch would pick its slow native kernel."""

    def __init__(self, conv: nn.Conv3d):
        self.conv = conv
        self.flipped, self.made_from = None, None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        conv = self.conv
        if x.dtype != torch.float32 or x.device.type != "cpu" or _select_backend(x, conv) not in SLOW_BACKENDS:
            return conv(x)
        weight = conv.weight.detach()
        if self.made_from != (weight.device, conv.weight._version):  # moved or changed since: flip again
            self.flipped = weight.flip([2, 3, 4]).transpose(0, 1).contiguous()
            self.made_from = (weight.device, conv.weight._version)
        bias = None if conv.bias is None else conv.bias.detach()
        return _OneDnnConv3d.apply(x.contiguous(), weight, bias, self.flipped, list(conv.padding), list(conv.dilation))


class _ShiftedMatmulConv(torch.autograd.Function):
    """A stride-1 convolution of a one-channel input with frozen weights, as one matrix product.

    The input's ``K`` shifted windows (one per kernel tap) form a ``(K, positions)`` matrix,
    and the convolution is ``weight (C_out, K) @ windows``; the input gradient is
    ``weight.T @ grad`` added back at the same ``K`` shifts.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, padding, dilation):
        padded = F.pad(x, [q for p in reversed(padding) for q in (p, p)])
        size = [n - d * (k - 1) for n, k, d in zip(padded.shape[2:], weight.shape[2:], dilation)]
        taps = list(itertools.product(*[range(0, d * k, d) for k, d in zip(weight.shape[2:], dilation)]))
        ctx.save_for_backward(weight)
        ctx.geometry = padded.shape, padding, size, taps
        windows = torch.cat([padded[_window(tap, size)] for tap in taps], 1).flatten(2)  # (N, K, positions)
        out = weight.flatten(1) @ windows
        if bias is not None:
            out += bias[:, None]
        return out.unflatten(2, size)

    @staticmethod
    def backward(ctx, grad):
        (weight,) = ctx.saved_tensors
        shape, padding, size, taps = ctx.geometry
        per_tap = (weight.flatten(1).t() @ grad.flatten(2)).unflatten(2, size)  # (N, K, *size)
        grad_padded = grad.new_zeros(shape)
        for i, tap in enumerate(taps):
            grad_padded[_window(tap, size)] += per_tap[:, i : i + 1]
        return grad_padded[(..., *[slice(p, n - p) for p, n in zip(padding, shape[2:])])], None, None, None, None


def _window(start: Sequence[int], size: Sequence[int]) -> tuple:
    return (..., *[slice(s, s + n) for s, n in zip(start, size)])


class FrozenSingleChannelConv:
    """``conv(x)`` for a one-channel input, as a matrix product where PyTorch's kernels are slow."""

    def __init__(self, conv: nn.Module):
        self.conv = conv

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        conv = self.conv
        reach = [d * (k - 1) for k, d in zip(conv.kernel_size, conv.dilation)]
        usual = x.dtype == torch.float32 and x.device.type == "cpu" and x.ndim == len(reach) + 2
        if not usual or any(n + 2 * p <= r for n, p, r in zip(x.shape[2:], conv.padding, reach)):
            return conv(x)  # elsewhere, unbatched or too small: PyTorch's own kernel (and its error message)
        bias = None if conv.bias is None else conv.bias.detach()
        return _ShiftedMatmulConv.apply(x, conv.weight.detach(), bias, list(conv.padding), list(conv.dilation))


def _axis_slice(axis: int, start: int, stop: int, step: int) -> tuple:
    return (..., slice(start, stop, step)) + (slice(None),) * (-axis - 1)


class _BlockMean(torch.autograd.Function):
    """Average pooling with kernel = stride and no padding: a trailing remainder is dropped.

    One axis at a time, finest first, each a sum of ``k`` strided slices; the gradient is
    the output gradient repeated over each block (nearest-neighbour upsampling).
    """

    @staticmethod
    def forward(ctx, x, kernel):
        ctx.kernel, ctx.shape = kernel, x.shape[2:]
        out = x
        for axis, k in zip(range(-1, -len(kernel) - 1, -1), reversed(kernel)):
            if k > 1:
                stop = out.shape[axis] // k * k
                blocks = out[_axis_slice(axis, 0, stop, k)] + out[_axis_slice(axis, 1, stop, k)]
                for i in range(2, k):
                    blocks += out[_axis_slice(axis, i, stop, k)]
                out = blocks
        return out * (1 / math.prod(kernel)) if out is not x else out.clone()

    @staticmethod
    def backward(ctx, grad):
        kernel, blocks = ctx.kernel, grad.shape[2:]
        spread = grad * (1 / math.prod(kernel))
        if set(kernel) <= {1, 2}:  # nearest upsampling indexes exactly (i >> 1) at factors 1 and 2, and is the fastest repeat
            spread = F.interpolate(spread, size=[n * k for n, k in zip(blocks, kernel)], mode="nearest")
        else:
            for axis, k in enumerate(kernel, start=2):
                spread = spread.repeat_interleave(k, axis) if k > 1 else spread
        remainder = [size - n * k for size, n, k in zip(ctx.shape, blocks, kernel)]
        return F.pad(spread, [p for r in reversed(remainder) for p in (0, r)]) if any(remainder) else spread, None


AVG_POOLS = (nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d)


def _block_mean_kernel(pool: nn.Module) -> tuple[int, ...] | None:
    """The kernel of an average pooling that is a plain block mean, else None."""
    dims = AVG_POOLS.index(type(pool)) + 1
    tuple_of = lambda v: tuple(v) if isinstance(v, (tuple, list)) else (v,) * dims  # noqa: E731
    kernel, stride, padding = tuple_of(pool.kernel_size), tuple_of(pool.stride or pool.kernel_size), tuple_of(pool.padding)
    plain = kernel == stride and not any(padding) and not pool.ceil_mode and getattr(pool, "divisor_override", None) is None
    return kernel if plain else None


def _fits_oneDNN(conv: nn.Conv3d) -> bool:
    return (
        torch.backends.mkldnn.is_available()
        and _is_plain(conv)
        and all(d * (k - 1) >= p for k, p, d in zip(conv.kernel_size, conv.padding, conv.dilation))
    )


CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


def _is_plain(conv: nn.Module) -> bool:
    """Stride 1, no groups, explicit zero padding: the convolutions the faster paths handle."""
    return all(s == 1 for s in conv.stride) and conv.groups == 1 and conv.padding_mode == "zeros" and not isinstance(conv.padding, str)


def frozen_layer(layer: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """The callable the engine runs for one body layer (the layer itself unless a faster path applies)."""
    if type(layer) in CONVS and layer.in_channels == 1 and _is_plain(layer):
        return FrozenSingleChannelConv(layer)
    if type(layer) is nn.Conv3d and _fits_oneDNN(layer):
        return FrozenConv3d(layer)
    if type(layer) in AVG_POOLS and (kernel := _block_mean_kernel(layer)):
        return lambda x: _BlockMean.apply(x, kernel) if x.ndim == len(kernel) + 2 else layer(x)
    return layer


def frozen_layers(encoder) -> list[tuple[str, Callable[[torch.Tensor], torch.Tensor]]]:
    """The body's ``(name, callable)`` pairs for `TappedEncoder.taps`, with the faster paths above."""
    return [(name, frozen_layer(layer)) for name, layer in encoder.body.named_children()]
