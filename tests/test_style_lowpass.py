"""The low-pass content term (Gatys et al. 2017's scale control): its blur against scipy, its
value against a hand computation, what it keeps when optimised, and its errors."""

import numpy as np
import pytest
import torch
from scipy import ndimage

from convgen.config import check_values
from convgen.errors import ConfigError
from convgen.nets import VGGEncoder
from convgen.style.costs import gaussian_lowpass
from convgen.style.quality import content_ssim, laplacian_energy
from convgen.style.from_config import demo_pair
from convgen.style.transfer import StyleTransfer


def small_encoder(dims):
    torch.manual_seed(0)
    return VGGEncoder(dims, 1, channels=(8, 16), convs=(1, 1), pool="avg")


def scipy_blur(x: np.ndarray, sigma) -> np.ndarray:
    """scipy's Gaussian filter over the spatial axes of ``(N, C, *spatial)``: 'mirror' is torch's 'reflect',
    and ``truncate=3`` gives the same radius as the engine's ``ceil(3 sigma)`` for these sigmas."""
    sigmas = [sigma] * (x.ndim - 2) if np.isscalar(sigma) else list(sigma)
    return ndimage.gaussian_filter(x, [0, 0, *sigmas], mode="mirror", truncate=3.0)


@pytest.mark.parametrize("dims,sigma", [(1, 2.0), (2, 1.5), (3, 1.0), (2, (2.0, 0.0))])
def test_gaussian_lowpass_matches_scipy_in_any_dims(dims, sigma):
    x = torch.rand(2, 3, *[14] * dims, generator=torch.Generator().manual_seed(dims), dtype=torch.float64)
    ours = gaussian_lowpass(x, sigma)
    assert ours.dtype == x.dtype and ours.shape == x.shape
    assert np.allclose(ours.numpy(), scipy_blur(x.numpy(), sigma), atol=1e-12)


@pytest.mark.parametrize("normalize", [True, False])
def test_lowpass_term_is_the_blurred_difference_over_the_blurred_contents_own_variation(normalize):
    gen = torch.Generator().manual_seed(3)
    content, style, generated = (torch.rand(1, 40, generator=gen) for _ in range(3))
    engine = StyleTransfer(small_encoder(1), [], ["relu1_1"], alpha=0.0, beta=0.0, lowpass=2.5, lowpass_sigma=1.5,
                           normalize_layers=normalize)  # fmt: skip
    engine.set_targets(content, [style])
    total, terms = engine.loss(generated[None])
    c, g = scipy_blur(content[None].double().numpy(), 1.5), scipy_blur(generated[None].double().numpy(), 1.5)
    expected = ((g - c) ** 2).sum() / (((c - c.mean()) ** 2).sum() if normalize else 1.0)
    assert terms["lowpass"] == pytest.approx(expected, rel=1e-4)
    assert float(total) == pytest.approx(2.5 * expected, rel=1e-4)  # alpha = beta = 0: the low-pass term alone
    assert engine.loss(content[None])[1]["lowpass"] == pytest.approx(0.0, abs=1e-9)
    plain = StyleTransfer(small_encoder(1), [], ["relu1_1"])
    plain.set_targets(content, [style])
    assert "lowpass" not in plain.loss(generated[None])[1]  # off by default: the terms are as before


@pytest.mark.parametrize("dims", [1, 2])
def test_the_lowpass_term_keeps_the_contents_coarse_structure_and_leaves_the_fine_one_alone(dims):
    size = {1: 512, 2: 32}[dims]
    content, style = demo_pair(dims, size, seed=1)
    content = 0.25 + 0.5 * content  # inside the range, so that clamping does not flatten the noise around it
    # The term alone (beta = 0), from noise: the blurred result becomes the blurred content, the noise's fine grain stays.
    alone = StyleTransfer(small_encoder(dims), [], ["relu1_1"], beta=0.0, lowpass=1.0, lowpass_sigma=2.0)
    start = alone.initial(content, content, "noise", 0.0, (0.0, 1.0), torch.Generator().manual_seed(0))
    result = alone.run(content, [style], init="noise", iterations=20, seed=0, show_progress=False)
    assert result.final["lowpass"] < 0.1 * result.start["lowpass"]
    assert laplacian_energy(result.generated) > 0.4 * laplacian_energy(start)  # the finest scales: the noise's
    # With the style: the content's coarse structure survives only where the term asks for it.
    runs = {}
    for weight in (0.0, 10.0):
        engine = StyleTransfer(small_encoder(dims), [], ["relu1_1", "relu2_1"], beta=1.0, lowpass=weight, lowpass_sigma=2.0)
        runs[weight] = engine.run(content, [style], init="noise", iterations=20, seed=0, show_progress=False)
    kept = {w: content_ssim(r.generated, content, 2.0, data_range=1.0) for w, r in runs.items()}
    assert kept[10.0] > kept[0.0] + 0.25, kept


def test_lowpass_errors_name_the_problem():
    with pytest.raises(ConfigError, match="lowpass must be >= 0 and lowpass_sigma > 0"):
        StyleTransfer(small_encoder(1), [], ["relu1_1"], lowpass=-1.0)
    with pytest.raises(ConfigError, match="lowpass_sigma > 0"):
        StyleTransfer(small_encoder(1), [], ["relu1_1"], lowpass=1.0, lowpass_sigma=0.0)
    _, style = demo_pair(1, 64, seed=0)
    engine = StyleTransfer(small_encoder(1), [], ["relu1_1"], lowpass=1.0)
    with pytest.raises(ConfigError, match="no content input"):
        engine.run(None, [style], init="noise", iterations=1, show_progress=False)
    for key, value in (("lowpass", -0.5), ("lowpass_sigma", 0.0), ("lowpass_sigma", -2)):
        with pytest.raises(ConfigError, match="out of range"):
            check_values(key, value)
    check_values("lowpass", 0.0), check_values("lowpass_sigma", 4.0)  # the defaults pass
