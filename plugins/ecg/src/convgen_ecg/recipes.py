"""ECG recipes: the core's engines with heartbeat defaults, gallery recipes on records, peak plots.

``ecg-train``, ``ecg-evaluate`` and ``ecg-visualize`` are the core recipes with an ECG
dataset (one window per heartbeat, the recording as session) and a 1D encoder.
``ecg-enrol`` / ``ecg-verify`` / ``ecg-identify`` embed a whole record as the mean of its
beats. ``ecg-peaks`` shows what the pipeline detected; ``ecg-stylize`` is 1D Gram style
transfer between two cleaned traces.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from rich.console import Console

from convgen.plugin_api import (ConfigError, atomic_write_text, print_style_costs, register_gallery_recipes, run_style_transfer,
                                write_sample, write_style_report)
from convgen_ecg import pretrained
from convgen_ecg.datasets import sample_dir
from convgen_ecg.plots import plot_peaks
from convgen_ecg.preprocess import EcgPipeline
from convgen_ecg.signals import read_record, write_csv

# One window per heartbeat: 0.25 s before the R peak to 0.45 s after (P wave to T wave), at 250 Hz,
# each scaled by its own RMS: a recording's amplitude drifts between days, a beat's shape much less.
PIPELINE = {"fs": 250.0, "resample": True, "lead": 0, "band": [0.5, 40.0], "windows": "beats", "before": 0.25, "after": 0.45,
            "window_seconds": 2.0, "hop_seconds": 1.0, "max_windows": None, "scale": "window"}  # fmt: skip
ECG = {"name": "ecg", "root": None, "person_from": "auto", "people": None, "folds": 5, "fold": None, "exclude_fold": False,
       "max_records_per_person": None, "max_seconds": None, "session_seconds": None, "fs_csv": None, **PIPELINE}  # fmt: skip
# From the ablations in docs/ecg.md: small (three strided stages), the head keeps where in the
# beat a feature is (head_grid 8: beats are aligned on the R peak), and a 256-d embedding trained
# gently (lr 0.0005 below): on 23 people never seen it is the steadiest across splits (0.872 ± 0.023
# over 5 seeds, where 32-d at lr 0.002 gave 0.797 ± 0.124 and raw beats 0.874 ± 0.062).
ENCODER = {"name": "resnet", "channels": [16, 32, 64], "strides": [2, 2, 2], "stem_kernel": 7, "stem_stride": 2, "subunits": 1,
           "embedding_dim": 256, "head_grid": 8}  # fmt: skip
# What changes between two recordings of one person: alignment by a few ms (`shift`),
# residual baseline wander (`drift`) and noise; amplitude is taken out by the pipeline's
# per-window scale. Never mirrored: a reversed beat is no heartbeat.
AUGMENT = {"flip": [], "shift": 0.03, "rotate": 0.0, "scale": 0.0, "contrast": 0.0, "drift": 0.2, "noise": 0.03}


# Each recipe below is the core recipe it is based on (register(..., based_on=...)) with these keys changed.
TRAIN = dict(
    spatial_dims=1, dataset=ECG, encoder=ENCODER, augment=AUGMENT, epochs=20, sampler={"p": 16, "k": 8},
    batch_size=128, optimizer={"name": "adamw", "lr": 0.0005, "weight_decay": 0.0005, "momentum": 0.9},
    loss={"name": "triplet", "margin": 0.2, "mining": "all"},
)  # fmt: skip
# Without weights=..., ecg-evaluate measures the encoder shipped with the plugin (convgen_ecg.pretrained).
EVALUATE = dict(spatial_dims=1, dataset=ECG, encoder=None, weights=str(pretrained.path()), batch_size=256)
VISUALIZE = dict(spatial_dims=1, dataset=ECG, encoder=ENCODER, top_k=9)
PEAKS = {"record": str(sample_dir("mitdb") / "100.hea"), "fs_csv": None, "seconds": 10.0, "ecg": PIPELINE}
# Person 1's heartbeat drawn with the texture of person 4's (ECG-ID, bundled).
STYLIZE = dict(
    spatial_dims=1, content=str(sample_dir("ecgid") / "Person_01" / "rec_1.hea"),
    style=str(sample_dir("ecgid") / "Person_04" / "rec_1.hea"), seconds=8.0, ecg=PIPELINE, fs_csv=None,
    encoder={"name": "vgg", "channels": [32, 64, 128, 128], "convs": [1, 1, 1, 1], "pool": "avg", "embedding_dim": 64},
    iterations=150, init="content", output="stylized.csv",  # init: bench_style.py's quality table
)  # fmt: skip


def _record(path, config: dict):
    return read_record(path, fs=config.get("fs_csv"))


def peaks(config: dict, out_dir: Path) -> dict:
    """The cleaned lead with its detected R peaks (``peaks.png``) and their times (``peaks.csv``)."""
    if not config["record"]:
        raise ConfigError("record=PATH is missing (a WFDB .hea or a CSV file)")
    record = _record(config["record"], config)
    prepared = EcgPipeline.of(**config["ecg"])(record)
    lead = config["ecg"]["lead"]
    lead = lead if isinstance(lead, str) else record.leads[lead]
    plot_peaks(out_dir / "peaks.png", prepared, f"{Path(config['record']).name}: {record.seconds:.1f} s, lead {lead}", seconds=config["seconds"])
    times = prepared.peaks / prepared.fs
    atomic_write_text(out_dir / "peaks.csv", "r_peak_seconds\n" + "".join(f"{t:.4f}\n" for t in times))
    rr = np.diff(times)
    rate = float(60.0 / np.median(rr)) if len(rr) else None
    Console().print(f"{len(times)} R peaks in {record.seconds:.1f} s" + (f", heart rate {rate:.0f} bpm" if rate else "") +
                    f"; wrote {out_dir / 'peaks.png'}")  # fmt: skip
    return {"record": str(config["record"]), "seconds": record.seconds, "beats": len(times), "windows": len(prepared.windows),
            "heart_rate_bpm": rate}  # fmt: skip


def stylize_traces(config: dict, out_dir: Path) -> dict:
    """1D Gram style transfer between two cleaned traces (the first ``seconds`` of each record).

    The traces go through the ECG pipeline's cleaning (band-pass, rate, scale), then the
    core's style transfer; the result is written as CSV with a time column (or any file
    type a plugin writes), with the core's preview and cost plots.
    """
    pipeline = EcgPipeline.of(**config["ecg"])
    traces = {}
    for key in ("content", "style"):
        if not config[key]:
            raise ConfigError(f"{key}=PATH is missing (a WFDB .hea or a CSV record)")
        trace = pipeline.clean(_record(config[key], config))[: int(round(config["seconds"] * pipeline.fs))]
        traces[key] = torch.as_tensor(trace[None].copy(), dtype=torch.float32)

    def write(path: Path, sample: torch.Tensor) -> None:
        if path.suffix.lower() == ".csv":
            write_csv(path, sample.numpy(), pipeline.fs, ["ECG (stylized)"])
        else:
            write_sample(path, sample)

    output = out_dir / config["output"]
    snapshot = lambda step, sample: write(out_dir / "snapshots" / f"iter_{step:05d}{output.suffix}", sample)  # noqa: E731
    result, summary, _ = run_style_transfer(config, traces["content"], [traces["style"]], on_snapshot=snapshot)
    write(output, result.generated)
    write_style_report(out_dir, traces["content"], [traces["style"]], result)
    print_style_costs(result, f"ecg-stylize: {summary['encoder']} on {config['seconds']:g} s at {pipeline.fs:g} Hz")
    Console().print(f"wrote {output}")
    return {"output": str(output), **summary, "fs": pipeline.fs}


def register(register_recipe) -> None:
    """Every ECG recipe, registered through the plugin's ``register_recipes`` hook."""
    register_recipe("ecg-train", based_on="train", defaults=TRAIN,
                    description="Train a heartbeat encoder with the triplet loss (default: the bundled ECG-ID sample).")
    register_recipe("ecg-evaluate", based_on="evaluate", defaults=EVALUATE,
                    description="Enrol each person from ONE record, identify them from their others, reject strangers.")
    register_gallery_recipes(register_recipe, "ecg", {"name": "ecg", **PIPELINE, "fs_csv": None}, noun="record", what="ECG records",
                             encoder={"name": pretrained.NAME})  # a new gallery without weights=...: the shipped encoder
    register_recipe("ecg-peaks", peaks, defaults=PEAKS, description="Plot a record's cleaned trace with its detected R peaks.")
    register_recipe("ecg-stylize", stylize_traces, based_on="stylize", defaults=STYLIZE,
                    description="1D Gram style transfer between two ECG traces (CSV out, with plots).")
    register_recipe("ecg-visualize", based_on="visualize", defaults=VISUALIZE,
                    description="The heartbeat segments that most excite each unit of an ECG encoder.")
