"""Tile-by-tile style transfer within a memory budget (`convgen.style.tiled`), in 1D and 2D:
tiles cover the input and blend without seams, statistics computed tile by tile equal the
whole input's, the memory estimate grows with the input, a too-small budget is a one-line
error, a tiled transfer lands close to the untiled one, and `convgen run stylize tile=...`
uses it from the command line."""

import json

import numpy as np
import pytest
import torch

from convgen.errors import ConfigError
from convgen.nets import VGGEncoder
from convgen.style import tiled
from convgen.style.costs import GramCost, StatisticCost, StyleCost, content_cost
from convgen.style.transfer import StyleTransfer

LAYERS = ["relu1_1", "relu2_1"]


def small_encoder(dims):
    torch.manual_seed(0)
    return VGGEncoder(dims, 1, channels=(8, 16, 32), convs=(1, 1, 1), pool="avg")


def texture(dims, n, seed):
    """A smooth periodic pattern plus noise, in [0, 1]."""
    gen = torch.Generator().manual_seed(seed)
    grid = torch.meshgrid(*[torch.arange(n, dtype=torch.float32)] * dims, indexing="ij")
    wave = sum(torch.sin(g * (0.7 + 0.3 * seed)) for g in grid) / dims
    return (0.5 + 0.35 * wave + 0.15 * torch.rand(*[n] * dims, generator=gen)).clamp(0, 1)[None]


def test_gram_cost_is_a_statistic_cost_and_a_plain_callable_is_not():
    assert isinstance(GramCost(), StatisticCost) and isinstance(content_cost, StyleCost)
    assert not isinstance(content_cost, StatisticCost)


@pytest.mark.parametrize("shape", [(40,), (40, 33), (40, 33, 16)])
def test_tiles_cover_the_input_and_blend_without_seams(shape):
    boxes = tiled.tiles(shape, 16, 4)
    covered = torch.zeros(shape)
    for box in boxes:
        covered[box] += 1
    assert covered.min() >= 1 and all(b.stop - b.start == 16 for box in boxes for b in box)
    weights = tiled.blend_weights((16,) * len(shape), 4)
    centre, edge = (8,) * len(shape), (0,) + (8,) * (len(shape) - 1)
    assert weights.min() > 0 and weights[centre] == 1 and weights[edge] == pytest.approx(0.2)


@pytest.mark.parametrize("dims", [1, 2])
def test_statistics_by_tiles_are_the_whole_inputs_up_to_the_borders(dims):
    """One tile covering the input gives the whole input's statistics exactly; smaller tiles
    differ only by their borders, less as the tiles grow."""
    encoder = small_encoder(dims)
    x = texture(dims, 64 if dims == 1 else 32, 1)
    whole = tiled.style_statistics(encoder, x, LAYERS, GramCost(), None)
    one_tile = tiled.style_statistics(encoder, x, LAYERS, GramCost(), 64)
    by_16, by_32 = (tiled.style_statistics(encoder, x, LAYERS, GramCost(), t) for t in (16, 32))
    for name in LAYERS:
        assert torch.allclose(whole[name], one_tile[name])
        error_16, error_32 = ((b[name] - whole[name]).norm() / whole[name].norm() for b in (by_16, by_32))
        assert error_32 <= error_16 < 0.25


@pytest.mark.parametrize("dims", [1, 2])
def test_memory_estimate_grows_with_the_input_and_a_small_budget_is_one_line(dims):
    encoder = small_encoder(dims)
    totals = [tiled.estimate_bytes(encoder, (1, *[n] * dims), LAYERS)["total"] for n in (16, 32, 64)]
    assert totals[0] < totals[1] < totals[2]
    budget = totals[1] * 1.05 / 2**30  # a 32-tile fits, a 64 input does not
    with pytest.raises(ConfigError) as error:
        tiled.check_budget(encoder, (1, *[64] * dims), LAYERS, budget, tiled=False)
    message = str(error.value)
    assert "\n" not in message and f"over memory_budget_gb={budget:g}" in message and "tile=32" in message
    assert tiled.fitting_tile(encoder, LAYERS, budget, 64, dims) == 32
    assert tiled.fitting_tile(encoder, LAYERS, totals[0] / 2 / 2**30, 64, dims) is None  # not even the smallest tile
    with pytest.raises(ConfigError, match="shallower layers"):
        tiled.check_budget(encoder, (1, *[16] * dims), LAYERS, totals[0] / 2 / 2**30, tiled=True)


def test_bad_tiles_and_costs_without_statistics_are_refused():
    transfer = StyleTransfer(small_encoder(1), ["relu1_1"], LAYERS)
    x = texture(1, 64, 1)
    stats = tiled.style_statistics(transfer.encoder, x, LAYERS, GramCost(), None)
    with pytest.raises(ConfigError, match="overlap must be between 0 and tile - 1"):
        tiled.stylize_tiles(transfer, x, stats, 16, 16)
    with pytest.raises(ConfigError, match="style cost with statistics"):
        tiled.style_statistics(transfer.encoder, x, LAYERS, lambda g, t: content_cost(g, t), None)


@pytest.mark.parametrize("dims, size, tile", [(1, 96, 48), (2, 40, 24)])
def test_tiled_transfer_is_close_to_the_untiled_one(dims, size, tile):
    """A budget that refuses one pass but fits a tile: the tiled result lowers the style
    distance nearly as much as the untiled one, and is close to it sample by sample."""
    encoder = small_encoder(dims)
    content = texture(dims, size, 1)
    style = (torch.rand(1, *[size] * dims, generator=torch.Generator().manual_seed(5)) > 0.7).float()  # sparse dots
    one_pass = tiled.estimate_bytes(encoder, content.shape, LAYERS)["total"]
    budget = (one_pass + tiled.estimate_bytes(encoder, (1, *[tile] * dims), LAYERS)["total"]) / 2 / 2**30
    with pytest.raises(ConfigError, match="over memory_budget_gb"):
        tiled.check_budget(encoder, tuple(content.shape), LAYERS, budget, tiled=False)
    tiled.check_budget(encoder, (1, *[tile] * dims), LAYERS, budget, tiled=True)

    stats = tiled.style_statistics(encoder, style, LAYERS, GramCost(), None)
    run = {"iterations": 20, "value_range": (0.0, 1.0), "init": "content"}
    weights = {"relu1_1": 0.5, "relu2_1": 0.5}
    whole = StyleTransfer(encoder, ["relu2_1"], weights, beta=10.0).run(content, [style], seed=0, show_progress=False, **run)
    transfer = StyleTransfer(encoder, ["relu2_1"], weights, beta=10.0)
    generated, rows = tiled.stylize_tiles(transfer, content, stats, tile, 8, run, seed=0, show_progress=False)
    assert generated.shape == content.shape and len(rows) > 1
    assert 0 <= generated.min() and generated.max() <= 1

    before = tiled.style_distance(encoder, content, stats, weights, GramCost(), None)
    after_whole = tiled.style_distance(encoder, whole.generated, stats, weights, GramCost(), None)
    after_tiles = tiled.style_distance(encoder, generated, stats, weights, GramCost(), None)
    assert after_tiles < 0.2 * before and after_tiles < 1.5 * after_whole  # measured: 1D 0.096 -> 0.005 / 0.006, 2D 0.48 -> 0.066 / 0.070
    change_whole, change_tiles = whole.generated - content, generated - content
    assert torch.nn.functional.cosine_similarity(change_whole.flatten(), change_tiles.flatten(), dim=0) > 0.5


def _recipe_encoder(dims, summary):
    """The encoder `convgen run stylize` optimised with (rebuilt from the seed; the fingerprint proves it)."""
    from convgen.metric.inputs import prepare_encoder
    from convgen.runtime import seed_everything
    from convgen.recipes.stylize import DEFAULTS

    seed_everything(DEFAULTS["seed"])
    encoder, _, fp = prepare_encoder(DEFAULTS, dims, 1)
    assert fp == summary["encoder_fingerprint"]
    return encoder


@pytest.mark.parametrize("dims, size, tile", [(1, 400, 128), (2, 48, 24)])
def test_stylize_recipe_with_tiles_keeps_the_shape_and_lowers_the_style_distance(tmp_path, dims, size, tile):
    from conftest import invoke

    content, style = texture(dims, size, 0), texture(dims, size, 2)
    np.save(tmp_path / "c.npy", content.numpy())
    np.save(tmp_path / "s.npy", style.numpy())
    out = tmp_path / "out"
    result = invoke("run", "stylize", f"spatial_dims={dims}", f"content={tmp_path / 'c.npy'}", f"style={tmp_path / 's.npy'}",
                    f"tile={tile}", "overlap=8", "iterations=8", "-o", out)  # fmt: skip
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    generated = torch.from_numpy(np.load(out / "stylized.npy"))
    assert generated.shape == content.shape and summary["tile"] == tile
    assert torch.isfinite(generated).all() and not torch.allclose(generated, content, atol=1e-3)
    # the whole result against the whole style, measured apart from the tiles' own costs
    encoder, layers = _recipe_encoder(dims, summary), ["relu1_1", "relu2_1", "relu3_1", "relu4_1"]
    targets = tiled.style_statistics(encoder, style, layers, GramCost(), None)
    weights = dict.fromkeys(layers, 0.25)
    before = tiled.style_distance(encoder, content, targets, weights, GramCost(), None)
    after = tiled.style_distance(encoder, generated, targets, weights, GramCost(), None)
    assert after < 0.7 * before, (before, after)
    assert summary["final"]["style"] < summary["start"]["style"]


def test_stylize_recipe_tile_auto_fits_a_budget_one_pass_does_not(tmp_path):
    from conftest import assert_one_line_error, invoke

    content, style = texture(2, 64, 0), texture(2, 64, 2)
    np.save(tmp_path / "c.npy", content.numpy())
    np.save(tmp_path / "s.npy", style.numpy())
    from convgen.metric.inputs import prepare_encoder
    from convgen.recipes.stylize import DEFAULTS

    encoder, _, _ = prepare_encoder(DEFAULTS, 2, 1)  # the estimate needs shapes only, not the weights
    layers = ["relu1_1", "relu2_1", "relu3_1", "relu4_1"]
    budget = tiled.estimate_bytes(encoder, (1, 40, 40), layers)["total"] / 2**30  # 64² does not fit, 40² does
    args = ["run", "stylize", f"content={tmp_path / 'c.npy'}", f"style={tmp_path / 's.npy'}", f"memory_budget_gb={budget}", "iterations=3"]
    refused = invoke(*args, "-o", tmp_path / "one")
    assert_one_line_error(refused, contains=["memory_budget_gb", "tile=auto"])
    assert not (tmp_path / "one" / "stylized.npy").exists()
    result = invoke(*args, "tile=auto", "-o", tmp_path / "auto")
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "auto" / "summary.json").read_text())
    assert 16 <= summary["tile"] <= 40 and summary["tile"] % 8 == 0
    assert np.load(tmp_path / "auto" / "stylized.npy").shape == (1, 64, 64)


@pytest.mark.parametrize("value, message", [("3", "tile must be"), ("big", "tile must be"), ("true", "tile must be"),
                                            ("[8,8]", "tile must be")])  # fmt: skip
def test_stylize_recipe_bad_tile_is_one_line(tmp_path, value, message):
    from conftest import assert_one_line_error, invoke

    out = tmp_path / "out"
    assert_one_line_error(invoke("run", "stylize", f"tile={value}", "iterations=1", "-o", out), contains=[message])
    assert not (out / "stylized.npy").exists()
