"""Which weights a run keeps. ``keep: last``: the final epoch whatever validation prefers (a
schedule that ends well beats an epoch picked by a few noisy validation people). ``keep:
best``: the epoch validation prefers, the starting weights ("epoch 0") included, so a run in
which training only hurts keeps its start."""

import json

import pytest
import torch
from safetensors.torch import load_file

from conftest import invoke
from convgen.data import SyntheticClusters
from convgen.errors import ConfigError
from convgen.metric.embedder import Embedder
from convgen.metric.engine import Trainer
from convgen.metric.losses import TripletLoss
from convgen.metric.sampling import PKSampler
from convgen.nets import ResNetEncoder
from convgen.weights import read_weights


def _trainer(out_dir, keep, scores, epochs=3, loss=None):
    torch.manual_seed(0)
    model = Embedder(ResNetEncoder(1, channels=(4,), strides=(1,), embedding_dim=8))
    scores = iter(scores)
    return Trainer(model, loss or TripletLoss(), spec={"name": "resnet"}, out_dir=out_dir, epochs=epochs,
                   optimizer={"name": "adamw", "lr": 1e-2}, scheduler={"name": "cosine"},
                   validate=lambda m: {"val_rank_1": next(scores)}, monitor="val_rank_1", mode="max", keep=keep)  # fmt: skip


def _fit(out_dir, keep, scores, **options):
    data = SyntheticClusters(spatial_dims=1, size=16, identities=8, samples_per_identity=4, seed=0)
    trainer = _trainer(out_dir, keep, scores, **options)
    start = {k: v.clone() for k, v in trainer.model.encoder.state_dict().items()}
    result = trainer.fit(data, PKSampler(data.labels, 4, 2, seed=0))
    final = trainer.model.encoder.state_dict()
    saved, _ = read_weights(out_dir / "encoder.safetensors")
    kept = {name: all(torch.equal(saved[k], weights[k].cpu()) for k in weights) for name, weights in (("start", start), ("final", final))}
    return result, kept, final


def test_keep_last_saves_the_final_epoch_and_best_the_preferred_one(tmp_path):
    last, kept, _ = _fit(tmp_path / "last", "last", [0.9, 0.5, 0.4])  # validation prefers epoch 1, and says so ever louder
    assert last["best_epoch"] == 3 and kept["final"]
    assert [row["epoch"] for row in last["history"]] == [1, 2, 3], "keep: last does not score the start"
    assert [row["val_rank_1"] for row in last["history"]] == [0.9, 0.5, 0.4], "validation is still scored and logged"
    best, kept, _ = _fit(tmp_path / "best", "best", [0.2, 0.9, 0.5, 0.4])  # the start, then epochs 1-3
    assert best["best_epoch"] == 1 and not kept["final"] and not kept["start"]


def test_keep_best_keeps_the_starting_weights_when_training_only_hurts(tmp_path):
    result, kept, final = _fit(tmp_path / "best", "best", [0.9, 0.5, 0.9, 0.4])  # epoch 2 only ties the start
    assert result["best_epoch"] == 0 and result["best"] == 0.9
    assert kept["start"] and not kept["final"], "encoder.safetensors holds the weights before any step"
    rows = [json.loads(line) for line in (tmp_path / "best" / "metrics.jsonl").read_text().splitlines()]
    assert [row["epoch"] for row in rows] == [0, 1, 2, 3] == [row["epoch"] for row in result["history"]]
    assert "loss" not in rows[0] and "samples_per_s" not in rows[0] and rows[0]["lr"] == pytest.approx(1e-2)
    assert all("loss" in row for row in rows[1:])
    assert (tmp_path / "best" / "curves.png").read_bytes()[:4] == b"\x89PNG"
    _, _, final_last = _fit(tmp_path / "last", "last", [0.9, 0.9, 0.9])
    assert all(torch.equal(final[k], final_last[k]) for k in final), "scoring the start changes nothing about the training"


def test_a_trained_head_never_travels_with_the_untrained_start(tmp_path):
    from convgen.metric.losses import PairClassifierLoss, head_path

    out = tmp_path / "run"
    out.mkdir()
    head_path(out / "encoder.safetensors").write_bytes(b"an older run's head")
    result, kept, _ = _fit(out, "best", [0.9, 0.5, 0.4, 0.3], loss=PairClassifierLoss(embedding_dim=8))
    assert result["best_epoch"] == 0 and kept["start"]
    assert not head_path(out / "encoder.safetensors").exists(), "an untrained head scores nothing: distances score the start"
    result, _, _ = _fit(tmp_path / "later", "best", [0.1, 0.5, 0.4, 0.3], loss=PairClassifierLoss(embedding_dim=8))
    assert result["best_epoch"] == 1 and head_path(tmp_path / "later" / "encoder.safetensors").exists()


def test_resuming_after_epoch_0_does_not_score_the_start_again(tmp_path):
    data = SyntheticClusters(spatial_dims=1, size=16, identities=8, samples_per_identity=4, seed=0)
    straight, _, final = _fit(tmp_path / "straight", "best", [0.9, 0.5, 0.4, 0.3])
    crashed = _trainer(tmp_path / "resumed", "best", [])
    crashed.validate = _calls([{"val_rank_1": 0.9}, KeyboardInterrupt])  # the start is scored, epoch 1 is not
    with pytest.raises(KeyboardInterrupt):
        crashed.fit(data, PKSampler(data.labels, 4, 2, seed=0))
    resumed = _trainer(tmp_path / "resumed", "best", [0.5, 0.4, 0.3])  # a fourth call would raise StopIteration
    torch.manual_seed(123)  # the checkpoint, not this, decides the random state
    result = resumed.fit(data, PKSampler(data.labels, 4, 2, seed=0), resume=True)
    assert result["best_epoch"] == 0 and [row["epoch"] for row in result["history"]] == [0, 1, 2, 3]
    weights = resumed.model.encoder.state_dict()
    assert all(torch.equal(final[k], weights[k]) for k in final), "resumed from epoch 0 equals the run never stopped"
    assert [r.get("loss") for r in result["history"]] == [r.get("loss") for r in straight["history"]]


def _calls(answers):
    answers = iter(answers)

    def validate(model):
        answer = next(answers)
        if isinstance(answer, type) and issubclass(answer, BaseException):
            raise answer
        return answer

    return validate


def test_keep_is_checked(tmp_path):
    with pytest.raises(ConfigError, match="keep must be best or last"):
        Trainer(Embedder(ResNetEncoder(1, channels=(4,), strides=(1,), embedding_dim=8)), TripletLoss(), spec={"name": "resnet"},
                out_dir=tmp_path, epochs=1, optimizer={"name": "adamw"}, scheduler={"name": "cosine"}, keep="median")  # fmt: skip


def test_train_recipe_keep_last(tmp_path):
    out = tmp_path / "run"
    result = invoke("run", "train", "keep=last", "epochs=2", "spatial_dims=1", "dataset.size=16", "dataset.identities=8",
                    "dataset.samples_per_identity=4", "encoder.channels=[4]", "encoder.strides=[1]", "device=cpu", "-o", out)  # fmt: skip
    assert result.exit_code == 0, result.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["best_epoch"] == 2 and summary["selected_by"] == "last epoch"


def test_train_recipe_says_when_it_kept_the_starting_weights(tmp_path):
    out = tmp_path / "run"  # seed 1's random start ranks every validation person first; lr 1000 only wrecks it
    result = invoke("run", "train", "seed=1", "optimizer.lr=1000", "epochs=2", "spatial_dims=1", "dataset.size=16", "dataset.identities=8",
                    "dataset.samples_per_identity=4", "encoder.channels=[4]", "encoder.strides=[1]", "device=cpu", "-o", out)  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert "kept epoch 0, the starting weights" in result.stdout
    summary = json.loads((out / "summary.json").read_text())
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert summary["best_epoch"] == 0 and summary["selected_by"] == "val_rank_1" and "starting weights (random)" in summary["kept"]
    assert [row["epoch"] for row in rows] == [0, 1, 2] and summary["epochs"] == 2
    assert (summary["best_val_rank_1"], summary["best_val_eer"]) == (rows[0]["val_rank_1"], rows[0]["val_eer"])
    assert summary["val_rank_1"] == rows[-1]["val_rank_1"] < rows[0]["val_rank_1"], "the summary's plain figures are the last epoch's"
    saved, _ = read_weights(out / "encoder.safetensors")
    trained = {k[6:]: v for k, v in load_file(str(out / "checkpoint.safetensors")).items() if k.startswith("model.")}
    assert not all(torch.equal(saved[k], trained[k]) for k in saved)
