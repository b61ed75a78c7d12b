"""dlib's public-domain face-recognition ResNet, read from its own file into a pure-torch encoder.

dlib ships ``dlib_face_recognition_resnet_model_v1.dat`` (a 29-layer ResNet mapping a
150×150 aligned face chip to a 128-d descriptor; 99.38% on LFW). The PyPI package
``face_recognition_models`` carries the file. This module reads dlib's ``serialize``
stream itself, so neither dlib nor pickle is needed at run time, and rebuilds the
network (``anet_type`` in dlib's ``dnn_face_recognition_ex.cpp``) from torch layers
whose outputs match dlib's to float precision.

The stream format (dlib/serialize.h): integers are a control byte (low nibble: byte
count, 0x80: negative) followed by little-endian bytes; floats are an int64 mantissa and
an int16 exponent; strings are a length then bytes; bools are the characters '0'/'1';
tensors are a version, four dimensions and raw little-endian float32s. A network is
written as the nest of ``add_layer`` versions top-down, then the input layer, then each
layer's record bottom-up (tags and skips write nothing but their version).
"""

from __future__ import annotations

import importlib.util
import os
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from convgen.plugin_api import ConfigError, DataError, TappedEncoder

__all__ = [
    "INSTALL_HINT",
    "DlibEarly",
    "DlibResNet",
    "DlibStream",
    "chip_to_tensor",
    "load_dlib_resnet",
    "model_file",
    "read_dlib_resnet",
]

INSTALL_HINT = "install the optional extra: pip install 'convgen-faces[dlib]'"
RESNET_FILE = "dlib_face_recognition_resnet_model_v1.dat"
#: The input pipeline dlib's encoder was trained with (`convgen_faces.pipelines`): aligned 150 × 150 RGB chips.
PIPELINE = {"name": "faces", "size": [150, 150], "channels": 3, "detect": True, "margin": 0.2, "align": "dlib", "if_no_face": "whole"}

# The residual stages of dlib's anet_type, input side first: (filters, one flag per
# residual block saying whether it halves the resolution). dlib names them alevel4..alevel0.
STAGES: tuple[tuple[int, tuple[bool, ...]], ...] = (
    (32, (False, False, False)),
    (64, (True, False, False, False)),
    (128, (True, False, False)),
    (256, (True, False, False)),
    (256, (True,)),
)


# ----------------------------------------------------------------------------- locating files


def model_file(name: str) -> Path:
    """Path of one of the ``.dat`` files in the installed ``face_recognition_models`` package.

    The package is located without importing it: its ``__init__`` imports
    ``pkg_resources``, which recent setuptools no longer provides.
    """
    try:
        spec = importlib.util.find_spec("face_recognition_models")
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(f"dlib's model files come from the face_recognition_models package; {INSTALL_HINT}")
    path = Path(next(iter(spec.submodule_search_locations))) / "models" / name
    if not path.is_file():
        raise ConfigError(
            f"{path} is missing from the installed face_recognition_models package; reinstall it ({INSTALL_HINT})"
        )
    return path


# ----------------------------------------------------------------------------- the stream reader


class _Corrupt(Exception):
    """Raised inside the readers; turned into one DataError naming the file."""


class DlibStream:
    """Reads the primitives of a dlib ``serialize`` stream from bytes in memory."""

    def __init__(self, data: bytes):
        self.data = data
        self.pos = 0

    def _need(self, n: int) -> None:
        if self.pos + n > len(self.data):
            raise _Corrupt(f"truncated at byte {self.pos} of {len(self.data)}")

    def int(self, signed: bool = True) -> int:
        data, pos = self.data, self.pos
        if pos >= len(data):
            raise _Corrupt(f"truncated at byte {pos} of {len(data)}")
        control = data[pos]
        size = control & 0x0F
        if size == 0 or size > 8:
            raise _Corrupt(f"bad integer control byte 0x{control:02x} at byte {pos}")
        if pos + 1 + size > len(data):
            raise _Corrupt(f"truncated at byte {pos} of {len(data)}")
        value = int.from_bytes(data[pos + 1 : pos + 1 + size], "little")
        self.pos = pos + 1 + size
        return -value if (control & 0x80 and signed) else value

    def float(self) -> float:
        mantissa = self.int()
        exponent = self.int()
        if exponent >= 32000:  # dlib's codes for +inf, -inf and NaN
            return {32000: float("inf"), 32001: float("-inf")}.get(exponent, float("nan"))
        return float(np.ldexp(np.float64(mantissa), exponent))

    def str(self) -> str:
        size = self.int(signed=False)
        self._need(size)
        raw = self.data[self.pos : self.pos + size]
        self.pos += size
        try:
            return raw.decode("ascii")
        except UnicodeDecodeError:
            raise _Corrupt(f"unreadable string at byte {self.pos - size}") from None

    def bool(self) -> bool:
        self._need(1)
        ch = self.data[self.pos]
        self.pos += 1
        if ch not in (ord("0"), ord("1")):
            raise _Corrupt(f"bad bool at byte {self.pos - 1}")
        return ch == ord("1")

    def expect_version(self, allowed, what: str) -> int:
        version = self.int()
        if version not in allowed:
            raise _Corrupt(f"unexpected {what} version {version}")
        return version

    def tensor(self) -> np.ndarray:
        """A dlib tensor as a float32 array of shape (num_samples, k, nr, nc)."""
        self.expect_version((2,), "tensor")
        shape = tuple(self.int() for _ in range(4))
        if any(d < 0 for d in shape):
            raise _Corrupt("negative tensor dimension")
        count = int(np.prod(shape, dtype=np.int64))
        self._need(4 * count)
        array = np.frombuffer(self.data, dtype="<f4", count=count, offset=self.pos).astype(np.float32).reshape(shape)
        self.pos += 4 * count
        return array

    def alias(self) -> tuple[int, int, int, int]:
        self.expect_version((1,), "alias_tensor")
        return tuple(self.int() for _ in range(4))  # type: ignore[return-value]


def read_file_bytes(path: Path, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: no such {what} file") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read the {what} file ({exc.strerror or exc})") from None


# ----------------------------------------------------------------------------- the ResNet file


@dataclass
class LayerRecord:
    """One layer's details from the file: its dlib name and what it stores."""

    name: str
    values: dict = field(default_factory=dict)


def _multipliers(s: DlibStream, n: int = 4) -> None:
    for _ in range(n):
        s.float()


def _read_details(s: DlibStream) -> LayerRecord:
    name = s.str()
    rec = LayerRecord(name)
    v = rec.values
    if name in ("con_4", "con_5", "con_6"):
        params = s.tensor().reshape(-1)
        v["num_filters"] = s.int()
        v["kernel"] = (s.int(), s.int())
        v["stride"] = (s.int(), s.int())
        v["padding"] = (s.int(), s.int())
        filters, biases = s.alias(), s.alias()
        _multipliers(s)
        use_bias = s.bool() if name in ("con_5", "con_6") else True
        if name == "con_6" and s.bool():
            raise _Corrupt("con_ layers with a fused relu are not supported")
        n_filters = int(np.prod(filters))
        n_bias = int(np.prod(biases)) if use_bias else 0
        if params.size != n_filters + n_bias:
            raise _Corrupt(f"{name} holds {params.size} parameters, expected {n_filters + n_bias}")
        v["weight"] = params[:n_filters].reshape(filters)
        v["bias"] = params[n_filters:].copy() if use_bias else None
    elif name in ("affine_", "affine_2"):
        params = s.tensor().reshape(-1)
        gamma, beta = s.alias(), s.alias()
        mode = s.int()
        disabled = s.bool() if name == "affine_2" else False
        n_gamma, n_beta = int(np.prod(gamma)), int(np.prod(beta))
        if params.size != n_gamma + n_beta or mode != 0 or disabled:
            raise _Corrupt(f"unsupported {name} layer (mode {mode}, {params.size} parameters)")
        v["scale"], v["shift"] = params[:n_gamma].copy(), params[n_gamma:].copy()
    elif name in ("relu_", "relu_2"):
        if name == "relu_2" and s.bool():
            raise _Corrupt("disabled relu layers are not supported")
    elif name in ("max_pool_2", "avg_pool_2"):
        v["kernel"] = (s.int(), s.int())
        v["stride"] = (s.int(), s.int())
        v["padding"] = (s.int(), s.int())
    elif name == "add_prev_":
        pass
    elif name in ("fc_2", "fc_3"):
        v["num_outputs"], v["num_inputs"] = s.int(), s.int()
        params = s.tensor().reshape(-1)
        weights, biases = s.alias(), s.alias()
        bias_mode = s.int()
        _multipliers(s)
        use_bias = s.bool() if name == "fc_3" else True
        n_w = int(np.prod(weights))
        has_bias = bias_mode == 0 and use_bias
        n_b = int(np.prod(biases)) if has_bias else 0
        if params.size != n_w + n_b or n_w != v["num_inputs"] * v["num_outputs"]:
            raise _Corrupt(f"{name} holds {params.size} parameters, expected {n_w + n_b}")
        # dlib computes output = input @ W with W of shape (num_inputs, num_outputs).
        v["weight"] = params[:n_w].reshape(v["num_inputs"], v["num_outputs"]).T.copy()
        v["bias"] = params[n_w:].copy() if has_bias else None
    else:
        raise _Corrupt(f"unsupported layer type {name!r}")
    return rec


def _skip_layer_state(s: DlibStream, tensors: int = 3) -> None:
    """The bookkeeping ``add_layer`` writes after a layer's details (flags, cached tensors)."""
    for _ in range(3):
        s.bool()
    for _ in range(tensors):
        s.tensor()


@dataclass
class DlibResNetWeights:
    """What the ResNet file holds: the input means and the layers, input side first."""

    means: tuple[float, float, float]
    input_size: tuple[int, int]
    layers: list[LayerRecord]


def _parse_resnet(data: bytes) -> DlibResNetWeights:
    s = DlibStream(data)
    s.expect_version((1,), "add_loss_layer")
    loss = s.str()
    if loss == "loss_metric_2":
        s.float(), s.float()
    elif loss != "loss_metric_":
        raise _Corrupt(f"expected a metric-learning network, found a {loss!r} loss")
    # The nest of add_layer (2) / tag and skip (1) versions, ending at the layer over the input (3).
    nest = []
    while True:
        version = s.int()
        if version == 3:
            break
        if version not in (1, 2) or len(nest) > 10_000:
            raise _Corrupt(f"unexpected layer version {version}")
        nest.append(version)
    kind = s.str()
    if kind != "input_rgb_image_sized":
        raise _Corrupt(f"expected an RGB image input layer, found {kind!r}")
    means = (s.float(), s.float(), s.float())
    size = (s.int(signed=False), s.int(signed=False))
    layers = [_read_details(s)]
    _skip_layer_state(s, tensors=3)
    s.int(signed=False)  # the input layer's sample expansion factor
    for _ in range(nest.count(2)):
        layers.append(_read_details(s))
        _skip_layer_state(s, tensors=3)
    if s.pos != len(data):
        raise _Corrupt(f"{len(data) - s.pos} unexpected trailing bytes")
    return DlibResNetWeights(means, size, layers)  # type: ignore[arg-type]


_CACHE: dict[tuple, object] = {}
_CACHE_LOCK = threading.Lock()


def load_cached(path: Path, what: str, parse):
    """``parse(bytes)`` of a dlib file, parsed once per process (keyed by path, size and mtime).

    ``parse`` raises `_Corrupt` for a damaged stream, reported as a one-line `DataError`.
    """
    try:
        stat = os.stat(path)
        key = (what, str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns)
    except OSError:
        key = None
    with _CACHE_LOCK:
        if key in _CACHE:
            return _CACHE[key]
    data = read_file_bytes(path, what)
    try:
        parsed = parse(data)
    except _Corrupt as exc:
        raise DataError(f"{path} is not a readable {what} ({exc})") from None
    if key is not None:
        with _CACHE_LOCK:
            _CACHE[key] = parsed
    return parsed


def read_dlib_resnet(path=None) -> DlibResNetWeights:
    """Parse dlib's ResNet file (default: the installed package's), cached per file in-process."""
    path = Path(path) if path is not None else model_file(RESNET_FILE)
    return load_cached(path, "dlib face-recognition model", _parse_resnet)


# ----------------------------------------------------------------------------- torch modules


class DlibInput(nn.Module):
    """dlib's ``input_rgb_image_sized``: RGB in [0, 1] → (255·x − mean) / 256 per channel."""

    def __init__(self, means=(122.782, 117.001, 104.298)):
        super().__init__()
        self.register_buffer("mean", torch.tensor(means, dtype=torch.float32).view(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x * 255.0 - self.mean) / 256.0


class Affine(nn.Module):
    """dlib's ``affine_`` layer (batch norm folded for inference): ``scale · x + shift`` per channel."""

    def __init__(self, channels: int):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(channels))
        self.shift = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.addcmul(self.shift.view(1, -1, 1, 1), x, self.scale.view(1, -1, 1, 1))


def _add_padded(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """dlib's ``add_prev``: tensors of different sizes are zero-padded at the end to the larger."""
    if a.shape == b.shape:
        return a + b
    target = [max(p, q) for p, q in zip(a.shape, b.shape, strict=True)]

    def grow(t: torch.Tensor) -> torch.Tensor:
        return F.pad(t, (0, target[3] - t.shape[3], 0, target[2] - t.shape[2], 0, target[1] - t.shape[1]))

    return grow(a) + grow(b)


class DlibResidual(nn.Module):
    """dlib's ``ares`` / ``ares_down`` block: conv-affine-relu-conv-affine, plus the shortcut, then relu.

    The down-sampling block strides its first convolution by 2 (no padding) and averages the
    shortcut 2×2; where the two disagree in size or channels dlib pads the smaller with
    zeros, and so does this block.
    """

    def __init__(self, in_channels: int, channels: int, down: bool):
        super().__init__()
        stride = 2 if down else 1
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride=stride, padding=0 if down else 1)
        self.affine1 = Affine(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)
        self.affine2 = Affine(channels)
        self.shortcut = nn.AvgPool2d(2, 2) if down else nn.Identity()

    def receptive_path(self) -> list[nn.Module]:
        return [self.conv1, self.conv2]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.affine2(self.conv2(F.relu(self.affine1(self.conv1(x)))))
        return F.relu(_add_padded(self.shortcut(x), y))


class DlibResNet(TappedEncoder):
    """dlib's face-recognition ResNet (``dlib_face_recognition_resnet_model_v1``) in torch.

    Input: float RGB in [0, 1], shape (N, 3, 150, 150): a face chip aligned the way
    ``dlib.get_face_chip(img, shape, size=150, padding=0.25)`` does it (see
    `convgen_faces.alignment`). Other sizes run, but the weights were trained on 150×150.
    Output: dlib's raw 128-d descriptor (not normalised; dlib compares descriptors by
    Euclidean distance < 0.6; convgen's Embedder normalises separately).

    Taps: ``stem`` (input normalisation, 7×7/2 conv, affine, relu: 32×72×72),
    ``pool`` (3×3/2 max pool: 32×35×35), ``stage1`` (3 blocks, 32×35×35),
    ``stage2`` (4 blocks, 64×17×17), ``stage3`` (3 blocks, 128×8×8), ``stage4``
    (3 blocks, 256×4×4), ``stage5`` (1 block, 256×2×2); dlib calls the stages
    alevel4 … alevel0. Head: global average pool, fc without bias to 128.

    Building loads the weights from ``path`` (default: the installed
    ``face_recognition_models`` package's file; parsed once per process).
    """

    pipeline = PIPELINE  # weights that ship with the code carry their input pipeline too

    def __init__(self, spatial_dims: int = 2, in_channels: int = 3, path=None):
        if spatial_dims != 2 or in_channels != 3 or isinstance(spatial_dims, bool) or isinstance(in_channels, bool):
            raise ConfigError(
                f"dlib-resnet is a 2D RGB model: it needs spatial_dims=2 and in_channels=3, "
                f"got spatial_dims={spatial_dims!r}, in_channels={in_channels!r}"
            )
        source = Path(path) if path is not None else model_file(RESNET_FILE)
        weights = read_dlib_resnet(source)
        body: OrderedDict[str, nn.Module] = OrderedDict()
        body["stem"] = nn.Sequential(
            OrderedDict(
                input=DlibInput(weights.means),
                conv=nn.Conv2d(3, 32, 7, stride=2, padding=0),
                affine=Affine(32),
                relu=nn.ReLU(),
            )
        )
        body["pool"] = nn.MaxPool2d(3, stride=2, padding=0)
        previous = 32
        for i, (channels, downs) in enumerate(STAGES, start=1):
            blocks = []
            for down in downs:
                blocks.append(DlibResidual(previous, channels, down))
                previous = channels
            body[f"stage{i}"] = nn.Sequential(*blocks)
        head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(1), nn.Linear(previous, 128, bias=False))
        super().__init__(2, 3, body, head)
        self.source = str(source)
        try:
            self._load(weights.layers)
        except _Corrupt as exc:
            raise DataError(f"{source} does not hold dlib's face-recognition ResNet ({exc})") from None
        self.eval()

    def _load(self, layers: list[LayerRecord]) -> None:
        """Copy the file's layers (input side first) into the modules, checking every shape."""
        records = iter(layers)

        def take(*names: str) -> LayerRecord:
            rec = next(records, None)
            if rec is None or rec.name not in names:
                raise _Corrupt(f"expected a {names[0]} layer, found {rec.name if rec else 'the end of the network'}")
            return rec

        def conv(module: nn.Conv2d) -> None:
            rec = take("con_4", "con_5", "con_6").values
            expected = (tuple(module.weight.shape), module.stride, module.padding)
            found = (rec["weight"].shape, rec["stride"], rec["padding"])
            if found != expected or rec["bias"] is None:
                raise _Corrupt(f"convolution {found} where {expected} was expected")
            with torch.no_grad():
                module.weight.copy_(torch.from_numpy(rec["weight"]))
                module.bias.copy_(torch.from_numpy(rec["bias"]))

        def affine(module: Affine) -> None:
            rec = take("affine_", "affine_2").values
            if rec["scale"].shape != tuple(module.scale.shape):
                raise _Corrupt(
                    f"affine layer of {rec['scale'].size} channels where {module.scale.numel()} were expected"
                )
            with torch.no_grad():
                module.scale.copy_(torch.from_numpy(rec["scale"]))
                module.shift.copy_(torch.from_numpy(rec["shift"]))

        def pool(name: str, kernel: int, stride: int) -> None:
            rec = take(name).values
            if (rec["kernel"], rec["stride"], rec["padding"]) != ((kernel,) * 2, (stride,) * 2, (0, 0)):
                raise _Corrupt(f"{name} {rec} where {kernel}x{kernel}/{stride} was expected")

        stem = self.body.stem
        conv(stem.conv)
        affine(stem.affine)
        take("relu_", "relu_2")
        pool("max_pool_2", 3, 2)
        for stage in list(self.body.children())[2:]:
            for block in stage:
                conv(block.conv1)
                affine(block.affine1)
                take("relu_", "relu_2")
                conv(block.conv2)
                affine(block.affine2)
                if isinstance(block.shortcut, nn.AvgPool2d):
                    pool("avg_pool_2", 2, 2)
                take("add_prev_")
                take("relu_", "relu_2")
        pool("avg_pool_2", 0, 1)  # avg_pool_everything
        fc = take("fc_2", "fc_3").values
        linear = self.head[2]
        if fc["weight"].shape != tuple(linear.weight.shape) or fc["bias"] is not None:
            raise _Corrupt(f"fc layer {fc['weight'].shape} where a bias-free {tuple(linear.weight.shape)} was expected")
        with torch.no_grad():
            linear.weight.copy_(torch.from_numpy(fc["weight"]))
        extra = next(records, None)
        if extra is not None:
            raise _Corrupt(f"unexpected extra layer {extra.name}")


def load_dlib_resnet(path=None) -> DlibResNet:
    """dlib's face-recognition encoder in eval mode (default: the installed package's weights)."""
    return DlibResNet(2, 3, path=path)


class DlibEarly(TappedEncoder):
    """The first ``stages`` residual stages of dlib's face ResNet: pretrained 2D features for style transfer.

    A network trained on faces still learns general edge, colour and texture detectors in
    its early stages, which is what Gram-matrix style costs read (ImageNet VGG cannot be
    downloaded here). Taps: ``stem`` (7×7/2 conv, 32 channels), ``pool``, ``stage1`` (32),
    ``stage2`` (64, stride 8), ``stage3`` (128, stride 16). Input: RGB in [0, 1], any size
    of at least about 40 pixels. The head (global pooling and a random linear map) only
    keeps the encoder contract; the stages are dlib's weights.
    """

    def __init__(self, spatial_dims: int = 2, in_channels: int = 3, embedding_dim: int = 128, stages: int = 2, path=None):
        if not isinstance(stages, int) or isinstance(stages, bool) or not 1 <= stages <= 3:
            raise ConfigError(f"dlib-early stages must be 1, 2 or 3, got {stages!r}")
        full = DlibResNet(spatial_dims, in_channels, path=path)
        names = ["stem", "pool", *[f"stage{i}" for i in range(1, stages + 1)]]
        body = OrderedDict((name, full.body._modules[name]) for name in names)
        width = STAGES[stages - 1][0]
        head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(1), nn.Linear(width, embedding_dim))
        super().__init__(2, 3, body, head)
        self.source = full.source
        self.eval()


def chip_to_tensor(chips) -> torch.Tensor:
    """uint8 RGB chip(s) ``(H, W, 3)`` or ``(N, H, W, 3)`` → float tensor ``(N, 3, H, W)`` in [0, 1]."""
    array = np.asarray(chips)
    if array.ndim == 3:
        array = array[None]
    if array.ndim != 4 or array.shape[-1] != 3 or array.dtype != np.uint8:
        raise DataError(
            f"expected uint8 RGB chip(s) of shape (H, W, 3) or (N, H, W, 3), got {array.dtype} {array.shape}"
        )
    return torch.from_numpy(np.ascontiguousarray(array.transpose(0, 3, 1, 2))).float() / 255.0
