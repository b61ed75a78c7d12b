"""Running a frozen encoder for gradients with respect to its input only.

Style transfer differentiates the cost with respect to the generated input ``G``, never
the weights, and always with a batch of one. Two of PyTorch's CPU kernel choices are slow
for exactly that case, so the engine runs those layers its own way (same numbers to float
rounding, tested against the plain layers):

- **3D convolutions.** For a batch of one, PyTorch's heuristic sends small volumes to its
  native im2col kernels (``Slow3d``, ``SlowDilated3d``), 3-10x slower than oneDNN on these
  shapes. Where it would, the forward pass runs through oneDNN, and so does the input
  gradient: with the weights frozen and stride 1, the gradient of a convolution with
  respect to its input is a convolution of the output gradient with the spatially flipped
  kernel, input and output channels swapped.
- **1D average pooling** with kernel = stride (no padding) is a reshape and a mean; PyTorch
  runs it through its 2D pooling kernel, which costs more than the convolution beside it.

Every other layer (and every layer on a GPU, or in another dtype) runs as it is.
"""

from __future__ import annotations

from typing import Callable

import torch
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


def _pool1d(x: torch.Tensor, k: int) -> torch.Tensor:
    return x[..., : x.shape[-1] // k * k].unflatten(-1, (-1, k)).mean(-1)


def _fits_oneDNN(conv: nn.Conv3d) -> bool:
    return (
        torch.backends.mkldnn.is_available()
        and conv.stride == (1, 1, 1)
        and conv.groups == 1
        and conv.padding_mode == "zeros"
        and not isinstance(conv.padding, str)
        and all(d * (k - 1) >= p for k, p, d in zip(conv.kernel_size, conv.padding, conv.dilation))
    )


def frozen_layer(layer: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """The callable the engine runs for one body layer (the layer itself unless a faster path applies)."""
    if type(layer) is nn.Conv3d and _fits_oneDNN(layer):
        return FrozenConv3d(layer)
    if type(layer) is nn.AvgPool1d and layer.kernel_size == layer.stride and layer.padding == (0,) and not layer.ceil_mode:
        k = layer.kernel_size[0]
        return lambda x: _pool1d(x, k)
    return layer


def frozen_layers(encoder) -> list[tuple[str, Callable[[torch.Tensor], torch.Tensor]]]:
    """The body's ``(name, callable)`` pairs for `TappedEncoder.taps`, with the faster paths above."""
    return [(name, frozen_layer(layer)) for name, layer in encoder.body.named_children()]
