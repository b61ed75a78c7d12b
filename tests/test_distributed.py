"""Two processes under torchrun (gloo, CPU) compute the same loss and gradients as one
process on the concatenated batch, and the train recipe runs unchanged under torchrun."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

sys.path.insert(0, str(Path(__file__).parent))
import ddp_worker  # noqa: E402

HERE = Path(__file__).parent


def torchrun(*args, cwd=None):
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVGEN_")}
    env["OMP_NUM_THREADS"] = "1"
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", *map(str, args)],
                          capture_output=True, text=True, env=env, cwd=cwd, timeout=600)  # fmt: skip


@pytest.mark.parametrize("mining", ["semi-hard", "batch-hard"])
def test_two_processes_match_one_on_the_concatenated_batch(tmp_path, mining):
    out = tmp_path / "ddp.safetensors"
    result = torchrun(HERE / "ddp_worker.py", out, mining)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    ddp = load_file(str(out))

    model, loss_fn = ddp_worker.build({"name": "triplet", "mining": mining})
    x, y = ddp_worker.global_batch()
    loss = loss_fn(model(x), y)
    loss.backward()
    assert torch.equal(ddp["labels"], y)
    assert torch.allclose(ddp["loss"], loss.detach().reshape(1), atol=1e-6), (ddp["loss"], loss)
    for name, p in model.named_parameters():
        assert torch.allclose(ddp[f"grad.{name}"], p.grad, atol=1e-6, rtol=1e-4), name


def test_train_recipe_runs_under_torchrun(tmp_path):
    out = tmp_path / "run"
    result = torchrun("-m", "convgen", "run", "train", "epochs=2", "spatial_dims=1", "dataset.size=32",
                      "dataset.identities=12", "dataset.samples_per_identity=6", "encoder.channels=[4, 8]",
                      "encoder.strides=[1, 2]", "device=cpu", "-o", out)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [0, 1, 2] and all("val_eer" in r for r in rows)  # epoch 0: the start, scored on rank 0
    assert (out / "encoder.safetensors").exists() and (out / "checkpoint.safetensors").exists()
