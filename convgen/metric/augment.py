"""Random, identity-preserving changes of training samples, for any spatial_dims.

With few samples per identity (a handful of photos or beats per person), an encoder
memorises its training set; small random flips, shifts, rotations, zooms, contrast
changes, slow drifts (baseline wander, uneven lighting), uneven stretches (a heartbeat's
timing at another heart rate, a face's proportions) and noise teach it what does not
change who someone is. Geometry is one resampling (``grid_sample``, border padding): an
affine map, optionally bent by ``warp``; 1D signals are treated as images one pixel high (no rotation), 3D volumes
rotate in the plane of their last two axes.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from convgen.errors import ConfigError

DEFAULTS = {"flip": [], "shift": 0.0, "rotate": 0.0, "scale": 0.0, "warp": 0.0, "contrast": 0.0, "drift": 0.0, "noise": 0.0}


class Augment:
    """A random transform of one sample ``(C, *spatial)``.

    Args:
        flip: spatial axes (1-based, as in ``d1, d2, d3``) each flipped with probability ½.
        shift: largest translation, as a fraction of the size, per axis.
        rotate: largest rotation in degrees (2D; 3D in the plane of the last two axes).
        scale: largest relative zoom (0.1: 90% to 110%).
        warp: largest uneven stretch: along each spatial axis, sampling positions ``u`` in
            [-1, 1] move to ``u + a·(1 - u²)`` with ``a`` uniform in [-warp, warp], so both
            ends stay, one half is stretched and the other compressed (local scale 1 ± 2a
            at the ends; at most 0.45, which keeps the map monotone).
        contrast: largest relative contrast change around the sample's mean.
        drift: largest slow additive change (baseline wander of a signal, a lighting
            gradient of an image): a random offset plus a random linear ramp along each
            spatial axis, each up to ``drift`` × the sample's standard deviation.
        noise: Gaussian noise, as a fraction of the sample's standard deviation.
    """

    def __init__(self, flip=(), shift: float = 0.0, rotate: float = 0.0, scale: float = 0.0, contrast: float = 0.0, noise: float = 0.0,
                 drift: float = 0.0, warp: float = 0.0):  # fmt: skip
        for name, value, top in (("shift", shift, 0.5), ("rotate", rotate, 180), ("scale", scale, 0.9), ("warp", warp, 0.45),
                                 ("contrast", contrast, 1), ("drift", drift, 10), ("noise", noise, 10)):  # fmt: skip
            if not isinstance(value, (int, float)) or not 0 <= value <= top:
                raise ConfigError(f"augment.{name} must be a number between 0 and {top}, got {value!r}")
        flip = list(flip or [])
        if any(not isinstance(a, int) or not 1 <= a <= 3 for a in flip):
            raise ConfigError(f"augment.flip lists spatial axes 1, 2 or 3, got {flip!r}")
        self.flip, self.shift, self.rotate, self.scale, self.warp = flip, float(shift), float(rotate), float(scale), float(warp)
        self.contrast, self.drift, self.noise = float(contrast), float(drift), float(noise)

    @property
    def active(self) -> bool:
        return bool(self.flip or self.shift or self.rotate or self.scale or self.warp or self.contrast or self.drift or self.noise)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        dims = x.ndim - 1
        if any(a > dims for a in self.flip):
            raise ConfigError(f"augment.flip names axis {max(self.flip)} but samples have {dims} spatial axes")
        for axis in self.flip:
            if torch.rand(()) < 0.5:
                x = x.flip(axis)
        if self.shift or self.rotate or self.scale or self.warp:
            x = self._affine(x)
        if self.contrast:
            mean = x.mean()
            x = mean + (x - mean) * (1 + self.contrast * (2 * torch.rand(()) - 1))
        if self.drift:
            x = x + self.drift * x.std() * self._ramp(x)
        if self.noise:
            x = x + self.noise * x.std() * torch.randn_like(x)
        return x

    @staticmethod
    def _ramp(x: torch.Tensor) -> torch.Tensor:
        """A random offset plus a linear ramp along each spatial axis, each within [-1, 1]."""
        out = (2 * torch.rand(()) - 1).expand_as(x[:1]).clone()
        for axis, size in enumerate(x.shape[1:]):
            shape = [1] * (x.ndim - 1)
            shape[axis] = size
            out = out + (2 * torch.rand(()) - 1) * torch.linspace(-1, 1, size).reshape(shape)
        return out

    def _affine(self, x: torch.Tensor) -> torch.Tensor:
        dims = x.ndim - 1
        volume = x[None] if dims > 1 else x[None, :, None]  # 1D: an image one pixel high
        n = max(dims, 2)
        u = lambda size=(): 2 * torch.rand(size) - 1  # noqa: E731 - uniform in [-1, 1]
        theta = torch.eye(n) / (1 + self.scale * u())
        if self.rotate and dims > 1:
            a = math.radians(self.rotate) * float(u())
            rotation = torch.tensor([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
            theta[:2, :2] = rotation @ theta[:2, :2]  # grid axes are (x, y[, z]) = the last axes first
        translation = 2 * self.shift * u((n,))
        if dims == 1:
            theta[1, 1], translation[1] = 1.0, 0.0
        matrix = torch.cat([theta, translation[:, None]], 1)[None]
        grid = F.affine_grid(matrix, list(volume.shape), align_corners=False)
        if self.warp:  # grid[..., i] is the position along spatial axis dims - i (x first); a 1D sample's fake y stays
            a = self.warp * u((dims,))
            grid = torch.stack([grid[..., i] + a[i] * (1 - grid[..., i].clamp(-1, 1) ** 2) if i < dims else grid[..., i]
                                for i in range(n)], -1)  # fmt: skip
        out = F.grid_sample(volume, grid, mode="bilinear", padding_mode="border", align_corners=False)
        return out[0] if dims > 1 else out[0, :, 0]


class Augmented(Dataset):
    """``dataset`` whose samples pass through ``augment`` each time they are read (labels unchanged)."""

    def __init__(self, dataset, augment: Augment):
        self.dataset, self.augment = dataset, augment

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index):
        sample, label = self.dataset[index]
        return self.augment(sample), label
