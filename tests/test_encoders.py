"""Every registered encoder that builds for any spatial_dims, in 1D, 2D and 3D: shapes, tap names and receptive fields,
checked against hand-computed values and against a brute-force gradient-support reference."""

import copy
import inspect

import pytest
import torch
from torch import nn

from convgen.errors import ConfigError, DataError
from convgen.registry import get_registry

# Small widths keep 3D fast; the geometry (and so every expected value) is unchanged.
# Small settings for the encoders these tests build (plugins' encoders included: every
# registered encoder that needs no weights file is checked the same way).
SMALL = {"resnet": {"channels": (4, 8, 8, 8)}, "vgg": {"channels": (4, 4, 8, 8, 8)},
         "wide-conv": {"filters": 4, "kernel_sizes": (3, 9)}, "tdnn": {"channels": (4, 4, 4, 4, 8)},
         "random-multiscale": {"filters": 4, "dilations": (1, 2)}}  # fmt: skip

RESNET_TAPS = ["stem", "stage1", "stage2", "stage3", "stage4"]
VGG_TAPS = [
    "conv1_1", "relu1_1", "conv1_2", "relu1_2", "pool1",
    "conv2_1", "relu2_1", "conv2_2", "relu2_2", "pool2",
    "conv3_1", "relu3_1", "conv3_2", "relu3_2", "conv3_3", "relu3_3", "conv3_4", "relu3_4", "pool3",
    "conv4_1", "relu4_1", "conv4_2", "relu4_2", "conv4_3", "relu4_3", "conv4_4", "relu4_4", "pool4",
    "conv5_1", "relu5_1", "conv5_2", "relu5_2", "conv5_3", "relu5_3", "conv5_4", "relu5_4", "pool5",
]  # fmt: skip

# Hand-computed (size, stride, offset) per tap, and the tap's spatial size for a 32-wide input.
# resnet: stem k5 s2 p2; each stage two k3 convs, the first with the stage's stride.
RESNET_RF = {
    "stem": (5, 2, 0.0, 16), "stage1": (13, 2, 0.0, 16), "stage2": (25, 4, 0.0, 8),
    "stage3": (49, 8, 0.0, 4), "stage4": (97, 16, 0.0, 2),
}  # fmt: skip
# vgg-19 layout: 3-wide convs (pad 1), 2-wide pools; pool5 sees 268 samples (the known VGG-19 value).
VGG_RF = {
    "conv1_1": (3, 1, 0.0, 32), "conv1_2": (5, 1, 0.0, 32), "pool1": (6, 2, 0.5, 16),
    "conv2_1": (10, 2, 0.5, 16), "conv2_2": (14, 2, 0.5, 16), "pool2": (16, 4, 1.5, 8),
    "conv3_4": (48, 4, 1.5, 8), "pool3": (52, 8, 3.5, 4),
    "conv4_4": (116, 8, 3.5, 4), "pool4": (124, 16, 7.5, 2),
    "conv5_1": (156, 16, 7.5, 2), "conv5_4": (252, 16, 7.5, 2), "pool5": (268, 32, 15.5, 1),
}  # fmt: skip
EXPECTED = {"resnet": (RESNET_TAPS, RESNET_RF), "vgg": (VGG_TAPS, VGG_RF)}

def _any_dims(factory) -> bool:
    """Encoders built from defaults alone for any spatial_dims (not those that read a weights file)."""
    required = [p for p in inspect.signature(factory).parameters.values() if p.default is p.empty]
    return [p.name for p in required] == ["spatial_dims"]


ENCODERS = sorted(name for name in get_registry("encoder") if _any_dims(get_registry("encoder").get(name)))


def build(name, dims, **kwargs):
    factory = get_registry("encoder").get(name)
    return factory(dims, **{"in_channels": 2, **SMALL.get(name, {}), **kwargs})


def test_the_core_encoders_are_registered():
    assert {"resnet", "vgg"} <= set(ENCODERS)


@pytest.mark.parametrize("dims", [1, 2, 3])
@pytest.mark.parametrize("name", ENCODERS)
def test_shapes_taps_and_receptive_fields(name, dims):
    torch.manual_seed(0)
    encoder = build(name, dims, embedding_dim=24).eval()
    x = torch.randn(2, 2, *(32,) * dims)
    assert encoder(x).shape == (2, 24)

    fields, shapes = encoder.receptive_fields(), encoder.output_shapes(32)
    assert list(fields) == list(shapes) == encoder.tap_names
    if name not in EXPECTED:
        return
    taps, rf = EXPECTED[name]
    assert encoder.tap_names == taps
    for tap, (size, stride, offset, spatial) in rf.items():
        assert fields[tap].size == (size,) * dims, tap
        assert fields[tap].stride == (stride,) * dims, tap
        assert fields[tap].offset == (offset,) * dims, tap
        assert shapes[tap][1:] == (spatial,) * dims, tap


def _linearised(encoder):
    """A copy whose every unit is active and whose max-pools pass gradient to the whole window.

    Same geometry, so the gradient support of one output unit is exactly its receptive field.
    """
    model = copy.deepcopy(encoder).eval()
    for parent in model.modules():
        for child_name, child in parent.named_children():
            if isinstance(child, (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d)):
                avg = {1: nn.AvgPool1d, 2: nn.AvgPool2d, 3: nn.AvgPool3d}[encoder.spatial_dims]
                setattr(parent, child_name, avg(child.kernel_size, child.stride, child.padding))
    with torch.no_grad():
        for p in model.parameters():
            p.abs_().add_(0.01)
    return model


def _support(model, tap, size, index, dims):
    x = (torch.rand(1, model.in_channels, *(size,) * dims) + 0.1).requires_grad_(True)
    out = model.taps(x, [tap])[tap]
    out[(0, slice(None)) + (index,) * dims].sum().backward()
    nonzero = x.grad[0].abs().sum(0).nonzero()
    return nonzero.min(0).values.tolist(), nonzero.max(0).values.tolist()


# Deepest receptive field checked by brute force per dims (bounded to keep 2D/3D cheap).
BRUTE_LIMIT = {1: 300, 2: 60, 3: 16}


@pytest.mark.parametrize("dims", [1, 2, 3])
@pytest.mark.parametrize("name", ENCODERS)
def test_receptive_fields_match_gradient_support(name, dims):
    encoder = build(name, dims)
    model = _linearised(encoder)
    fields = encoder.receptive_fields()
    checked = [t for t in encoder.tap_names if fields[t].size[0] <= BRUTE_LIMIT[dims]]
    assert checked, "no tap small enough to check"
    for tap in checked[-3:]:
        field = fields[tap]
        size = field.size[0] + 4 * field.stride[0] + 8  # the unit and its neighbour lie clear of the borders
        index = (size // field.stride[0]) // 2
        lo, hi = _support(model, tap, size, index, dims)
        window = field.window((index,) * dims)
        assert lo == [w[0] for w in window] and hi == [w[1] - 1 for w in window], (tap, lo, hi, window)
        lo_next, _ = _support(model, tap, size, index + 1, dims)
        assert [b - a for a, b in zip(lo, lo_next)] == list(field.stride), tap


def test_taps_stop_at_the_deepest_requested_layer():
    encoder = build("vgg", 2).eval()
    called = []
    for name, layer in encoder.body.named_children():
        layer.register_forward_hook(lambda *_, n=name: called.append(n))
    out = encoder.taps(torch.randn(1, 2, 32, 32), ["relu2_1", "conv1_1"])
    assert list(out) == ["relu2_1", "conv1_1"]
    assert called[-1] == "relu2_1" and "conv2_2" not in called
    assert out["conv1_1"].shape == (1, 4, 32, 32)


def test_taps_reject_unknown_layers_and_wrong_inputs():
    encoder = build("resnet", 1)
    with pytest.raises(ConfigError, match="unknown layer.*'stage9'.*stem"):
        encoder.taps(torch.randn(1, 2, 32), ["stage9"])
    with pytest.raises(DataError, match=r"expects input of shape \(N, 2, d1\).*got \(1, 2, 32, 32\)"):
        encoder(torch.randn(1, 2, 32, 32))
    with pytest.raises(DataError, match="in_channels=2"):
        encoder(torch.randn(1, 3, 32))


def test_bad_encoder_arguments_are_config_errors():
    with pytest.raises(ConfigError, match="spatial_dims must be 1, 2 or 3"):
        build("resnet", 4)
    with pytest.raises(ConfigError, match="one stride per stage"):
        build("resnet", 2, strides=(1, 2))
    with pytest.raises(ConfigError, match="pool must be 'max' or 'avg'"):
        build("vgg", 2, pool="min")


@pytest.mark.parametrize("dims", [1, 2, 3])
def test_a_head_grid_pools_to_a_grid_before_the_projection(dims):
    encoder = build("resnet", dims, embedding_dim=8, head_grid=2).eval()
    assert encoder.head[-1].in_features == SMALL["resnet"]["channels"][-1] * 2**dims
    for size in (32, 24):  # any input size still works
        assert encoder(torch.randn(1, 2, *(size,) * dims)).shape == (1, 8)
    with pytest.raises(ConfigError, match="head_grid"):
        build("vgg", dims, head_grid=0)
