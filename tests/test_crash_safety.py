"""Crash safety: a training run killed with SIGKILL resumes to the result of an uninterrupted run.

A killed enrolment is covered in test_gallery.py
(test_a_killed_enrolment_leaves_exactly_the_committed_people, test_two_writers_lose_nothing).
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import run_convgen
from convgen.weights import check_safetensors

EPOCHS = 5
TRAIN = ["train", f"epochs={EPOCHS}", "spatial_dims=1", "dataset.size=64", "dataset.identities=24", "dataset.samples_per_identity=6",
         "encoder.channels=[8, 16]", "encoder.strides=[1, 2]", "encoder.embedding_dim=16", "device=cpu", "seed=7"]  # fmt: skip


def _epoch_of(checkpoint: Path) -> int:
    return json.loads(check_safetensors(checkpoint, "checkpoint")["__metadata__"]["trainer"])["epoch"]


def _losses(out: Path) -> list[dict]:
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in row.items() if k != "samples_per_s"} for row in rows]  # timing differs, nothing else may


def _convgen_process(*args) -> subprocess.Popen:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("CONVGEN_")}
    exe = Path(sys.executable).parent / "convgen"
    return subprocess.Popen([str(exe), *map(str, args)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=environ)


def test_sigkill_during_training_then_resume_equals_an_uninterrupted_run(tmp_path):
    straight = tmp_path / "straight"
    done = run_convgen("run", *TRAIN, "-o", straight)
    assert done.returncode == 0, done.stderr

    killed = tmp_path / "killed"
    proc = _convgen_process("run", *TRAIN, "-o", killed)
    checkpoint = killed / "checkpoint.safetensors"
    deadline = time.monotonic() + 240
    while not checkpoint.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    assert proc.poll() is None, f"the run ended before it could be killed: {proc.stderr.read().decode()[-500:]}"
    os.kill(proc.pid, signal.SIGKILL)  # no handler, no cleanup: as a power cut would leave it
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    reached = _epoch_of(checkpoint)  # the checkpoint on disk is whole: its header checks out
    assert 0 <= reached < EPOCHS, reached  # 0: killed in epoch 1, after the starting weights were scored

    resumed = run_convgen("run", killed, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert _epoch_of(checkpoint) == EPOCHS
    a, b = load_file(str(straight / "checkpoint.safetensors")), load_file(str(checkpoint))
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), f"{key} differs after resuming from epoch {reached}"
    assert _losses(killed) == _losses(straight)
    for name in ("encoder.safetensors",):
        assert load_file(str(killed / name)).keys() == load_file(str(straight / name)).keys()
        for key, value in load_file(str(killed / name)).items():
            assert torch.equal(value, load_file(str(straight / name))[key]), key
    summary = lambda out: {k: v for k, v in json.loads((out / "summary.json").read_text()).items() if "per_s" not in k}
    assert summary(killed) == summary(straight)


def test_an_interrupted_checkpoint_write_leaves_the_previous_checkpoint(tmp_path, monkeypatch):
    """A crash while the next checkpoint is written (here: the writer dies half-way) keeps the last one whole."""
    from convgen import config
    from convgen.metric import engine
    from convgen.running import run_recipe

    real_save, calls = engine.save_file, []

    def third_save_dies(tensors, path, metadata=None):  # the start's checkpoint, epoch 1's, then epoch 2's dies
        calls.append(path)
        if len(calls) <= 2:
            return real_save(tensors, path, metadata=metadata)
        Path(path).write_bytes(b"\x00" * 100)  # a partial file, as a killed writer would leave
        raise KeyboardInterrupt

    monkeypatch.setattr(engine, "save_file", third_save_dies)
    out = tmp_path / "run"
    recipe, resolved = config.resolve(TRAIN[0], [a if not a.startswith("epochs=") else "epochs=2" for a in TRAIN[1:]])
    with pytest.raises(KeyboardInterrupt):
        run_recipe(recipe, resolved, out)
    assert len(calls) == 3 and _epoch_of(out / "checkpoint.safetensors") == 1
    assert not [p.name for p in out.iterdir() if p.name.endswith(".tmp")], "the temporary file is cleaned up"
    monkeypatch.setattr(engine, "save_file", real_save)
    run_recipe(recipe, resolved, out, resume=True)
    assert _epoch_of(out / "checkpoint.safetensors") == 2
