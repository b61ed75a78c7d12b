"""Validation is the task: sessions-aware batches, splits and scores, the epoch chosen by the
protocol's rank-1 (EER breaks ties), baselines scored beside the encoder, and the
bench_accuracy driver."""

import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from convgen.data import SyntheticClusters
from convgen.metric.engine import Trainer
from convgen.metric import evaluation
from convgen.metric import reports as evaluate_reports
from convgen.recipes import evaluate
from convgen.metric.embedder import Embedder
from convgen.metric.losses import TripletLoss
from convgen.metric.sampling import PKSampler, identity_split
from convgen.nets import ResNetEncoder

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def recordings(people=6, sessions=3, per_session=4):
    labels = [p for p in range(people) for _ in range(sessions * per_session)]
    names = [f"p{p}/s{s}" for p in range(people) for s in range(sessions) for _ in range(per_session)]
    return labels, names


def test_pk_batches_draw_a_persons_samples_from_different_sessions():
    labels, sessions = recordings()
    sampler = PKSampler(labels, p=3, k=3, seed=0, sessions=sessions)
    seen = Counter()
    for epoch in range(3):
        sampler.set_epoch(epoch)
        for batch in sampler:
            per_person = {}
            for i in batch:
                per_person.setdefault(labels[i], []).append(sessions[i])
            for person, names in per_person.items():
                assert len(names) == 3 and len(set(names)) == 3, names  # K = 3 samples from 3 recordings
            seen.update(batch)
    assert len(seen) == len(labels)  # every sample is drawn
    with_one_session = PKSampler(labels, p=3, k=3, seed=0, sessions=[str(label) for label in labels])
    assert all(len(set(b)) == len(b) for b in with_one_session)  # one recording each: plain P×K


def test_identity_split_validates_people_recorded_twice():
    labels, sessions = recordings(people=12)
    sessions = [s if labels[i] < 4 else f"p{labels[i]}/only" for i, s in enumerate(sessions)]  # 4 people have 3 sessions
    _, val = identity_split(labels, 0.25, seed=0, sessions=sessions)
    assert {labels[i] for i in val} <= {0, 1, 2, 3}


def test_validation_scores_across_sessions_not_within_them():
    """Embeddings that only know the recording: one-shot looks perfect, cross-session is chance."""
    labels, sessions = recordings(people=8, sessions=3, per_session=5)
    rng = np.random.default_rng(0)
    by_session = {name: rng.normal(size=16) for name in sorted(set(sessions))}  # sorted: set order follows PYTHONHASHSEED
    e = np.stack([by_session[s] + 0.01 * rng.normal(size=16) for s in sessions])
    e /= np.linalg.norm(e, axis=1, keepdims=True)
    one_shot = evaluate_reports.validation_metrics(e, labels)
    across = evaluate_reports.validation_metrics(e, labels, sessions=sessions)
    assert one_shot["protocol"] == "one-shot" and across["protocol"] == "cross-session"
    assert one_shot["rank_1"] > 0.3 and across["rank_1"] <= 0.25
    brute = evaluation.cross_session(e, labels, sessions, ranks=(1,))
    assert across["rank_1"] == brute["closed_set"]["sessions"]["rank_1"] and across["eer"] == brute["verification"]["eer"]
    assert evaluate_reports.validation_protocol(labels, [str(label) for label in labels]) == "one-shot"  # one recording each


def test_the_best_epoch_is_the_best_rank_1_and_eer_breaks_ties(tmp_path):
    data = SyntheticClusters(spatial_dims=1, size=16, identities=8, samples_per_identity=4)
    scores = iter([(0.25, 0.40), (0.5, 0.30), (0.5, 0.20), (0.4, 0.10), (0.5, 0.25)])  # the start (epoch 0), then epochs 1-4

    def validate(model):
        rank_1, eer = next(scores)
        return {"val_rank_1": rank_1, "val_eer": eer}

    trainer = Trainer(Embedder(ResNetEncoder(1, channels=(4,), strides=(1,), embedding_dim=8)), TripletLoss(), spec={"name": "resnet"},
                      out_dir=tmp_path, epochs=4, optimizer={"lr": 1e-3}, scheduler={"name": "constant"}, validate=validate,
                      monitor="val_rank_1", mode="max", tie_break=("val_eer", "min"))  # fmt: skip
    result = trainer.fit(data, PKSampler(data.labels, 4, 2))
    assert result["best_epoch"] == 2 and result["best"] == 0.5


def test_evaluate_scores_baselines_on_the_same_people_and_protocol():
    data = SyntheticClusters(spatial_dims=1, size=32, identities=8, samples_per_identity=4)
    labels = np.asarray(data.labels)
    sessions = [f"{label}/{i % 2}" for i, label in enumerate(data.labels)]
    config = {**evaluate.DEFAULTS, "weights": "trained.safetensors", "episodes": {**evaluate.DEFAULTS["episodes"], "n_way": 3}}
    spec = {"name": "resnet", "spatial_dims": 1, "in_channels": 1, "channels": [4], "strides": [1], "embedding_dim": 8}
    reports = evaluate_reports.baseline_reports(data, labels, config, spec, torch.device("cpu"), sessions=sessions)
    raw = data.samples.reshape(len(data), -1).double().numpy()
    raw /= np.linalg.norm(raw, axis=1, keepdims=True)
    by_hand = evaluation.cross_session(raw, labels, sessions, config["open_set_fraction"], config["fpir_targets"], config["ranks"], 0)
    assert reports["samples"]["cross_session"]["closed_set"] == by_hand["closed_set"]
    assert evaluate_reports.headline(reports["samples"])["protocol"] == "cross-session"
    untrained = reports["untrained"]
    assert untrained["identities"] == 8 and "cross_session" in untrained
    from convgen.weights import build_encoder

    again = evaluate_reports.untrained_baseline(data, spec=spec, seed=0)
    torch.manual_seed(0)
    net = Embedder(build_encoder(spec)).eval()
    with torch.no_grad():
        np.testing.assert_allclose(again, net(data.samples).numpy(), atol=1e-6)  # seeded random weights
    skipped = evaluate_reports.baseline_reports(data, labels, {**config, "weights": None, "baselines": ["untrained"]}, spec, torch.device("cpu"))
    assert "untrained" in skipped["untrained"]["skipped"]


def test_bench_accuracy_driver_prints_one_table_per_plugin(tmp_path, capsys):
    sys.path.insert(0, str(BENCHMARKS))
    import bench_accuracy

    row = {"plugin": "toy", "dataset": "toy set", "protocol": "one-shot", "method": "raw", "rank_1_mean": 0.5,
           "rank_1_std": 0.1, "eer_mean": 0.2, "eer_std": 0.05, "folds": 5}  # fmt: skip
    (tmp_path / "accuracy_toy.py").write_text(f"def rows(quick=False):\n    return [{row!r}, {{**{row!r}, 'method': 'trained', 'rank_1_mean': None}}]\n")
    (tmp_path / "accuracy_broken.py").write_text("def rows(quick=False):\n    raise FileNotFoundError('no data here')\n")
    rows = bench_accuracy.collect(quick=True, root=tmp_path)
    assert [r["method"] for r in rows] == ["raw", "trained"]
    assert "accuracy_broken: skipped (FileNotFoundError: no data here)" in capsys.readouterr().err
    text = bench_accuracy.markdown(rows)
    assert "### toy" in text and "| toy set | one-shot | raw | 0.500 ± 0.100 | 0.200 ± 0.050 | 5 |" in text
    assert "| toy set | one-shot | trained | — |" in text
    (tmp_path / "accuracy_bad.py").write_text("def rows(quick=False):\n    return [{'plugin': 'x'}]\n")
    with pytest.raises(ValueError, match="without dataset"):
        bench_accuracy.collect(only=["bad"], root=tmp_path)


def test_untrained_means_random_weights_even_for_an_encoder_that_ships_its_weights():
    from convgen.nets import ResNetEncoder
    from convgen.registry import get_registry

    class Shipped(ResNetEncoder):
        """Fixed weights whatever the seed, as an encoder built from a model file."""

        def __init__(self, spatial_dims: int = 1, in_channels: int = 1):
            super().__init__(spatial_dims, in_channels, channels=(4,), strides=(1,), embedding_dim=8)
            with torch.no_grad():
                for p in self.parameters():
                    p.fill_(0.5)

    registry = get_registry("encoder")
    registry.add("shipped-test", Shipped, "test")
    try:
        network, ships = evaluate_reports.random_network({"name": "shipped-test", "spatial_dims": 1, "in_channels": 1}, seed=0)
        assert ships and not all(bool((p == 0.5).all()) for p in network.parameters())
        again, _ = evaluate_reports.random_network({"name": "shipped-test", "spatial_dims": 1, "in_channels": 1}, seed=0)
        assert all(torch.equal(a, b) for a, b in zip(network.state_dict().values(), again.state_dict().values()))
        plain, ships = evaluate_reports.random_network({"name": "resnet", "spatial_dims": 1, "in_channels": 1, "channels": [4],
                                                "strides": [1], "embedding_dim": 8}, seed=0)  # fmt: skip
        assert not ships
    finally:
        registry._entries.pop("shipped-test")


class Recorded(SyntheticClusters):
    """Generated people whose samples come from 3 recordings each (``sessions``)."""

    def __init__(self, spatial_dims: int = 1, size: int = 32, identities: int = 12, samples_per_identity: int = 6):
        super().__init__(spatial_dims=spatial_dims, size=size, identities=identities, samples_per_identity=samples_per_identity)
        self.sessions = [f"{self.classes[label]}/rec{i % 3}" for i, label in enumerate(self.labels)]


def test_train_on_recordings_validates_across_them(tmp_path):
    import json

    from convgen.registry import get_registry
    from convgen.testing import invoke

    registry = get_registry("dataset")
    registry.add("recorded-test", Recorded, "test")
    try:
        out = tmp_path / "train"
        result = invoke("run", "train", "dataset.name=recorded-test", "spatial_dims=1", "epochs=2", "split.val_fraction=0.34",
                        "encoder.channels=[4, 8]", "encoder.strides=[1, 2]", "encoder.embedding_dim=16", "device=cpu",
                        "sampler.p=4", "sampler.k=3", "-o", out)  # fmt: skip
        assert result.exit_code == 0, result.stderr
    finally:
        registry._entries.pop("recorded-test")
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert all(r["val_protocol"] == "cross-session" and "val_rank_1_samples" in r for r in rows)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["val_protocol"] == "cross-session" and summary["selected_by"] == "val_rank_1"
    assert json.loads((out / "split.json").read_text())["val_protocol"] == "cross-session"
