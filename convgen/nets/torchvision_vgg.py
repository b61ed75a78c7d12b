"""VGG-19 with ImageNet weights from a torchvision-format file the user already has.

Gatys-style transfer classically uses ImageNet VGG-19. Nothing can be downloaded at run
time, so this encoder reads a local file in torchvision's layout (``features.{i}.weight``
/ ``.bias`` for the 16 convolutions; the classifier is ignored): a ``.pth`` state dict
(read with ``torch.load(weights_only=True)``) or a ``.safetensors`` file with the same keys.
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import torch
from torch import nn

from convgen.errors import ConfigError, DataError, ModelMismatchError, PathError
from convgen.nets.vgg import VGGEncoder

CHANNELS = (64, 128, 256, 512, 512)
CONVS = (2, 2, 4, 4, 4)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def torchvision_indices() -> list[int]:
    """Positions of VGG-19's convolutions in torchvision's ``features`` Sequential."""
    indices, i = [], 0
    for count in CONVS:
        for _ in range(count):
            indices.append(i)
            i += 2  # conv, ReLU
        i += 1  # pool
    return indices


class ImageNetNormalize(nn.Module):
    """Maps RGB in [0, 1] to the statistics the ImageNet weights were trained on (grey as R = G = B)."""

    def __init__(self):
        super().__init__()
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, x):
        return (x.expand(-1, 3, -1, -1) - self.mean) / self.std


def read_state(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise PathError(f"VGG-19 weights file not found: {path}; pass the path of a torchvision vgg19 state dict")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            from convgen.weights import check_safetensors

            check_safetensors(path, "safetensors weights file")
            return load_file(str(path))
        state = torch.load(path, map_location="cpu", weights_only=True)
    except DataError:
        raise
    except Exception as exc:  # noqa: BLE001 - any unreadable file is the user's data problem
        raise DataError(f"{path} is not a readable torchvision state dict ({str(exc).splitlines()[0][:200]})") from None
    if not isinstance(state, dict):
        raise DataError(f"{path} holds a {type(state).__name__}, not a state dict; save model.state_dict()")
    return state


class TorchvisionVGG19(VGGEncoder):
    """VGG-19's convolutions with ImageNet weights read from ``path``; 2D inputs in [0, 1].

    Taps: ``normalize`` (the ImageNet normalisation), then VGG's ``conv{b}_{i}``,
    ``relu{b}_{i}``, ``pool{b}``. ``in_channels=1`` feeds a grey image as the colour
    network sees a grey photo (R = G = B). ``pool="avg"`` swaps
    max pooling for average pooling, as Gatys et al. recommend for synthesis. The
    embedding head is untrained (train it, or use the taps only).
    """

    def __init__(self, path: str, spatial_dims: int = 2, in_channels: int = 3, embedding_dim: int = 128, pool: str = "max"):
        if spatial_dims != 2 or in_channels not in (1, 3):
            raise ConfigError(
                f"vgg19-torchvision takes 2D images with 1 or 3 channels, got spatial_dims={spatial_dims}, in_channels={in_channels}"
            )
        super().__init__(2, 3, embedding_dim, CHANNELS, CONVS, kernel_size=3, pool=pool)
        self.in_channels = in_channels
        self.body = nn.Sequential(OrderedDict([("normalize", ImageNetNormalize()), *self.body.named_children()]))
        state = read_state(Path(path))
        convs = [m for m in self.body if isinstance(m, nn.Conv2d)]
        missing = [f"features.{i}.{p}" for i in torchvision_indices() for p in ("weight", "bias") if f"features.{i}.{p}" not in state]
        if missing:
            raise ModelMismatchError(f"{path} is not a torchvision VGG-19 state dict: missing {', '.join(missing[:4])}")
        with torch.no_grad():
            for conv, i in zip(convs, torchvision_indices()):
                weight = state[f"features.{i}.weight"]
                if weight.shape != conv.weight.shape:
                    raise ModelMismatchError(
                        f"{path}: features.{i}.weight has shape {tuple(weight.shape)}, VGG-19 needs {tuple(conv.weight.shape)}"
                    )
                conv.weight.copy_(weight)
                conv.bias.copy_(state[f"features.{i}.bias"])
