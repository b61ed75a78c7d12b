"""Colour preservation and multi-resolution helpers for style transfer (Gatys et al. 2017).

Gatys et al. 2017 ("Controlling perceptual factors in neural style transfer") keep the
content's colours in two ways, both here for inputs ``(C, *spatial)``:

- **luminance only** (`luminance`, `with_chroma`): the transfer runs on the luminance Y of
  YIQ (the style's Y first matched to the content's mean and spread), and the result's Y
  is recombined with the content's I and Q. Needs RGB.
- **histogram matching** (`match_histogram`): the style's colours are mapped by the affine
  transform that gives them the content's mean and covariance (``A = Σc^½ Σs^-½``), then
  the transfer runs as usual. Any channel count; for one channel it matches mean and spread.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from convgen.errors import ConfigError

COLOR_MODES = ("none", "luminance", "histogram")
YIQ = torch.tensor([[0.299, 0.587, 0.114], [0.595716, -0.274453, -0.321263], [0.211456, -0.522591, 0.311135]], dtype=torch.float64)


def _channels_last(x: torch.Tensor) -> torch.Tensor:
    return x.double().flatten(1)  # (C, positions)


def to_yiq(rgb: torch.Tensor) -> torch.Tensor:
    """RGB ``(3, *spatial)`` to YIQ (NTSC), float64."""
    if rgb.shape[0] != 3:
        raise ConfigError(f"preserve_color=luminance needs RGB inputs (3 channels), got {rgb.shape[0]}; use preserve_color=histogram")
    return (YIQ @ _channels_last(rgb)).view(rgb.shape)


def from_yiq(yiq: torch.Tensor) -> torch.Tensor:
    return (torch.linalg.inv(YIQ) @ _channels_last(yiq)).view(yiq.shape)


def match_moments(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``x`` (one channel) shifted and scaled to the mean and standard deviation of ``like``."""
    spread = x.std()
    scaled = (x - x.mean()) / spread * like.std() if spread > 0 else x - x.mean()
    return scaled + like.mean()


def luminance(content: torch.Tensor, styles: list[torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """The content's Y ``(1, *spatial)`` and each style's Y matched to its moments (Gatys et al. 2017, §5.1)."""
    y = to_yiq(content)[:1]
    return y.float(), [match_moments(to_yiq(s)[:1], y).float() for s in styles]


def with_chroma(y: torch.Tensor, content: torch.Tensor) -> torch.Tensor:
    """The generated luminance ``(1, *spatial)`` with the content's I and Q, back in RGB."""
    yiq = to_yiq(content)
    return from_yiq(torch.cat([y.double(), yiq[1:]])).to(content.dtype)


def _sqrtm(cov: torch.Tensor, power: float) -> torch.Tensor:
    values, vectors = torch.linalg.eigh(cov)
    return vectors @ torch.diag(values.clamp_min(1e-6 * float(values.max())) ** power) @ vectors.T  # a grey style: rank 1


def match_histogram(style: torch.Tensor, content: torch.Tensor) -> torch.Tensor:
    """``style`` with the mean and covariance of ``content``'s channels (Gatys et al. 2017, §5.2)."""
    if style.shape[0] != content.shape[0]:
        raise ConfigError(f"histogram matching needs the same channels, got {style.shape[0]} and {content.shape[0]}")
    s, c = _channels_last(style), _channels_last(content)
    mu_s, mu_c = s.mean(1, keepdim=True), c.mean(1, keepdim=True)
    if s.shape[0] == 1:
        return match_moments(style.double(), content.double()).to(style.dtype)
    cov_s, cov_c = torch.cov(s), torch.cov(c)
    a = _sqrtm(cov_c, 0.5) @ _sqrtm(cov_s, -0.5)
    return (a @ (s - mu_s) + mu_c).view(style.shape).to(style.dtype)


def downsample(x: torch.Tensor, factor: int) -> torch.Tensor:
    """``(C, *spatial)`` averaged over blocks of ``factor`` samples per axis (a trailing remainder dropped)."""
    if factor == 1:
        return x
    pool = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}[x.ndim - 1]
    return pool(x[None], factor)[0]


def upsample(x: torch.Tensor, shape) -> torch.Tensor:
    """``(C, *spatial)`` interpolated (linearly per axis) to ``shape``."""
    mode = {1: "linear", 2: "bilinear", 3: "trilinear"}[x.ndim - 1]
    return F.interpolate(x[None], size=list(shape), mode=mode, align_corners=False)[0]
