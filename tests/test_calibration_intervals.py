"""Thresholds that say how sure they are: exact Clopper–Pearson intervals, the design effect of
searches that come in people, and a calibrated τ that holds on strangers it never saw."""

import json

import numpy as np
import pytest
from scipy.stats import binom

from convgen.gallery import api
from convgen.gallery.store import Gallery
from convgen.metric import evaluation as ev

DIM = 16


@pytest.mark.parametrize("k, n, expected", [
    (0, 10, (0.0, 0.3084971)),      # 1 - 0.025 ** (1 / 10)
    (10, 10, (0.6915029, 1.0)),
    (1, 10, (0.0025286, 0.4450161)),
    (5, 20, (0.0865715, 0.4910459)),
])  # fmt: skip
def test_clopper_pearson_known_values(k, n, expected):
    assert ev.clopper_pearson(k, n) == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("k, n", [(0, 7), (3, 40), (12, 1000), (40, 41)])
def test_clopper_pearson_bounds_are_where_the_binomial_tails_are_2_5_percent(k, n):
    lower, upper = ev.clopper_pearson(k, n)
    if k < n:
        assert binom.cdf(k, n, upper) == pytest.approx(0.025, abs=1e-9)
    if k > 0:
        assert binom.sf(k - 1, n, lower) == pytest.approx(0.025, abs=1e-9)


def test_min_trials_is_where_the_upper_bound_stays_below_twice_the_target():
    for target in (0.1, 0.01):
        n = ev.min_trials(target)
        assert 6.0 < n * target < 7.3  # about 7.2 / target (6.2 at 10%): 6 to 7 errors are needed
        for m in (n, n + 1, 2 * n, 3 * n + 7):
            assert ev.clopper_pearson(int(np.floor(target * m + 1e-9)), m)[1] < 2 * target
        assert ev.clopper_pearson(int(np.floor(target * (n - 1) + 1e-9)), n - 1)[1] >= 2 * target
    assert ev.min_trials(0.01) == 718


def test_design_effect_of_independent_and_of_clustered_scores():
    rng = np.random.default_rng(0)
    groups = np.repeat(np.arange(50), 20)
    assert ev.design_effect(rng.normal(size=1000), groups) < 1.5  # independent: about 1
    clustered = rng.normal(size=50)[groups] + 0.01 * rng.normal(size=1000)
    assert ev.design_effect(clustered, groups) == pytest.approx(20, rel=0.02)  # each person is one observation


def people(rng, n, k, spread=0.5):
    """n generated people × k samples: unit vectors scattered around each person's centre."""
    centres = rng.normal(size=(n, DIM))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    x = centres[:, None, :] + spread * rng.normal(size=(n, k, DIM)) / np.sqrt(DIM)
    x /= np.linalg.norm(x, axis=2, keepdims=True)
    return x.reshape(n * k, DIM).astype(np.float32), np.repeat(np.arange(n), k)


def true_fpir(enrolled, tau, rng):
    """The FPIR at τ measured on a large fresh population (2,000 people × 10 samples)."""
    strangers, _ = people(rng, 2000, 10)
    d = ((strangers[:, None, :] - enrolled[None]) ** 2).sum(2).min(1)
    return float((d <= tau).mean())


def test_tau_calibrated_at_fpir_1_percent_holds_within_its_interval_on_new_strangers(tmp_path):
    covered, widths = 0, []
    for seed in range(20):
        rng = np.random.default_rng(seed)
        enrolled, _ = people(rng, 100, 1)
        with Gallery.create(tmp_path / f"g{seed}.db", fingerprint="fp", encoder={"name": "test"}, dim=DIM) as gallery:
            gallery.enrol_many({f"p{i}": enrolled[i : i + 1] for i in range(len(enrolled))})
            strangers, labels = people(rng, 500, 4)  # 2,000 searches by 500 people who are not enrolled
            report = api.calibrate(gallery, strangers, labels, "1:N", 0.01)
        assert report["non_mated_people"] == 500 and report["warning"] is None, report
        lower, upper = report["fpir_ci95"]
        covered += lower <= true_fpir(enrolled, report["threshold"], rng) <= upper
        widths.append(upper - lower)
    assert covered >= 18, covered  # a 95% interval: 19 of 20 expected
    assert np.mean(widths) < 0.02  # and tight enough to mean something at 1%


def test_calibrating_on_five_strangers_warns(tmp_path):
    """The issue's case: five people who are not enrolled cannot support FPIR 1%."""
    rng = np.random.default_rng(1)
    enrolled, _ = people(rng, 100, 1)
    with Gallery.create(tmp_path / "g.db", fingerprint="fp", encoder={"name": "test"}, dim=DIM) as gallery:
        gallery.enrol_many({f"p{i}": enrolled[i : i + 1] for i in range(len(enrolled))})
        strangers, labels = people(rng, 5, 40)
        report = api.calibrate(gallery, strangers, labels, "1:N", 0.01)
    assert report["non_mated_people"] == 5 and report["effective_searches"] < 200
    assert "5 people (need at least 10)" in report["warning"] and "\n" not in report["warning"]
    assert report["fpir_ci95"][1] > 0.02  # the interval says what the warning says


def test_a_trained_pair_head_scores_gallery_verification_and_is_calibrated(tmp_path):
    import torch

    from convgen.metric.losses import PairClassifierLoss, head_path
    from convgen.nets import ResNetEncoder
    from convgen.weights import save_encoder

    encoder = ResNetEncoder(1, channels=(4,), strides=(1,), embedding_dim=DIM)
    weights = tmp_path / "encoder.safetensors"
    fp = save_encoder(weights, encoder, {"name": "resnet", "spatial_dims": 1, "in_channels": 1, "channels": [4],
                                         "strides": [1], "embedding_dim": DIM})  # fmt: skip
    torch.manual_seed(0)
    head = PairClassifierLoss(DIM)
    with torch.no_grad():  # a head that says "same" when the coordinates are close
        head.head.weight.fill_(-4.0)
        head.head.bias.fill_(3.0)
    head.save_head(weights, fp)
    assert head_path(weights).name == "encoder.head.safetensors"
    rng = np.random.default_rng(3)
    enrolled, _ = people(rng, 20, 2)
    with Gallery.create(tmp_path / "g.db", fingerprint=fp, encoder={"name": "resnet"}, dim=DIM, weights=str(weights)) as gallery:
        gallery.enrol_many({f"p{i}": enrolled[2 * i : 2 * i + 2] for i in range(20)})
        query = enrolled[0] + 0.01
        result = api.verify(gallery, query[None], "p0", threshold=1.0)
        with torch.no_grad():
            expected = head.score(torch.as_tensor(query[None]), torch.as_tensor(enrolled[0:2])).max().item()
        assert result["probability"] == pytest.approx(expected, abs=1e-6) and "head_match" not in result
        strangers, labels = people(rng, 60, 3)
        report = api.calibrate(gallery, strangers, labels, "1:1", 0.05)
        assert report["people"] == 60 and len(report["far_ci95"]) == 2
        calibrated = report["head"]
        assert 0 < calibrated["threshold_probability"] < 1 and calibrated["far"] <= 0.05
        result = api.verify(gallery, query[None], "p0")
        assert result["head_match"] == (result["probability"] >= calibrated["threshold_probability"])
        other = PairClassifierLoss(DIM)
        other.save_head(weights, "another encoder")  # a stale head of other weights is ignored
        assert "probability" not in api.verify(gallery, query[None], "p0")


def test_gallery_calibrate_prints_the_interval_the_people_and_a_warning(tmp_path):
    import torch

    from convgen.data import SyntheticClusters
    from convgen.testing import invoke
    from convgen.weights import build_encoder, encoder_spec, save_encoder

    spec = encoder_spec({"name": "resnet", "channels": [4], "strides": [1], "embedding_dim": 8}, spatial_dims=1, in_channels=1)
    torch.manual_seed(0)
    save_encoder(tmp_path / "enc.safetensors", build_encoder(spec), spec)
    data = SyntheticClusters(spatial_dims=1, size=16, identities=8, samples_per_identity=5)
    for index, (x, label) in enumerate(data):  # people 0-2 are enrolled, 3-7 are 5 strangers with 25 searches
        folder = tmp_path / ("known" if label < 3 else "strangers") / data.classes[label]
        folder.mkdir(parents=True, exist_ok=True)
        np.save(folder / f"{index}.npy", x.numpy())
    db = tmp_path / "g.db"
    assert invoke("gallery", "create", db, "--weights", tmp_path / "enc.safetensors").exit_code == 0
    for person in sorted((tmp_path / "known").iterdir()):
        assert invoke("gallery", "enrol", db, person.name, sorted(person.iterdir())[0]).exit_code == 0
    result = invoke("gallery", "calibrate", db, tmp_path / "strangers", "--fpir", "0.1")
    assert result.exit_code == 0, result.stderr
    assert "95% CI" in result.stdout and "over 25 searches of 5 people" in result.stdout
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "5 people (need at least 10)" in warnings[0]
    result = invoke("gallery", "calibrate", db, tmp_path / "strangers", "--far", "0.1", "--json")
    report = json.loads(result.stdout)
    assert result.exit_code == 0 and report["people"] == 5 and len(report["far_ci95"]) == 2
