"""The style-transfer quality measures (`convgen.style.quality`) and options (`convgen.style.color`), on tiny
inputs against hand-computed values, in 1D, 2D and 3D."""

import math

import pytest
import torch

from convgen.errors import ConfigError
from convgen.style import color, quality


class Identity:
    """An 'encoder' whose one tap is its input: Gram statistics become mean products of the input's channels."""

    def taps(self, x, names):
        return {name: x for name in names}


@pytest.mark.parametrize("dims", [1, 2, 3])
def test_gaussian_blur_of_an_impulse_is_the_sampled_separable_gaussian(dims):
    n, sigma = 9, 1.0
    x = torch.zeros(1, *(n,) * dims, dtype=torch.float64)
    x[(0, *(n // 2,) * dims)] = 1.0
    t = torch.arange(-3, 4, dtype=torch.float64)  # radius ceil(3 sigma) = 3
    g = torch.exp(-(t**2) / 2)
    g = g / g.sum()
    expected = g
    for _ in range(dims - 1):
        expected = expected[..., None] * g
    out = quality.gaussian_blur(x, sigma)[0]
    centre = tuple(slice(n // 2 - 3, n // 2 + 4) for _ in range(dims))
    assert torch.allclose(out[centre], expected, atol=1e-12)
    assert math.isclose(float(out.sum()), 1.0, abs_tol=1e-12)  # nothing reached a border


def test_global_ssim_is_wang_et_al_formula():
    # x = 1, 2, 3, 4 and y = 2x: means 2.5 and 5, variances 1.25 and 5, covariance 2.5; range 8.
    x = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    c1, c2 = (0.01 * 8) ** 2, (0.03 * 8) ** 2
    expected = (2 * 2.5 * 5 + c1) * (2 * 2.5 + c2) / ((2.5**2 + 5**2 + c1) * (1.25 + 5 + c2))
    assert math.isclose(quality.ssim(x, 2 * x, data_range=8, sigma=None), expected, rel_tol=1e-12)
    # Only the mean term is left when y is constant: (2 mx my + c1)(c2) / ((mx^2 + my^2 + c1)(vx + c2)).
    y = torch.full_like(x, 2.5)
    expected = (2 * 2.5 * 2.5 + c1) * c2 / ((2 * 2.5**2 + c1) * (1.25 + c2))
    assert math.isclose(quality.ssim(x, y, data_range=8, sigma=None), expected, rel_tol=1e-12)


@pytest.mark.parametrize("dims", [1, 2, 3])
def test_windowed_ssim_in_any_dims(dims):
    g = torch.Generator().manual_seed(dims)
    x = torch.rand(2, *(12,) * dims, generator=g, dtype=torch.float64)
    assert math.isclose(quality.ssim(x, x, data_range=1), 1.0, rel_tol=1e-12)
    # Constant images: every local variance is 0, so SSIM is (2ab + c1) / (a^2 + b^2 + c1) everywhere.
    a, b, c1 = 0.2, 0.6, 0.01**2
    expected = (2 * a * b + c1) / (a * a + b * b + c1)
    assert math.isclose(quality.ssim(torch.full_like(x, a), torch.full_like(x, b), data_range=1), expected, rel_tol=1e-9)
    noisy = x + 0.3 * torch.randn(x.shape, generator=g)
    assert quality.ssim(noisy, x, data_range=1) < quality.content_ssim(noisy, x, lowpass=2, data_range=1) < 1


@pytest.mark.parametrize("dims, per_axis", [(1, 2), (2, 4), (3, 6)])
def test_laplacian_energy_of_a_checkerboard(dims, per_axis):
    # (sum of indices) % 2: every second difference is +-2 per axis, the same sign on every axis.
    n = 6
    grid = torch.stack(torch.meshgrid(*[torch.arange(n)] * dims, indexing="ij")).sum(0) % 2
    x = grid[None].double()
    assert math.isclose(quality.laplacian_energy(x), per_axis**2)
    assert math.isclose(quality.hf_ratio(3 * x, x), 9.0)
    assert quality.laplacian_energy(torch.ones(1, *(n,) * dims)) == 0.0


def test_style_distance_relative_to_the_style_halves_by_hand():
    # One channel, identity 'encoder': the Gram per position is mean(x^2).
    style = torch.tensor([[1.0, 1.0, 2.0, 2.0]])  # halves [1, 1] and [2, 2]: Grams 1 and 4 -> |1 - 4| / 4 = 0.75
    result = torch.ones(1, 4)  # Gram 1 against the style's (1 + 1 + 4 + 4) / 4 = 2.5 -> 1.5 / 2.5 = 0.6
    out = quality.style_distance(result, style, encoder=Identity(), layers=["x"])
    assert math.isclose(out["self"], 0.75) and math.isclose(out["distance"], 0.6) and math.isclose(out["ratio"], 0.8)
    assert quality.style_distance(style, style, encoder=Identity(), layers=["x"])["distance"] == 0.0


def test_two_channel_gram_distance_by_hand():
    a = torch.tensor([[1.0, 1.0], [0.0, 2.0]])  # Gram/M = [[1, 1], [1, 2]]
    b = torch.tensor([[1.0, 1.0], [1.0, 1.0]])  # Gram/M = [[1, 1], [1, 1]]
    stats = lambda x: quality.gram_statistics(Identity(), x, ["x"])  # noqa: E731
    assert math.isclose(quality.gram_distance(stats(a), stats(b)), 1 / 2)  # ||[[0, 0], [0, 1]]|| / ||ones(2, 2)|| = 1 / 2


@pytest.mark.parametrize("dims", [1, 2, 3])
def test_the_measuring_encoder_is_fixed_and_leaves_the_global_seed_alone(dims):
    torch.manual_seed(5)
    before = torch.random.get_rng_state()
    one, two = quality.measuring_encoder(dims, 1), quality.measuring_encoder(dims, 1)
    assert torch.equal(torch.random.get_rng_state(), before)
    assert all(torch.equal(p, q) for p, q in zip(one.parameters(), two.parameters()))
    x = torch.rand(1, *(20,) * dims)
    # A crop of a texture is closer to it than a smooth ramp of the same range is.
    ramp = torch.linspace(0, 1, 20).expand(*(20,) * dims)[None].contiguous()
    assert quality.style_distance(x, x)["ratio"] == 0
    assert quality.style_distance(ramp, x)["ratio"] > 1


def test_luminance_transfer_keeps_the_contents_colours():
    g = torch.Generator().manual_seed(0)
    content, style = torch.rand(3, 8, 8, generator=g), torch.rand(3, 8, 8, generator=g)
    y, (ys,) = color.luminance(content, [style])
    assert y.shape == (1, 8, 8)
    assert torch.allclose(y[0], 0.299 * content[0] + 0.587 * content[1] + 0.114 * content[2], atol=1e-6)
    assert math.isclose(float(ys.mean()), float(y.mean()), abs_tol=1e-6) and math.isclose(float(ys.std()), float(y.std()), rel_tol=1e-5)
    assert torch.allclose(color.with_chroma(y, content), content, atol=1e-5)  # Y back with its own chroma: the content
    with pytest.raises(ConfigError, match="needs RGB"):
        color.luminance(content[:1], [style[:1]])


def test_histogram_matching_gives_the_contents_mean_and_covariance():
    g = torch.Generator().manual_seed(1)
    content = torch.rand(3, 16, 16, generator=g)
    style = 0.5 * torch.rand(3, 16, 16, generator=g) + 0.2 * torch.rand(1, 16, 16, generator=g)
    matched = color.match_histogram(style, content).double().flatten(1)
    reference = content.double().flatten(1)
    assert torch.allclose(matched.mean(1), reference.mean(1), atol=1e-6)
    assert torch.allclose(torch.cov(matched), torch.cov(reference), atol=1e-6)
    one = color.match_histogram(style[:1], content[:1])
    assert math.isclose(float(one.std()), float(content[0].std()), rel_tol=1e-5)


@pytest.mark.parametrize("dims", [1, 2, 3])
def test_downsample_is_a_block_mean_and_upsample_restores_the_shape(dims):
    x = torch.arange(4**dims, dtype=torch.float32).view(1, *(4,) * dims)
    down = color.downsample(x, 2)
    assert down.shape == (1, *(2,) * dims)
    assert math.isclose(float(down[(0, *(0,) * dims)]), float(x[(0, *(slice(0, 2),) * dims)].mean()))
    assert color.upsample(down, (4,) * dims).shape == x.shape


@pytest.mark.parametrize("dims", [1, 2, 3])
def test_random_multiscale_blur_is_average_pooling_and_its_filters_ignore_brightness(dims):
    from torch import nn

    from convgen.nets.random_multiscale import RandomMultiScale, box_blur

    x = torch.rand(1, 2, *(9,) * dims, dtype=torch.float64)
    for width in (3, 7, 31):  # 31: wider than the input
        blur = box_blur(dims, dims - 1, width)
        pool = (nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d)[dims - 1]
        kernel = blur.kernel_size if width <= 9 else (1,) * (dims - 1) + (9,)
        padding = blur.padding if width <= 9 else (0,) * (dims - 1) + (4,)
        if width <= 9:
            assert torch.allclose(blur(x), pool(kernel, 1, padding, count_include_pad=False)(x), atol=1e-12)
        else:  # every window holds the whole axis: the axis mean everywhere
            assert torch.allclose(blur(x), x.mean(-1, keepdim=True).expand_as(x), atol=1e-12)
    torch.manual_seed(0)
    encoder = RandomMultiScale(dims, 1, filters=3, kernel_size=3, dilations=(1, 2))
    assert encoder.output_shapes(12)["relu"] == (6, *(12,) * dims)
    with torch.no_grad():
        inner = (slice(None), slice(None), *(slice(4, -4),) * dims)  # away from the zero padding
        assert encoder.taps(torch.full((1, 1, *(12,) * dims), 0.7), ["conv"])["conv"][inner].abs().max() < 1e-6
    with pytest.raises(ConfigError, match="dilations"):
        RandomMultiScale(dims, 1, dilations=(2, 2))
