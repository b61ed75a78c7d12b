"""Training augmentation: identity-preserving random changes, for 1D, 2D and 3D samples."""

import pytest
import torch

from convgen.errors import ConfigError
from convgen.metric.augment import Augment, Augmented


@pytest.mark.parametrize("dims", [1, 2, 3])
def test_a_zero_strength_affine_reproduces_the_sample(dims):
    x = torch.rand(2, *(8,) * dims)
    out = Augment(shift=1e-12)._affine(x)  # identity matrix, no translation: grid_sample must give x back
    assert out.shape == x.shape and torch.allclose(out, x, atol=1e-5)


@pytest.mark.parametrize("dims", [1, 2, 3])
def test_every_transform_keeps_shape_range_and_finiteness(dims):
    torch.manual_seed(0)
    augment = Augment(flip=list(range(1, dims + 1)), shift=0.1, rotate=15, scale=0.1, contrast=0.2, noise=0.05)
    x = torch.rand(1, *(12,) * dims)
    outs = [augment(x) for _ in range(5)]
    assert all(o.shape == x.shape and torch.isfinite(o).all() for o in outs)
    assert not all(torch.allclose(outs[0], o) for o in outs[1:])  # random


def test_flip_mirrors_the_named_axis_and_contrast_keeps_the_mean():
    x = torch.arange(6.0).reshape(1, 2, 3)
    seen = {tuple(Augment(flip=[2])(x).flatten().tolist()) for _ in range(40)}
    assert seen == {tuple(x.flatten().tolist()), tuple(x.flip(2).flatten().tolist())}
    y = Augment(contrast=0.5)(x)
    assert torch.isclose(y.mean(), x.mean())


def test_a_shift_moves_content_along_the_axis():
    torch.manual_seed(1)
    x = torch.zeros(1, 64)
    x[0, 32] = 1.0
    moved = [int(Augment(shift=0.2)(x).argmax()) for _ in range(20)]
    assert all(abs(m - 32) <= 0.2 * 64 + 1 for m in moved) and len(set(moved)) > 1


def test_bad_settings_are_config_errors_and_labels_survive():
    with pytest.raises(ConfigError, match="augment.shift"):
        Augment(shift=0.9)
    with pytest.raises(ConfigError, match="augment.flip"):
        Augment(flip=[0])
    with pytest.raises(ConfigError, match="names axis 3"):
        Augment(flip=[3])(torch.rand(1, 4, 4))
    data = [(torch.rand(1, 8), 7)]
    sample, label = Augmented(data, Augment(noise=0.1))[0]
    assert label == 7 and sample.shape == (1, 8)
    assert not Augment().active and Augment(noise=0.1).active


def test_the_train_recipe_takes_an_augment_block(tmp_path):
    from conftest import invoke

    result = invoke("run", "train", "epochs=1", "dataset.identities=8", "dataset.samples_per_identity=4", "spatial_dims=1",
                    "augment.flip=[1]", "augment.shift=0.05", "augment.noise=0.05", "encoder.channels=[4,8]",
                    "encoder.strides=[1,2]", "-o", tmp_path / "run")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert (tmp_path / "run" / "encoder.safetensors").is_file()


@pytest.mark.parametrize("dims", [1, 2])
def test_drift_adds_an_offset_and_ramp_within_its_bound(dims):
    """Baseline wander / a lighting gradient: x + a·std(x)·(offset + ramps), every term within ±drift."""
    torch.manual_seed(0)
    x = torch.randn(2, *(16,) * dims)
    for _ in range(20):
        change = Augment(drift=0.5)(x) - x
        assert torch.allclose(change[0], change[1], atol=1e-5)  # the same slow field on every channel
        assert change.abs().max() <= 0.5 * x.std() * (1 + dims) + 1e-5
        if dims == 1:  # an offset plus a straight line: second differences vanish
            assert torch.allclose(change[0].diff(n=2), torch.zeros(14), atol=1e-5)
    assert not torch.allclose(Augment(drift=0.5)(x), Augment(drift=0.5)(x))
    with pytest.raises(ConfigError, match="augment.drift"):
        Augment(drift=-1)


@pytest.mark.parametrize("dims", [1, 2])
def test_warp_stretches_unevenly_keeping_the_ends_and_the_order(dims):
    """An uneven stretch (a beat's timing at another heart rate): ends fixed, the middle moved, nothing reordered."""
    torch.manual_seed(0)
    size = 101
    ramp = torch.linspace(-1, 1, size)  # the sample's own positions: warping it shows the map
    x = ramp.reshape(1, *([1] * (dims - 1)), size).expand(1, *(size,) * dims).clone()
    moved = []
    for _ in range(20):
        out = Augment(warp=0.2)._affine(x)
        line = out.reshape(-1, size)[0]
        assert torch.allclose(line[[0, -1]], ramp[[0, -1]], atol=0.02)  # both ends stay
        assert (line.diff() > 0).all()  # monotone: no sample passes another
        u = torch.linspace(-1, 1, 2 * size + 1)[1::2]  # grid_sample's pixel centres (align_corners=False)
        where = ((line + 1) * (size - 1) + 1) / size - 1  # the position each output pixel was read from
        a = (where[size // 2] - u[size // 2]) / (1 - u[size // 2] ** 2)
        assert abs(a) <= 0.2 + 1e-4
        inner = slice(2, -2)  # the border pixels are clamped to the sample's ends
        assert torch.allclose(where[inner], (u + a * (1 - u**2))[inner], atol=1e-4)  # the documented curve
        moved.append(float(a))
    assert max(moved) - min(moved) > 0.1  # random in [-warp, warp]
    assert Augment(warp=0.1).active
    with pytest.raises(ConfigError, match="augment.warp"):
        Augment(warp=0.5)
