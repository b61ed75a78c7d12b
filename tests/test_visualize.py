"""What each layer learns: the streaming top-k search against brute force, receptive-field
crops against hand-computed windows, a hand-made unit, and the ``visualize`` recipe's files,
in 1D, 2D and 3D."""

import copy
import json
from collections import OrderedDict

import pytest
import torch
from safetensors import safe_open
from torch import nn
from torch.utils.data import Dataset

from convgen.errors import ConfigError, DataError
from convgen.nets import ResNetEncoder, VGGEncoder
from convgen.nets.receptive_field import ReceptiveField
from convgen.nets.tapped import TappedEncoder
from convgen.recipes import visualize as recipe
from convgen.visualize.top_patches import crop, default_layers, search, top_patches

CONV = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}
POOL = {1: nn.MaxPool1d, 2: nn.MaxPool2d, 3: nn.MaxPool3d}


class Tensors(Dataset):
    """Items ``(samples[i], labels[i])``: any dtype, no copying."""

    def __init__(self, samples, labels=None):
        self.samples = samples
        self.labels = list(labels) if labels is not None else [i % 3 for i in range(len(samples))]
        self.classes = ["a", "b", "c"]

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, index):
        return self.samples[index], self.labels[index]


class Stack(TappedEncoder):
    """conv k3 p1 -> max-pool 2 -> conv k3 p1: receptive field 8, stride 2, offset 0.5 per axis.

    By hand: conv (3, 1, 0), pool (3 + 1, 2, 0 + 0.5), conv (4 + 2 * 2, 2, 0.5 + (1 - 1) * 2).
    """

    def __init__(self, dims, channels=1):
        body = OrderedDict(conv1=CONV[dims](channels, 2, 3, padding=1), pool1=POOL[dims](2), conv2=CONV[dims](2, 2, 3, padding=1))
        super().__init__(dims, channels, body, nn.Identity())


def _brute_force(encoder, x, layer, units, k, distinct):
    """Every activation of the whole dataset at once, sorted: (values, samples, positions) per unit."""
    with torch.no_grad():
        act = encoder.eval().taps(x, [layer])[layer][:, units]
    spatial = act.shape[2:]
    flat = act.flatten(2)  # (N, U, P)
    n, _, p = flat.shape
    out = []
    for u in range(len(units)):
        if distinct:  # each sample's strongest position (the first, on ties), then the best samples
            first = torch.stack([torch.sort(flat[i, u], descending=True, stable=True).indices[0] for i in range(n)])
            values = flat[torch.arange(n), u, first]
            order = torch.sort(values, descending=True, stable=True).indices[:k]
            samples, positions = order, first[order]
            values = values[order]
        else:  # every (sample, position) pair, sample-major
            everything = flat[:, u].reshape(-1)
            order = torch.sort(everything, descending=True, stable=True).indices[:k]
            values, samples, positions = everything[order], order // p, order % p
        coords = torch.stack(torch.unravel_index(positions, spatial), dim=-1)
        out.append((values, samples, coords))
    return out


SIZES = {1: 24, 2: 12, 3: 6}


@pytest.mark.parametrize("distinct", [True, False])
@pytest.mark.parametrize("dims", [1, 2, 3])
def test_streaming_search_equals_brute_force(dims, distinct):
    # Small integer weights and inputs: every activation is exact, whatever the batch or the
    # summation order, so the two searches must agree exactly, ties (many) included.
    torch.manual_seed(dims)
    encoder = VGGEncoder(dims, in_channels=2, channels=(3, 4), convs=(1, 1))
    with torch.no_grad():
        for p in encoder.parameters():
            p.copy_(torch.randint(-2, 3, p.shape))
    x = torch.randint(-3, 4, (11, 2, *(SIZES[dims],) * dims)).float()
    layers, units, k = ["conv1_1", "relu2_1", "pool2"], [2, 0], 7  # 11 samples in batches of 3: k spans batches
    tops = search(encoder, Tensors(x), layers=layers, units=units, top_k=k, distinct=distinct, batch_size=3)
    assert list(tops) == layers
    for layer in layers:
        top = tops[layer]
        assert top.units == units and top.activation.shape == (2, k) and top.position.shape == (2, k, dims)
        for u, (values, samples, positions) in enumerate(_brute_force(encoder, x, layer, units, k, distinct)):
            assert top.activation[u].tolist() == values.tolist(), (layer, u)
            assert top.sample[u].tolist() == samples.tolist(), (layer, u)
            assert top.position[u].tolist() == positions.tolist(), (layer, u)
        if distinct:
            assert all(len(set(row)) == k for row in top.sample.tolist())
    # The batch size changes nothing, ties included (relu zeros).
    again = search(encoder, Tensors(x), layers=layers, units=units, top_k=k, distinct=distinct, batch_size=11)
    for layer in layers:
        assert torch.equal(again[layer].sample, tops[layer].sample) and torch.equal(again[layer].position, tops[layer].position)


def test_fewer_candidates_than_k_and_units_as_a_count():
    encoder = VGGEncoder(1, in_channels=1, channels=(3, 4), convs=(1, 1))
    tops = search(encoder, Tensors(torch.randn(4, 1, 16)), layers=["conv1_1"], units=8, top_k=9, batch_size=3)
    assert tops["conv1_1"].units == [0, 1, 2]  # 8 asked, the layer has 3
    assert tops["conv1_1"].activation.shape == (3, 4)  # one hit per sample, 4 samples
    tops = search(encoder, Tensors(torch.randn(2, 1, 4)), layers="pool2", units=1, top_k=9, distinct=False)
    assert tops["pool2"].activation.shape == (1, 2)  # 2 samples x 1 position


def test_default_layers_are_the_deepest_tap_per_stride():
    vgg = VGGEncoder(2, channels=(4, 4, 8, 8, 8))
    assert default_layers(vgg) == ["relu1_2", "relu2_2", "relu3_4", "relu4_4", "relu5_4", "pool5"]
    resnet = ResNetEncoder(3, channels=(4, 4, 4, 4))  # the stem and stage1 share stride 2
    assert default_layers(resnet) == ["stage1", "stage2", "stage3", "stage4"]


@pytest.mark.parametrize("dims", [1, 2, 3])
def test_crop_follows_the_hand_computed_receptive_field(dims):
    encoder = Stack(dims, channels=2)
    field = encoder.receptive_fields()["conv2"]
    assert field == ReceptiveField((8,) * dims, (2,) * dims, (0.5,) * dims)
    size = 10  # output 5 per axis; unit i sees input [2i - 3, 2i + 5)
    x = torch.randn(2, *(size,) * dims)

    inside = (2,) * dims  # window [1, 9): wholly inside
    assert field.window(inside) == ((1, 9),) * dims
    assert torch.equal(crop(x, field, inside), x[(slice(None),) + (slice(1, 9),) * dims])

    edge = (0,) + (4,) * (dims - 1)  # axis 0: [-3, 5), 3 samples off the edge; others: [5, 13), 3 off the far edge
    patch = crop(x, field, edge)
    assert patch.shape == (2,) + (8,) * dims
    expected = torch.full_like(patch, float("nan"))
    expected[(slice(None), slice(3, 8)) + (slice(0, 5),) * (dims - 1)] = x[(slice(None), slice(0, 5)) + (slice(5, 10),) * (dims - 1)]
    torch.testing.assert_close(patch, expected, equal_nan=True)


def test_a_field_wider_than_the_input_is_clipped_to_the_input():
    field = Stack(1).receptive_fields()["conv2"]
    x = torch.arange(6.0)[None]  # 6 samples, field 8: unit 0 sees [-3, 5), unit 2 [1, 9)
    torch.testing.assert_close(crop(x, field, (0,)), torch.tensor([[0.0, 1, 2, 3, 4, float("nan")]]), equal_nan=True)
    torch.testing.assert_close(crop(x, field, (2,)), torch.tensor([[float("nan"), 1, 2, 3, 4, 5]]), equal_nan=True)


@pytest.mark.parametrize("dims", [1, 2, 3])
def test_top_patches_are_the_crops_of_their_hits(dims):
    torch.manual_seed(0)
    encoder = Stack(dims)
    x = torch.randn(5, 1, *(10,) * dims)
    tops = top_patches(encoder, Tensors(x), layers=["conv2"], units=[1], top_k=4, distinct=False, batch_size=2)
    top = tops["conv2"]
    assert top.patches.shape == (1, 4, 1) + (8,) * dims
    for j in range(4):
        sample, position = int(top.sample[0, j]), top.position[0, j].tolist()
        torch.testing.assert_close(top.patches[0, j], crop(x[sample], top.field, position), equal_nan=True)
        assert top.window[0, j].tolist() == [list(w) for w in top.field.window(position)]
        assert top.labels[0][j] == sample % 3


class Spikes(TappedEncoder):
    """One conv layer: unit 0 copies the input (delta kernel), unit 1 negates it."""

    def __init__(self, dims):
        conv = CONV[dims](1, 2, 3, padding=1, bias=False)
        with torch.no_grad():
            conv.weight.zero_()
            centre = (slice(None), 0) + (1,) * dims
            conv.weight[centre] = torch.tensor([1.0, -1.0])
        super().__init__(dims, 1, OrderedDict(conv=conv), nn.Identity())


@pytest.mark.parametrize("dims", [1, 2, 3])
def test_a_hand_made_unit_finds_the_expected_sample_and_position(dims):
    x = torch.zeros(6, 1, *(8,) * dims)
    x[(3, 0) + (2,) * dims] = 5.0
    x[(1, 0) + (4,) * dims] = 3.0
    x[(1, 0) + (6,) * dims] = 4.0  # the same sample, stronger: distinct mode keeps only this one
    x[(5, 0) + (0,) * dims] = -7.0
    tops = top_patches(Spikes(dims), Tensors(x), layers=["conv"], units=2, top_k=3, batch_size=4)
    top = tops["conv"]
    assert top.sample[0, :2].tolist() == [3, 1] and top.activation[0, :2].tolist() == [5.0, 4.0]
    assert top.position[0, :2].tolist() == [[2] * dims, [6] * dims]
    assert top.sample[1, 0] == 5 and top.activation[1, 0] == 7.0 and top.position[1, 0].tolist() == [0] * dims
    # Its patch: 3 wide, the spike in the centre, the row before the border NaN.
    patch = top.patches[1, 0, 0]
    assert patch[(1,) * dims] == -7.0
    assert patch[(0,) + (1,) * (dims - 1)].isnan() and not patch[(slice(1, 3),) * dims].isnan().any()

    everywhere = top_patches(Spikes(dims), Tensors(x), layers=["conv"], units=[0], top_k=3, distinct=False, batch_size=4)
    assert everywhere["conv"].sample[0].tolist() == [3, 1, 1]
    assert everywhere["conv"].position[0].tolist() == [[2] * dims, [6] * dims, [4] * dims]


CHANNELS = {1: 2, 2: 3, 3: 1}  # overlaid traces, RGB, grey slices


def _config(dims, **overrides):
    config = copy.deepcopy(recipe.DEFAULTS)
    config.update(
        spatial_dims=dims, device="cpu", units=3, top_k=4, batch_size=4,
        dataset={"name": "synthetic", "size": {1: 24, 2: 12, 3: 8}[dims], "channels": CHANNELS[dims],
                 "identities": 2, "samples_per_identity": 3, "motif_size": 3},
        encoder={"name": "vgg", "channels": [4, 4], "convs": [1, 1]},
    )  # fmt: skip
    config.update(overrides)
    return config


@pytest.mark.parametrize("dims", [1, 2, 3])
def test_the_recipe_writes_figures_hits_and_patches(dims, tmp_path):
    from convgen.registry import build

    torch.manual_seed(0)
    config = _config(dims)
    result = recipe.run(config, tmp_path)
    summary = result.summary
    assert result.files["top_patches"] == tmp_path / "top_patches.json" and result.report["top_k"] == config["top_k"]
    layers = ["relu1_1", "relu2_1", "pool2"]  # the deepest tap at strides 1, 2, 4
    assert summary["layers"] == layers and summary["samples"] == 6
    for name in [f"layers/{layer}.png" for layer in layers] + ["summary.png"]:
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
        assert name in summary["files"]
    assert not list(tmp_path.rglob(".*.tmp"))

    report = json.loads((tmp_path / "top_patches.json").read_text())
    dataset = build("dataset", config["dataset"], spatial_dims=dims)
    with safe_open(str(tmp_path / "patches.safetensors"), framework="pt") as handle:
        patches = {key: handle.get_tensor(key) for key in handle.keys()}
    assert sorted(patches) == sorted(layers)
    for layer in layers:
        entry = report["layers"][layer]
        assert [u["unit"] for u in entry["units"]] == [0, 1, 2]
        assert patches[layer].shape == (3, 4, CHANNELS[dims], *entry["patch_size"])
        for u, unit in enumerate(entry["units"]):
            activations = [hit["activation"] for hit in unit["hits"]]
            assert activations == sorted(activations, reverse=True)
            assert len({hit["sample"] for hit in unit["hits"]}) == 4  # distinct samples
            for j, hit in enumerate(unit["hits"]):
                x, label = dataset[hit["sample"]]
                assert hit["label"] == label and hit["class"] == dataset.classes[label]
                # The patch's frame is the window, or the whole input where the field is wider.
                frame = [(w[0], w[1]) if w[1] - w[0] < n else (0, n) for w, n in zip(hit["window"], x.shape[1:])]
                inside = tuple(slice(a - f[0], b - f[0]) for (a, b), f in zip(hit["clipped"], frame))
                patch = patches[layer][u, j]
                source = x[(slice(None),) + tuple(slice(a, b) for a, b in hit["clipped"])]
                assert torch.equal(patch[(slice(None),) + inside], source)
                assert int(patch.isnan().sum()) == patch.numel() - source.numel()


def test_bad_layers_and_units_are_config_errors(tmp_path):
    encoder = VGGEncoder(2, in_channels=1, channels=(3, 4), convs=(1, 1))
    data = Tensors(torch.randn(3, 1, 8, 8))
    with pytest.raises(ConfigError, match=r"unknown layer\(s\) 'relu9_9'; VGGEncoder has: conv1_1, relu1_1, pool1"):
        search(encoder, data, layers=["relu1_1", "relu9_9"])
    with pytest.raises(ConfigError, match=r"unit\(s\) \[3\] out of range for layer 'conv1_1', which has 3 channels \(units 0..2\)"):
        search(encoder, data, layers=["conv1_1", "conv2_1"], units=[0, 3])
    with pytest.raises(ConfigError, match="units must be"):
        search(encoder, data, units=0)
    with pytest.raises(ConfigError, match="top_k must be a positive integer"):
        search(encoder, data, top_k=0)
    with pytest.raises(DataError, match="empty"):
        search(encoder, Tensors(torch.zeros(0, 1, 8, 8)))
    with pytest.raises(ConfigError, match="unknown layer.*'stage1'.*relu2_1"):
        recipe.run(_config(2, layers=["stage1"]), tmp_path)
    assert not (tmp_path / "top_patches.json").exists()


def test_visualize_from_the_cli_with_chosen_units(tmp_path):
    from conftest import assert_one_line_error, invoke

    out = tmp_path / "run"
    result = invoke("run", "visualize", "layers=[relu1_1,relu2_1]", "units=[0,3]", "top_k=4", "-o", out)
    assert result.exit_code == 0, result.output
    report = json.loads((out / "top_patches.json").read_text())
    assert [u["unit"] for u in report["layers"]["relu2_1"]["units"]] == [0, 3]
    assert (out / "layers" / "relu1_1.png").stat().st_size > 0 and (out / "summary.png").is_file()
    assert_one_line_error(invoke("run", "visualize", "units=[99]", "-o", tmp_path / "bad"), contains=["out of range"])
