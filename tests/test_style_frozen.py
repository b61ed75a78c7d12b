"""The style engine's faster layers (`convgen.style.frozen`) compute what the plain layers do."""

import pytest
import torch
from torch import nn

from convgen.nets import VGGEncoder
from convgen.style import frozen
from convgen.style.transfer import StyleTransfer


def value_and_input_gradient(layer, x, weights):
    x = x.clone().requires_grad_(True)
    y = layer(x)
    (y * weights).sum().backward()
    return y.detach(), x.grad


@pytest.mark.parametrize(
    "conv, size",
    [
        (nn.Conv3d(8, 16, 3, padding=1), 10),
        (nn.Conv3d(8, 4, 3, padding=0, bias=False), 9),  # valid convolution, no bias
        (nn.Conv3d(4, 8, (3, 5, 1), padding=(1, 2, 0)), 8),  # anisotropic kernel
        (nn.Conv3d(4, 8, 3, padding=2, dilation=2), 11),
        (nn.Conv3d(2, 8, 3, padding=1), 12),  # few input channels (one goes the matrix-product way)
    ],
)
def test_a_3d_convolution_through_onednn_matches_pytorch_in_value_and_input_gradient(conv, size):
    conv.requires_grad_(False)
    fast = frozen.frozen_layer(conv)
    x = torch.randn(1, conv.in_channels, size, size + 1, size + 2)
    assert isinstance(fast, frozen.FrozenConv3d) and frozen._select_backend(x, conv) in frozen.SLOW_BACKENDS  # the path under test runs
    y, grad = value_and_input_gradient(conv, x, weights := torch.randn_like(conv(x)))
    y_fast, grad_fast = value_and_input_gradient(fast, x, weights)
    assert torch.allclose(y_fast, y, rtol=1e-5, atol=1e-5 * y.abs().max())
    assert torch.allclose(grad_fast, grad, rtol=1e-5, atol=1e-5 * grad.abs().max())


@pytest.mark.parametrize(
    "conv, shape",
    [
        (nn.Conv1d(1, 8, 3, padding=1), (50,)),
        (nn.Conv1d(1, 8, 5, padding=0, bias=False), (9,)),
        (nn.Conv2d(1, 8, 3, padding=1), (17, 20)),
        (nn.Conv2d(1, 8, (3, 5), padding=(2, 0), dilation=(2, 1)), (12, 9)),
        (nn.Conv2d(1, 8, 7, padding=4), (8, 8)),  # more padding than the kernel reaches
        (nn.Conv3d(1, 8, 3, padding=1), (6, 7, 8)),
        (nn.Conv3d(1, 4, 2, padding=0, dilation=3), (5, 6, 7)),
    ],
)
def test_a_single_channel_convolution_as_a_matrix_product_matches_pytorch(conv, shape):
    conv.requires_grad_(False)
    fast = frozen.frozen_layer(conv)
    assert isinstance(fast, frozen.FrozenSingleChannelConv)
    x = torch.randn(2, 1, *shape)
    y, grad = value_and_input_gradient(conv, x, weights := torch.randn_like(conv(x)))
    y_fast, grad_fast = value_and_input_gradient(fast, x, weights)
    assert y_fast.shape == y.shape
    assert torch.allclose(y_fast, y, rtol=1e-5, atol=1e-5 * y.abs().max())
    assert torch.allclose(grad_fast, grad, rtol=1e-5, atol=1e-5 * grad.abs().max())


def test_a_single_channel_convolution_on_too_small_an_input_fails_as_pytorch_does():
    conv = nn.Conv2d(1, 8, 5).requires_grad_(False)
    with pytest.raises(RuntimeError, match="(?i)kernel size can't be greater|input image .* too small"):
        frozen.frozen_layer(conv)(torch.randn(1, 1, 3, 3))


@pytest.mark.parametrize(
    "pool, shape",
    [
        (nn.AvgPool1d(1), (10,)),
        (nn.AvgPool1d(2), (64,)),
        (nn.AvgPool1d(2), (65,)),
        (nn.AvgPool1d(2), (4099,)),
        (nn.AvgPool1d(3), (31,)),
        (nn.AvgPool1d(4), (4099,)),
        (nn.AvgPool1d(5), (5,)),
        (nn.AvgPool1d(7), (100,)),
        (nn.AvgPool2d(2), (32, 33)),
        (nn.AvgPool2d((2, 1)), (9, 7)),
        (nn.AvgPool2d(3, stride=3), (10, 12)),
        (nn.AvgPool3d(2), (9, 8, 11)),
        (nn.AvgPool3d((1, 2, 3)), (5, 8, 13)),
    ],
)
def test_average_pooling_as_block_means_matches_pytorch_with_odd_lengths(pool, shape):
    fast = frozen.frozen_layer(pool)
    assert fast is not pool
    x = torch.randn(2, 3, *shape)
    y, grad = value_and_input_gradient(pool, x, weights := torch.randn_like(pool(x)))
    y_fast, grad_fast = value_and_input_gradient(fast, x, weights)
    assert y_fast.shape == y.shape and torch.allclose(y_fast, y, atol=1e-6) and torch.allclose(grad_fast, grad, atol=1e-6)


@pytest.mark.parametrize(
    "layer",
    [
        nn.Conv3d(4, 8, 3, stride=2, padding=1),
        nn.Conv3d(4, 8, 3, padding=1, groups=2),
        nn.Conv3d(4, 8, 3, padding="same"),
        nn.Conv3d(4, 8, 3, padding=1, padding_mode="reflect"),
        nn.Conv3d(4, 8, 3, padding=3),  # more padding than the kernel reaches: the gradient would need negative padding
        nn.Conv2d(1, 8, 3, stride=2),
        nn.Conv1d(1, 8, 3, padding="same"),
        nn.Conv2d(1, 8, 3, padding=1, padding_mode="reflect"),
        nn.Conv2d(2, 8, 3, padding=1),
        nn.AvgPool1d(3, stride=2),
        nn.AvgPool1d(2, padding=1),
        nn.AvgPool2d(2, ceil_mode=True),
        nn.AvgPool2d(2, divisor_override=3),
        nn.AvgPool3d((2, 2, 2), stride=(2, 2, 1)),
        nn.ReLU(),
    ],
)
def test_layers_without_a_faster_path_run_as_they_are(layer):
    assert frozen.frozen_layer(layer) is layer


def test_a_large_volume_keeps_pytorchs_own_kernel():
    conv = nn.Conv3d(32, 32, 3, padding=1).requires_grad_(False)
    x = torch.randn(1, 32, 40, 40, 40)  # big enough that PyTorch itself picks oneDNN
    assert frozen._select_backend(x, conv) not in frozen.SLOW_BACKENDS
    assert torch.equal(frozen.frozen_layer(conv)(x), conv(x))


@pytest.mark.parametrize("dims, size", [(1, 300), (2, 37), (3, 14)])
def test_the_engine_cost_and_its_gradient_equal_the_plain_encoders(dims, size, monkeypatch):
    torch.manual_seed(0)
    encoder = VGGEncoder(dims, 1, channels=(8, 16, 16), convs=(1, 1, 1), pool="avg")
    gen = torch.Generator().manual_seed(1)
    content, style, start = (torch.rand(1, *[size] * dims, generator=gen) for _ in range(3))

    def cost_and_gradient():
        engine = StyleTransfer(encoder, ["relu2_1"], ["relu1_1", "relu2_1", "relu3_1"], alpha=1, beta=10)
        engine.set_targets(content, [style])
        g = start[None].clone().requires_grad_(True)
        total, _ = engine.loss(g)
        total.backward()
        return total.detach(), g.grad

    fast = cost_and_gradient()
    monkeypatch.setattr("convgen.style.transfer.frozen_layers", lambda enc: list(enc.body.named_children()))
    plain = cost_and_gradient()
    assert torch.allclose(fast[0], plain[0], rtol=1e-5)
    assert torch.allclose(fast[1], plain[1], rtol=1e-4, atol=1e-5 * plain[1].abs().max())


def test_the_flipped_kernel_follows_weights_changed_in_place():
    conv = nn.Conv3d(8, 8, 3, padding=1).requires_grad_(False)
    fast = frozen.frozen_layer(conv)
    x = torch.randn(1, 8, 10, 10, 10)
    value_and_input_gradient(fast, x, torch.ones(1, 8, 10, 10, 10))  # builds the flipped kernel
    with torch.no_grad():
        conv.weight.mul_(-2)
    _, grad = value_and_input_gradient(conv, x, ones := torch.ones(1, 8, 10, 10, 10))
    _, grad_fast = value_and_input_gradient(fast, x, ones)
    assert torch.allclose(grad_fast, grad, atol=1e-5 * grad.abs().max())
