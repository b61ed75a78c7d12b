"""Precomputed feature sequences (.npy MFCCs) as a representation: reading, folds, crops, the TDNN, the recipes."""

import json

import numpy as np
import pytest
import torch
from convgen_audio.baselines import feature_statistics, statistics
from convgen_audio.datasets import sample_dir, speaker_fold
from convgen_audio.features import FeatureSequence, crop, representation_of

from convgen import registry
from convgen.errors import ConfigError, DataError, PathError
from convgen.testing import invoke, one_line_error

AN4 = sample_dir("an4_mfcc")
SPEAKERS = ["fash", "fbbh", "fcaw", "marh", "mblb", "mcel"]


def features_dataset(**kwargs):
    config = {"name": "speakers", "root": str(AN4), "pattern": None, "representation": {"name": "features"}, **kwargs}
    return registry.build("dataset", config, spatial_dims=1)


def test_the_bundled_an4_sample_reads_as_coefficients_over_time():
    data = features_dataset(representation={"name": "features", "normalize": "none"})
    assert data.classes == SPEAKERS and len(data) == 24 and (AN4 / "LICENSE").is_file()
    x, label = data[0]
    raw = np.load(data.files[0])
    assert x.shape == (13, raw.shape[0]) and x.dtype == torch.float32 and label == 0
    assert torch.equal(x, torch.from_numpy(raw.T))  # (frames, 13) on disk: the coefficients become channels, values unchanged


def test_normalisation_removes_each_coefficients_mean_or_also_its_scale():
    raw = np.load(features_dataset().files[3])
    mean = FeatureSequence(normalize="mean").features(raw)
    np.testing.assert_allclose(mean.mean(1), 0, atol=1e-5)
    np.testing.assert_allclose(mean.std(1), raw.std(0), rtol=1e-5)
    bins = FeatureSequence(normalize="bins").features(raw)
    np.testing.assert_allclose(bins.std(1), 1, rtol=1e-3)


@pytest.mark.parametrize(
    "array, words",
    [
        (np.zeros((50, 13, 1), np.float32), "must be 2D (frames, coefficients)"),
        (np.zeros((50, 13), np.complex64), "real numbers"),
        (np.zeros((50, 13), bool), "real numbers"),
        (np.zeros((50, 12), np.float32), "12 coefficients per frame but representation.coefficients is 13"),
        (np.zeros((13, 50), np.float32), "stored as (coefficients, frames)"),
        (np.zeros((5, 13), np.float32), "5 frames, fewer than representation.min_frames=10"),
        (np.full((50, 13), np.nan, np.float32), "NaN or infinite"),
    ],
)
def test_bad_feature_files_are_one_line_errors(tmp_path, array, words):
    np.save(tmp_path / "x.npy", array)
    with pytest.raises(DataError) as error:
        FeatureSequence(coefficients=13)(tmp_path / "x.npy")
    assert words in str(error.value) and "\n" not in str(error.value)


def test_pickled_or_missing_files_are_refused_without_unpickling(tmp_path):
    np.save(tmp_path / "objects.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(DataError, match="not a readable .npy array"):
        FeatureSequence()(tmp_path / "objects.npy")
    (tmp_path / "text.npy").write_text("not numpy")
    with pytest.raises(DataError, match="not a readable .npy array"):
        FeatureSequence()(tmp_path / "text.npy")
    with pytest.raises(PathError):
        FeatureSequence()(tmp_path / "missing.npy")


def test_representation_names_and_keys_are_checked():
    assert isinstance(representation_of({"name": "features", "coefficients": 13}), FeatureSequence)
    assert representation_of(None).kind == "log-mel"
    for bad in ({"name": "waveform"}, {"name": "features", "n_mels": 40}, {"name": "features", "normalize": "global"},
                {"name": "features", "coefficients": 0}):  # fmt: skip
        with pytest.raises(ConfigError):
            representation_of(bad)


def test_folds_deal_every_speaker_to_exactly_one_fold():
    folds = [set(features_dataset(folds=3, fold=f).classes) for f in range(3)]
    assert sorted(s for fold in folds for s in fold) == SPEAKERS and all(len(f) == 2 for f in folds)
    for f in range(3):
        assert set(features_dataset(folds=3, fold=f, exclude_fold=True).classes) == set(SPEAKERS) - folds[f]
    assert speaker_fold(SPEAKERS, 3, 1) == folds[1]  # the same deal for the same speakers, whatever else is selected
    assert features_dataset(exclude_speakers=["fcaw", "mblb"]).classes == ["fash", "fbbh", "marh", "mcel"]
    with pytest.raises(ConfigError):
        features_dataset(folds=3, fold=3)
    with pytest.raises(DataError, match="cannot be dealt into 7 folds"):
        features_dataset(folds=7, fold=0)


def test_crops_are_windows_of_the_utterance_and_short_ones_loop():
    x = torch.arange(30.0).reshape(1, 30).repeat(2, 1)
    generator = torch.Generator().manual_seed(0)
    for _ in range(20):
        window = crop(x, 12, generator)
        start = int(window[0, 0])
        assert window.shape == (2, 12) and torch.equal(window, x[:, start : start + 12])
    looped = crop(x[:, :5], 12, generator)
    assert looped.shape == (2, 12) and torch.equal(looped, x[:, :5].repeat(1, 3)[:, int(looped[0, 0]) : int(looped[0, 0]) + 12])
    data = features_dataset(crop=40)
    assert {tuple(data[i][0].shape) for i in range(len(data))} == {(13, 40)}


def test_tdnn_statistics_pooling_ignores_the_utterance_length():
    torch.manual_seed(0)
    # kernels of 1: each frame alone, so an utterance said twice has exactly the same frame statistics
    encoder = registry.build("encoder", {"name": "tdnn", "channels": [8, 16], "kernel_sizes": [1, 1], "dilations": [1, 1],
                                         "embedding_dim": 6}, spatial_dims=1, in_channels=13).eval()  # fmt: skip
    x = torch.randn(1, 13, 37)
    with torch.no_grad():
        torch.testing.assert_close(encoder(torch.cat([x, x], -1)), encoder(x), rtol=1e-4, atol=1e-5)
        assert encoder(torch.randn(1, 13, 11)).shape == (1, 6)
    with pytest.raises(ConfigError):
        registry.build("encoder", {"name": "tdnn", "kernel_sizes": [2, 3, 3, 1, 1]}, spatial_dims=1, in_channels=13)


def test_the_feature_statistics_baseline_is_each_coefficients_mean_and_std():
    data = features_dataset()
    stats = np.stack([statistics(np.load(f)) for f in data.files])
    expected = (stats - stats.mean(0)) / (stats.std(0) + 1e-8)
    np.testing.assert_allclose(feature_statistics(torch.utils.data.Subset(data, range(len(data)))), expected, rtol=1e-5)
    np.testing.assert_allclose(statistics(np.load(data.files[0]))[:13], np.load(data.files[0]).mean(0), rtol=1e-6)
    with pytest.raises(DataError, match="needs a dataset of feature files"):
        feature_statistics(registry.build("dataset", {"name": "speakers", "max_per_speaker": 1}, spatial_dims=1))


def test_train_and_evaluate_features_recipes_run_end_to_end(tmp_path):
    tiny = ["epochs=2", "encoder.channels=[8,8,8,8,16]", "dataset.crop=40", "device=cpu"]
    result = invoke("run", "audio-train-features", *tiny, "-o", str(tmp_path / "train"))
    assert result.exit_code == 0, result.output
    weights = tmp_path / "train" / "encoder.safetensors"
    from convgen.weights import read_pipeline

    assert read_pipeline(weights)["name"] == "audio-features"
    result = invoke("run", "audio-evaluate-features", f"weights={weights}", "device=cpu", "-o", str(tmp_path / "eval"))
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "eval" / "report.json").read_text())
    assert report["samples"] == 24 and set(report["baselines"]) == {"feature-statistics", "untrained"}


def test_a_bad_feature_file_in_a_dataset_is_one_line_at_the_command_line(tmp_path):
    rng = np.random.default_rng(0)
    for speaker in ("ann", "bob", "cy", "dee", "eve"):
        (tmp_path / speaker).mkdir()
        for take in range(3):
            np.save(tmp_path / speaker / f"{take}.npy", rng.standard_normal((50, 13)).astype(np.float32))
    np.save(tmp_path / "bob" / "b.npy", np.zeros((50, 13, 2), np.float32))
    result = invoke("run", "audio-train-features", f"dataset.root={tmp_path}", "epochs=1", "encoder.channels=[4,4,4,4,4]",
                    "device=cpu", "-o", str(tmp_path / "out"))  # fmt: skip
    one_line_error(result, "b.npy holds an array of shape (50, 13, 2)")


def test_the_shipped_encoder_tells_apart_speakers_it_never_heard(tmp_path):
    """Trained on the 78 AN4 speakers not in the bundled sample: the sample's 6 are new to it."""
    from convgen_audio.models import TDNN_AN4

    from convgen.weights import read_pipeline

    assert TDNN_AN4.stat().st_size < 20e6
    assert read_pipeline(TDNN_AN4) == {"name": "audio-features", "coefficients": None, "normalize": "none", "min_frames": 10}
    result = invoke("run", "audio-evaluate-features", f"weights={TDNN_AN4}", "device=cpu", "-o", str(tmp_path / "eval"))
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "eval" / "report.json").read_text())
    baseline = report["baselines"]["feature-statistics"]
    # measured: rank-1 0.83 vs 0.50, EER 0.08 vs 0.27 (18 one-shot searches among 6 speakers)
    assert report["identification_one_shot"]["rank_1"] >= baseline["identification_one_shot"]["rank_1"] + 0.2
    assert report["verification"]["eer"] <= baseline["verification"]["eer"] - 0.08
