"""Style transfer: costs against hand computations, the optimisation in 1D/2D/3D, the
memory guard, torchvision-format VGG-19 weights, and the ``stylize`` recipe."""

import json

import numpy as np
import pytest
import torch
from conftest import assert_one_line_error, invoke

from convgen.errors import ConfigError, DataError, ModelMismatchError, PathError
from convgen.nets import VGGEncoder
from convgen.nets.torchvision_vgg import TorchvisionVGG19, torchvision_indices
from convgen.style.costs import GramCost, content_cost, gram, total_variation
from convgen.style.from_config import demo_pair
from convgen.style.transfer import BYTES_PER_ACTIVATION, StyleTransfer, activation_bytes, check_memory

SIZES = {1: 512, 2: 40, 3: 16}


def small_encoder(dims):
    torch.manual_seed(0)
    return VGGEncoder(dims, 1, channels=(8, 16, 32), convs=(1, 1, 1), pool="avg")


@pytest.mark.parametrize("dims", [1, 2, 3])
def test_gram_matches_a_hand_computation(dims):
    a = torch.arange(1.0, 1 + 2 * 2**dims).reshape(1, 2, *([2] * dims))  # 2 channels, 2^dims positions
    x, y = a[0, 0].flatten().tolist(), a[0, 1].flatten().tolist()
    expected = [[sum(p * q for p, q in zip(u, v)) for v in (x, y)] for u in (x, y)]
    assert gram(a)[0].tolist() == expected


@pytest.mark.parametrize("dims", [1, 2, 3])
def test_style_cost_is_gatys_normalisation_generalised(dims):
    gen = torch.Generator().manual_seed(dims)
    shape = (1, 3, *[5] * dims)
    s, g = torch.rand(shape, generator=gen), torch.rand(shape, generator=gen)
    n_c, m = 3, 5**dims
    expected = (gram(s) - gram(g)).pow(2).sum() / (2 * n_c * m) ** 2
    assert torch.allclose(GramCost()(g, s), expected, rtol=1e-5)
    # different sizes: Grams per position, so a tiled copy of the style has the same style
    tiled = s.repeat(1, 1, *[2] * dims)
    assert torch.allclose(GramCost().statistic(tiled), GramCost().statistic(s), atol=1e-5)


def test_content_cost_and_total_variation_closed_forms():
    a, b = torch.zeros(1, 2, 3, 3), torch.ones(1, 2, 3, 3)
    assert content_cost(a, b) == 0.5 * 18
    ramp = torch.arange(4.0).reshape(1, 1, 4).repeat(1, 1, 1)  # 1D: steps of 1
    assert total_variation(ramp) == 1.0
    plane = torch.arange(4.0)[:, None] * 2 + torch.zeros(1, 3)  # 2D: steps of 2 along axis 1, 0 along 2
    assert total_variation(plane[None, None]) == 4.0
    assert total_variation(torch.ones(1, 1, 3, 3, 3)) == 0.0


@pytest.mark.parametrize("dims", [1, 2, 3])
def test_style_distance_falls_by_90_percent_while_content_stays_bounded(dims):
    content, style = demo_pair(dims, SIZES[dims], seed=1)
    transfer = StyleTransfer(small_encoder(dims), ["relu2_1"], ["relu1_1", "relu2_1", "relu3_1"], alpha=1, beta=100)
    result = transfer.run(content, [style], iterations=30, seed=0, show_progress=False)
    assert result.final["style"] <= 0.1 * result.start["style"], (result.start, result.final)
    assert result.final["content"] < 1.0  # normalised: 1 is the cost of a blank output
    assert result.generated.shape == content.shape
    assert result.generated.min() >= 0 and result.generated.max() <= 1  # clamped to the inputs' range
    assert [row["iteration"] for row in result.history] == [10, 20, 30]


def test_runs_are_seedable_and_adam_also_descends():
    content, style = demo_pair(2, 24, seed=0)
    runs = [
        StyleTransfer(small_encoder(2), ["relu2_1"], ["relu1_1", "relu2_1"]).run(content, [style], iterations=5, seed=3, show_progress=False)
        for _ in range(2)
    ]
    assert torch.equal(runs[0].generated, runs[1].generated)
    adam = StyleTransfer(small_encoder(2), [], ["relu1_1", "relu2_1"]).run(
        None, [style], init="noise", optimizer="adam", iterations=40, show_progress=False
    )
    assert adam.final["style"] < 0.5 * adam.start["style"]


def test_style_blend_weights_blend_the_statistics():
    _, style_a = demo_pair(2, 24, seed=0)
    style_b = torch.rand(1, 24, 24, generator=torch.Generator().manual_seed(5))
    g = torch.rand(1, 1, 24, 24)
    only_a = StyleTransfer(small_encoder(2), [], ["relu1_1", "relu2_1"], normalize_layers=False)
    only_a.set_targets(None, [style_a])
    blend = StyleTransfer(small_encoder(2), [], ["relu1_1", "relu2_1"], normalize_layers=False)
    blend.set_targets(None, [style_a, style_b], [1.0, 0.0])
    assert torch.allclose(only_a.loss(g)[0], blend.loss(g)[0])
    half = StyleTransfer(small_encoder(2), [], ["relu1_1"], normalize_layers=False)
    half.set_targets(None, [style_a, style_b], [1.0, 1.0])
    enc = small_encoder(2)
    stats = [GramCost().statistic(enc.taps(s[None], ["relu1_1"])["relu1_1"]) for s in (style_a, style_b)]
    expected = GramCost().distance(enc.taps(g, ["relu1_1"])["relu1_1"], (stats[0] + stats[1]) / 2)
    assert torch.allclose(half.loss(g)[0], expected)


def test_a_cost_without_statistics_is_called_on_activations():
    class Plain:  # the registry contract's minimum: cost(generated, target)
        def __call__(self, generated, target):
            return GramCost()(generated, target)

    _, style = demo_pair(1, 128, seed=0)
    g = torch.rand(1, 1, 128)
    costs = []
    for cost in (Plain(), GramCost()):
        transfer = StyleTransfer(small_encoder(1), [], ["relu1_1", "relu2_1"], style_cost=cost)
        transfer.set_targets(None, [style])
        costs.append(transfer.loss(g)[0])
    assert torch.allclose(*costs)


def test_layer_normalisation_makes_each_layer_start_at_one_for_a_blank_output():
    content, style = demo_pair(2, 24, seed=0)
    transfer = StyleTransfer(small_encoder(2), ["relu2_1"], ["relu1_1", "relu3_1"], alpha=1, beta=1)
    transfer.set_targets(content, [style])
    _, terms = transfer.loss(torch.zeros(1, 1, 24, 24))
    # a blank input still has bias activations, so "about 1" rather than exactly 1
    assert 0.2 < terms["style"] < 5 and 0.2 < terms["content"] < 5


def test_errors_name_the_problem():
    enc = small_encoder(2)
    with pytest.raises(ConfigError, match="unknown layer.*relu9_9"):
        StyleTransfer(enc, [], ["relu9_9"])
    with pytest.raises(ConfigError, match="no layers"):
        StyleTransfer(enc, [], [])
    transfer = StyleTransfer(enc, ["relu1_1"], ["relu1_1"])
    content, style = demo_pair(2, 16, seed=0)
    with pytest.raises(DataError, match="same channels"):
        transfer.run(content, [style.repeat(3, 1, 1)], show_progress=False)
    with pytest.raises(DataError, match="constant"):
        transfer.run(torch.zeros(1, 16, 16), [torch.zeros(1, 16, 16)], show_progress=False)
    with pytest.raises(ConfigError, match="style_weights"):
        transfer.run(content, [style], blend=[1.0, 2.0], show_progress=False)
    with pytest.raises(ConfigError, match="init"):
        transfer.run(content, [style], init="zeros", show_progress=False)


def test_memory_estimate_counts_the_activations_up_to_the_deepest_layer():
    enc = VGGEncoder(2, 1, channels=(4, 8), convs=(1, 1))
    # input 1x16x16; conv1_1, relu1_1: 4x16x16; pool1: 4x8x8; conv2_1 (the deepest asked): 8x8x8
    values = 256 + 2 * 4 * 256 + 4 * 64 + 8 * 64
    assert activation_bytes(enc, (1, 16, 16), ["relu1_1", "conv2_1"]) == BYTES_PER_ACTIVATION * values
    assert all(p.device.type == "cpu" for p in enc.parameters())  # the estimate used a meta copy
    with pytest.raises(ConfigError, match=r"needs about .* GiB.*memory_budget_gb=0.0001.*reduce the input size"):
        check_memory(enc, (1, 512, 512), ["conv2_1"], budget_gb=0.0001)


def torchvision_state(seed=0):
    """A state dict with torchvision's VGG-19 keys and shapes (random values)."""
    gen = torch.Generator().manual_seed(seed)
    state, previous = {}, 3
    widths = [64] * 2 + [128] * 2 + [256] * 4 + [512] * 8
    for i, width in zip(torchvision_indices(), widths):
        state[f"features.{i}.weight"] = torch.randn(width, previous, 3, 3, generator=gen) * 0.05
        state[f"features.{i}.bias"] = torch.randn(width, generator=gen) * 0.01
        previous = width
    state["classifier.0.weight"] = torch.zeros(2, 2)  # ignored
    return state


def test_torchvision_vgg19_weights_load_from_a_local_file(tmp_path):
    state = torchvision_state()
    torch.save(state, tmp_path / "vgg19.pth")
    enc = TorchvisionVGG19(str(tmp_path / "vgg19.pth"))
    assert torch.equal(enc.body.conv1_1.weight, state["features.0.weight"])
    assert torch.equal(enc.body.conv5_4.bias, state["features.34.bias"])
    x = torch.rand(1, 3, 32, 32)
    mean, std = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])
    expected = torch.relu(torch.nn.functional.conv2d((x - mean.view(1, 3, 1, 1)) / std.view(1, 3, 1, 1), state["features.0.weight"], state["features.0.bias"], padding=1))
    assert torch.allclose(enc.taps(x, ["relu1_1"])["relu1_1"], expected, atol=1e-5)
    grey = TorchvisionVGG19(str(tmp_path / "vgg19.pth"), in_channels=1)
    y = torch.rand(1, 1, 32, 32)
    assert torch.allclose(grey.taps(y, ["relu2_1"])["relu2_1"], enc.taps(y.repeat(1, 3, 1, 1), ["relu2_1"])["relu2_1"])
    assert enc.receptive_fields()["pool5"].size == (268, 268)  # the known VGG-19 value


def test_torchvision_vgg19_errors(tmp_path):
    with pytest.raises(PathError, match="not found"):
        TorchvisionVGG19(str(tmp_path / "missing.pth"))
    (tmp_path / "junk.pth").write_bytes(b"not a state dict")
    with pytest.raises(DataError, match="not a readable"):
        TorchvisionVGG19(str(tmp_path / "junk.pth"))
    state = torchvision_state()
    del state["features.34.weight"]
    torch.save(state, tmp_path / "vgg16ish.pth")
    with pytest.raises(ModelMismatchError, match="features.34.weight"):
        TorchvisionVGG19(str(tmp_path / "vgg16ish.pth"))
    with pytest.raises(ConfigError, match="2D images"):
        TorchvisionVGG19(str(tmp_path / "vgg16ish.pth"), spatial_dims=3)


@pytest.mark.parametrize("dims", [1, 2, 3])
def test_stylize_recipe_writes_the_result_and_its_report(tmp_path, dims):
    size = {1: 256, 2: 24, 3: 12}[dims]
    out = tmp_path / "run"
    result = invoke("run", "stylize", f"spatial_dims={dims}", f"size={size}", "iterations=4", "snapshot_every=2",
                    "encoder.channels=[4,8,8,8]", "-o", out)  # fmt: skip
    assert result.exit_code == 0, result.output
    stylized = np.load(out / "stylized.npy")
    assert stylized.shape == (1,) + (size,) * dims and np.isfinite(stylized).all()
    assert (out / "snapshots" / "iter_00002.npy").is_file()
    for name in ("preview.png", "costs.png", "history.json", "summary.json", "config.yaml"):
        assert (out / name).stat().st_size > 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["final"]["style"] < summary["start"]["style"]


def test_stylize_reads_files_through_the_readers_and_blends_styles(tmp_path):
    content, style = demo_pair(2, 24, seed=0)
    np.save(tmp_path / "c.npy", content.numpy())
    np.save(tmp_path / "s.npy", style.numpy())
    np.save(tmp_path / "t.npy", torch.rand(1, 30, 30).numpy())  # a style of another size
    out = tmp_path / "run"
    result = invoke("run", "stylize", f"content={tmp_path / 'c.npy'}", f"style=[{tmp_path / 's.npy'},{tmp_path / 't.npy'}]",
                    "style_weights=[0.7,0.3]", "iterations=3", "encoder.channels=[4,8,8,8]", "output=out/g.npy", "-o", out)  # fmt: skip
    assert result.exit_code == 0, result.output
    assert np.load(out / "out" / "g.npy").shape == (1, 24, 24)


def test_stylize_user_errors_are_one_line(tmp_path):
    content, _ = demo_pair(2, 16, seed=0)
    np.save(tmp_path / "c.npy", content.numpy())
    np.save(tmp_path / "rgb.npy", torch.rand(3, 16, 16).numpy())
    bad = np.ones((1, 16, 16), dtype=np.float32)
    bad[0, 0, 0] = np.nan
    np.save(tmp_path / "nan.npy", bad)
    cases = [
        ([f"content={tmp_path / 'c.npy'}"], "style=PATH is missing"),
        ([f"content={tmp_path / 'c.npy'}", f"style={tmp_path / 'rgb.npy'}"], "same channels"),
        ([f"content={tmp_path / 'c.npy'}", f"style={tmp_path / 'nan.npy'}"], "NaN"),
        (["style_layers=[relu1_1,nope]"], "unknown layer"),
        (["memory_budget_gb=0.000001"], "memory_budget_gb"),
        (["style_cost=nope"], "style_cost.name"),
    ]
    for args, message in cases:
        out = tmp_path / "out"
        assert_one_line_error(invoke("run", "stylize", *args, "iterations=1", "-o", out), contains=[message])
        assert not (out / "stylized.npy").exists()


def test_a_plugin_style_cost_drives_the_recipe(tmp_path):
    from conftest import install_plugin, run_convgen

    install_plugin("convgen-hello", tmp_path / "site")
    out = tmp_path / "run"
    result = run_convgen("run", "stylize", "style_cost=mean-std", "spatial_dims=1", "size=256", "iterations=3",
                         "encoder.channels=[4,8,8,8]", "-o", out, pythonpath=[tmp_path / "site"])  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert np.load(out / "stylized.npy").shape == (1, 256)


def test_gram_gradient_matches_autograd_of_the_plain_product():
    a = torch.rand(2, 3, 5, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(gram, (a,))
    weights = torch.rand(2, 3, 3, dtype=torch.float64)
    (gram(a) * weights).sum().backward()
    plain = a.detach().clone().requires_grad_(True)
    f = plain.flatten(2)
    ((f @ f.transpose(1, 2)) * weights).sum().backward()
    assert torch.allclose(a.grad, plain.grad)


def _options_config(**changes):
    from convgen.recipes.stylize import DEFAULTS

    config = {**DEFAULTS, "encoder": {"name": "random-multiscale", "filters": 4, "dilations": [1, 2], "embedding_dim": 8},
              "content_layers": ["relu"], "style_layers": ["relu"], "iterations": 6, "device": "cpu", "init": "content"}
    return {**config, **changes}


def test_multires_and_luminance_only_keep_the_shape_and_the_contents_colours():
    from convgen.style import color, from_config

    blobs, stripes = demo_pair(2, 32, seed=0)
    content = torch.cat([0.2 + 0.5 * blobs, 0.3 + 0.3 * blobs, 0.6 - 0.3 * blobs])  # coloured blobs, inside [0, 1]
    style = stripes.expand(3, 32, 32).clone()  # a grey texture
    result, summary, _ = from_config.transfer(_options_config(preserve_color="luminance", multires=2), content, [style])
    assert result.generated.shape == (3, 32, 32) and summary["final"]["style"] < summary["start"]["style"]
    assert [row["level"] for row in result.history] == [1] * 1 + [0] * 1  # one chunk of L-BFGS per level
    chroma = lambda x: color.to_yiq(x)[1:]  # noqa: E731
    assert torch.allclose(chroma(result.generated), chroma(content), atol=0.02)
    matched, _, _ = from_config.transfer(_options_config(preserve_color="histogram"), content, [style])
    assert matched.generated.shape == (3, 32, 32) and torch.isfinite(matched.generated).all()
    with pytest.raises(ConfigError, match="preserve_color must be one of"):
        from_config.transfer(_options_config(preserve_color="sepia"), content, [style])
    with pytest.raises(ConfigError, match="multires"):
        from_config.transfer(_options_config(multires=0), content, [style])
    with pytest.raises(ConfigError, match="needs RGB"):
        from_config.transfer(_options_config(preserve_color="luminance"), content[:1], [style[:1]])


def test_lbfgs_recovers_once_from_a_broken_step_and_adam_reports_it():
    content, style = demo_pair(1, 256, seed=0)
    engine = StyleTransfer(small_encoder(1), ["relu2_1"], ["relu1_1", "relu2_1"], beta=100)
    plain, calls = engine.loss, []

    def broken_once(g):  # the 3rd evaluation returns NaN, as L-BFGS does when its curvature breaks down
        calls.append(1)
        total, terms = plain(g)
        return (total * float("nan"), {**terms, "loss": float("nan")}) if len(calls) == 3 else (total, terms)

    engine.loss = broken_once
    result = engine.run(content, [style], iterations=30, show_progress=False)
    assert torch.isfinite(result.generated).all() and result.final["style"] < result.start["style"]
    calls.clear()
    with pytest.raises(DataError, match="the cost became nan"):
        engine.run(content, [style], iterations=5, optimizer="adam", show_progress=False)


@pytest.mark.parametrize("dims", [1, 3])
def test_stylize_with_a_trained_encoder_by_weights_path(tmp_path, dims):
    from convgen.testing import tiny_encoder_weights

    weights = tiny_encoder_weights(tmp_path / "encoder.safetensors", dims)
    out = tmp_path / "run"
    result = invoke("run", "stylize", f"spatial_dims={dims}", f"size={ {1: 256, 3: 12}[dims] }", "iterations=4", f"weights={weights}",
                    "encoder=null", "style_layers=[stem,stage1,stage2]", "content_layers=[stage2]", "-o", out)  # fmt: skip
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["encoder"] == "resnet" and summary["final"]["style"] < summary["start"]["style"]
