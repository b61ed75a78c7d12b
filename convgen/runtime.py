"""What every run sets up first: its random seeds and the device it computes on."""

from __future__ import annotations

import random

import numpy as np
import torch

from convgen.errors import ConfigError


def seed_everything(seed: int | None) -> None:
    """Seed Python, NumPy and torch, so that a resolved config reproduces its run on CPU."""
    if seed is None:
        return
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def resolve_device(name: str) -> torch.device:
    """``"auto"`` picks CUDA when present, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device={name} but this machine has no usable CUDA GPU; use device=auto or device=cpu")
    return device
