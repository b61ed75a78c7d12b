"""Sampling, splits, the training engine (learning, exact resume) and the train/evaluate recipes."""

import json
from collections import Counter

import pytest
import torch
from safetensors.torch import load_file
from torch.utils.data import Subset

from conftest import assert_one_line_error, invoke
from convgen.data import SyntheticClusters
from convgen.metric.engine import Trainer, lr_factor
from convgen.errors import DataError
from convgen.metric.embedder import Embedder
from convgen.metric.embedder import embed_dataset
from convgen.metric.reports import validation_metrics
from convgen.metric.losses import TripletLoss
from convgen.metric.sampling import PKSampler, identity_split, stratified_split
from convgen.nets import ResNetEncoder

TINY = ["encoder.channels=[4, 8]", "encoder.strides=[1, 2]", "encoder.embedding_dim=16", "device=cpu"]


def test_pk_batches_hold_p_identities_with_up_to_k_samples():
    labels = [0] * 6 + [1] * 6 + [2] * 2 + [3] * 1 + [4] * 5
    sampler = PKSampler(labels, p=3, k=4, seed=0)
    batches = list(sampler)
    assert len(batches) == len(sampler) == 2
    for batch in batches:
        counts = Counter(labels[i] for i in batch)
        assert len(counts) == 3 and len(set(batch)) == len(batch), "no repeated sample inside a batch"
        for identity, count in counts.items():
            assert count == min(4, labels.count(identity))
    sampler.set_epoch(0)
    assert list(sampler) == batches, "the same epoch gives the same batches"
    sampler.set_epoch(1)
    assert list(sampler) != batches


def test_pk_sampler_rejects_data_that_cannot_form_triplets():
    with pytest.raises(DataError, match="1 identity"):
        PKSampler([0, 0, 0], p=2, k=2)
    with pytest.raises(DataError, match="every identity has a single sample"):
        PKSampler([0, 1, 2, 3], p=2, k=2)
    with pytest.raises(DataError, match="P ≥ 2"):
        PKSampler([0, 0, 1, 1], p=1, k=2)


def test_identity_split_is_disjoint_and_seeded():
    labels = [i // 3 for i in range(30)] + [10]  # identity 10 has one sample
    train, val = identity_split(labels, 0.3, seed=0)
    assert sorted(train + val) == list(range(31))
    assert not {labels[i] for i in train} & {labels[i] for i in val}
    assert 10 not in {labels[i] for i in val}, "one-sample identities cannot be verified"
    assert identity_split(labels, 0.3, seed=0) == (train, val)
    with pytest.raises(DataError, match="cannot hold out"):
        identity_split([0, 0, 1, 1], 0.5)


def test_stratified_split_keeps_every_class_on_both_sides():
    labels = [0] * 40 + [1] * 10 + [2] * 3  # class 2 is too small to give a validation pair
    train, val = stratified_split(labels, 0.25, seed=1)
    assert sorted(train + val) == list(range(53)) and not set(train) & set(val)
    assert Counter(labels[i] for i in val) == {0: 10, 1: 2}
    assert stratified_split(labels, 0.25, seed=1) == (train, val)
    with pytest.raises(DataError, match="at least 2 identities"):
        stratified_split([0] * 10 + [1] * 3, 0.2)


def test_lr_schedules():
    assert lr_factor(0, 100, "cosine") == 1.0 and lr_factor(100, 100, "cosine") == pytest.approx(0.0)
    assert lr_factor(50, 100, "cosine") == pytest.approx(0.5)
    assert lr_factor(4, 100, "cosine", warmup_steps=10) == pytest.approx(0.5)
    assert lr_factor(60, 100, "step", milestones=[30, 50]) == pytest.approx(0.01)


def _tiny_run(dims, size, out_dir, epochs, validate=None, resume=False):
    torch.manual_seed(0)
    data = SyntheticClusters(spatial_dims=dims, size=size, identities=64, samples_per_identity=6, seed=0)
    train, val = identity_split(data.labels, 0.33, seed=0)
    val_labels = [data.labels[i] for i in val]
    model = Embedder(ResNetEncoder(dims, channels=(8, 16), strides=(1, 2), embedding_dim=32))

    def metrics(m):
        return {f"val_{k}": v for k, v in validation_metrics(embed_dataset(m, Subset(data, val), 64, torch.device("cpu")), val_labels).items()}

    before = metrics(model)["val_eer"]
    trainer = Trainer(model, TripletLoss(mining="all"), spec={"name": "resnet"}, out_dir=out_dir, epochs=epochs,
                      optimizer={"name": "adamw", "lr": 3e-3}, scheduler={"name": "cosine"}, grad_clip=5.0,
                      validate=validate or metrics)  # fmt: skip
    result = trainer.fit(Subset(data, train), PKSampler([data.labels[i] for i in train], 8, 4, seed=0), resume=resume)
    return before, result, model


@pytest.mark.parametrize("dims, size", [(1, 64), (2, 24), (3, 12)])
def test_training_lowers_validation_eer_on_unseen_identities(tmp_path, dims, size):
    before, result, _ = _tiny_run(dims, size, tmp_path, epochs=8)
    assert before > 0.33
    assert result["best"] < min(0.33, before - 0.05), (before, [row["val_eer"] for row in result["history"]])
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == list(range(9)) and result["best_epoch"] > 0  # epoch 0: the starting weights
    assert {"loss", "active_fraction", "samples_per_s", "val_eer", "val_auc", "val_rank_1", "lr"} <= set(rows[1])
    assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (tmp_path / "encoder.safetensors").exists()


def test_resume_continues_exactly(tmp_path):
    _, straight, model = _tiny_run(2, 16, tmp_path / "straight", epochs=3)

    class Interrupted(Exception):
        pass

    calls = []

    def crash_in_epoch_two(m):
        calls.append(1)
        if len(calls) == 3:  # the start, epoch 1, epoch 2
            raise Interrupted
        return {"val_eer": 0.5}

    with pytest.raises(Interrupted):
        _tiny_run(2, 16, tmp_path / "resumed", epochs=3, validate=crash_in_epoch_two)
    assert load_file(str(tmp_path / "resumed" / "checkpoint.safetensors"))  # the epoch-1 checkpoint
    _, resumed, resumed_model = _tiny_run(2, 16, tmp_path / "resumed", epochs=3, resume=True)
    assert [r["epoch"] for r in resumed["history"]] == [0, 1, 2, 3]
    for (name, a), (_, b) in zip(model.state_dict().items(), resumed_model.state_dict().items()):
        assert torch.equal(a, b), name
    assert [r["loss"] for r in straight["history"][1:]] == [r["loss"] for r in resumed["history"][1:]]


@pytest.mark.parametrize("loss", ["loss.mining=batch-hard", "loss=contrastive", "loss=pair-classifier", "loss=arcface"])
def test_train_recipe_with_each_loss_then_evaluate(tmp_path, loss):
    out = tmp_path / "train"  # keep=last: the trained encoder (and head), which 2 tiny epochs need not make better than the start
    result = invoke("run", "train", loss, "epochs=2", "keep=last", "spatial_dims=1", "dataset.size=32", "dataset.identities=16",
                    "dataset.samples_per_identity=4", *TINY, "-o", out)  # fmt: skip
    assert result.exit_code == 0, result.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["epochs"] == 2 and 0 <= summary["val_eer"] <= 1
    split = json.loads((out / "split.json").read_text())
    assert not set(split["train"]) & set(split["val"])

    report_dir = tmp_path / "evaluate"
    result = invoke("run", "evaluate", f"weights={out / 'encoder.safetensors'}", "spatial_dims=1", "dataset.size=32",
                    "dataset.identities=12", "dataset.samples_per_identity=4", "dataset.identity_offset=1000",
                    "episodes.n_way=3", "-o", report_dir)  # fmt: skip
    assert result.exit_code == 0, result.stderr
    report = json.loads((report_dir / "report.json").read_text())
    v = report["verification"]
    assert {"auc", "eer", "eer_threshold", "tar_at_far", "kfold_accuracy"} <= set(v)
    assert v["same_pairs"] == 12 * 6 and report["identification_one_shot"]["probes"] == 12 * 3
    assert report["episodes"]["n_way"] == 3
    assert [row["method"] for row in report["comparison"]][:3] == ["samples", "untrained", "trained"]
    assert report["baselines"]["untrained"]["identities"] == 12 and report["protocol"] == "one-shot"
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert rows[0]["val_protocol"] == "one-shot" and summary["best_epoch"] == 2
    if loss == "loss=pair-classifier":  # the trained head travels with the encoder and scores verification
        assert (out / "encoder.head.safetensors").exists()
        head = report["verification_head"]
        assert 0 <= head["eer"] <= 1 and 0 < head["eer_probability"] < 1
        assert report["comparison"][-1]["method"] == "trained, pair head"
        from convgen.metric.losses import load_pair_head

        assert load_pair_head(out / "encoder.safetensors", "another encoder") is None
    for png in ("roc.png", "distances.png"):
        assert (report_dir / png).read_bytes()[:4] == b"\x89PNG"


def test_resume_from_the_command_line(tmp_path):
    out = tmp_path / "run"
    common = ["epochs=1", "spatial_dims=1", "dataset.size=32", "dataset.identities=12", "dataset.samples_per_identity=4", *TINY]
    assert invoke("run", "train", *common, "-o", out).exit_code == 0
    again = invoke("run", out, "--resume")
    assert again.exit_code == 0, again.stderr
    assert json.loads((out / "summary.json").read_text())["epochs"] == 1
    assert_one_line_error(invoke("run", out / "config.yaml", "epochs=2", "--resume"), 3, ["differs from this run's config"])
    assert_one_line_error(invoke("run", "inspect", "-o", tmp_path / "x", "--resume"), 3, ["cannot resume"])
    assert_one_line_error(invoke("run", "train", "-o", tmp_path / "empty", "--resume"), 3, ["nothing to resume"])
    assert_one_line_error(invoke("run", out), 3, ["is a folder"])


@pytest.mark.parametrize(
    "overrides, code, message",
    [
        (["dataset.identities=1"], 5, "cannot hold out"),
        (["dataset.samples_per_identity=1"], 5, "cannot hold out"),
        (["sampler.k=1"], 3, "k must be in [2, 1000000]"),  # refused by the config check, before any data is made
    ],
)
def test_training_data_that_cannot_work_is_a_clear_error(tmp_path, overrides, code, message):
    result = invoke("run", "train", "spatial_dims=1", "dataset.size=16", *TINY, *overrides, "-o", tmp_path)
    assert_one_line_error(result, code, [message])
    assert not (tmp_path / "checkpoint.safetensors").exists()


def test_recipes_run_from_code_return_what_they_made(tmp_path):
    """recipe(name).run returns a RecipeResult: the trained model in memory (the file's, bit for bit),
    and the evaluation's report and embeddings, so code built on a recipe never re-reads its outputs."""
    from convgen import config as configuration
    from convgen.io import finite_json
    from convgen.registry import recipe
    from convgen.running import run_recipe
    from convgen.weights import load_model

    data = ["spatial_dims=1", "dataset.size=32", "dataset.samples_per_identity=4"]
    train, config = configuration.resolve("train", ["epochs=1", "dataset.identities=12", *data, *TINY])
    trained = run_recipe(train, config, tmp_path / "train")
    assert trained.summary == json.loads((tmp_path / "train" / "summary.json").read_text())
    saved = load_model(tmp_path / "train" / "encoder.safetensors")
    assert trained.model.fingerprint == saved.fingerprint and trained.model.path == saved.path
    assert trained.files["weights"] == tmp_path / "train" / "encoder.safetensors"

    evaluate, config = configuration.resolve("evaluate", [f"weights={saved.path}", "dataset.identities=6", "dataset.identity_offset=1000",
                                                          "episodes.n_way=3", *data])  # fmt: skip
    evaluated = recipe("evaluate").run(config, tmp_path / "evaluate")
    assert finite_json(evaluated.report) == json.loads((tmp_path / "evaluate" / "report.json").read_text())
    assert evaluated.embeddings.shape == (24, saved.spec["embedding_dim"]) and len(evaluated.labels) == 24
    assert evaluated.model.fingerprint == saved.fingerprint == evaluated.report["encoder_fingerprint"]
    assert evaluate.run is recipe("evaluate").run
