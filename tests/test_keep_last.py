"""``keep: last``: the final epoch is saved whatever validation prefers (a schedule that ends
well beats an epoch picked by a few noisy validation people)."""

import json

import pytest
import torch
from torch.utils.data import Subset

from conftest import invoke
from convgen.data import SyntheticClusters
from convgen.errors import ConfigError
from convgen.metric.embedder import Embedder
from convgen.metric.engine import Trainer
from convgen.metric.losses import TripletLoss
from convgen.metric.sampling import PKSampler
from convgen.nets import ResNetEncoder
from convgen.weights import read_weights


def _fit(out_dir, keep):
    torch.manual_seed(0)
    data = SyntheticClusters(spatial_dims=1, size=16, identities=8, samples_per_identity=4, seed=0)
    model = Embedder(ResNetEncoder(1, channels=(4,), strides=(1,), embedding_dim=8))
    scores = iter([0.9, 0.5, 0.4])  # validation prefers epoch 1, and says so ever louder
    trainer = Trainer(model, TripletLoss(), spec={"name": "resnet"}, out_dir=out_dir, epochs=3,
                      optimizer={"name": "adamw", "lr": 1e-2}, scheduler={"name": "cosine"},
                      validate=lambda m: {"val_rank_1": next(scores)}, monitor="val_rank_1", mode="max", keep=keep)  # fmt: skip
    result = trainer.fit(data, PKSampler(data.labels, 4, 2, seed=0))
    saved, _ = read_weights(out_dir / "encoder.safetensors")
    final = model.encoder.state_dict()
    same = all(torch.equal(saved[k], final[k].cpu()) for k in final)
    return result, same


def test_keep_last_saves_the_final_epoch_and_best_the_preferred_one(tmp_path):
    last, last_is_final = _fit(tmp_path / "last", "last")
    assert last["best_epoch"] == 3 and last_is_final
    assert [row["val_rank_1"] for row in last["history"]] == [0.9, 0.5, 0.4], "validation is still scored and logged"
    best, best_is_final = _fit(tmp_path / "best", "best")
    assert best["best_epoch"] == 1 and not best_is_final


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
