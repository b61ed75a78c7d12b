"""The ECG plugin through convgen's public surface: records, peaks, beats, datasets, recipes."""

import json
import shutil

import numpy as np
import pytest
import torch
import wfdb
from convgen_ecg.datasets import EcgRecords, sample_dir
from convgen_ecg.preprocess import EcgPipeline, bandpass
from convgen_ecg.signals import read_record, write_csv

from convgen import io
from convgen.errors import DataError
from convgen.testing import invoke, one_line_error, tiny_encoder_weights

ECGID = sample_dir("ecgid")
MITDB = sample_dir("mitdb")
BEAT_SYMBOLS = set("NLRBAaJSVrFejnE/fQ?")


def test_a_wfdb_record_is_read_in_physical_units():
    record = read_record(MITDB / "100.hea")
    assert record.fs == 360 and record.leads == ["MLII", "V5"] and record.signal.shape == (2, 21600)
    reference = wfdb.rdrecord(str(MITDB / "100")).p_signal.T
    np.testing.assert_allclose(record.signal, reference)
    assert torch.equal(io.read(MITDB / "100.hea"), torch.as_tensor(reference, dtype=torch.float32))  # the registered reader


def test_csv_round_trip_with_a_time_column(tmp_path):
    record = read_record(ECGID / "Person_01" / "rec_1.hea", max_seconds=4)
    path = write_csv(tmp_path / "trace.csv", record.signal, record.fs, record.leads)
    back = read_record(path)
    assert back.fs == pytest.approx(500) and back.leads == record.leads
    np.testing.assert_allclose(back.signal, record.signal, rtol=1e-5, atol=1e-5)


def test_csv_without_time_needs_the_rate(tmp_path):
    path = tmp_path / "plain.csv"
    path.write_text("\n".join(f"{np.sin(i / 10):.4f}" for i in range(2000)))
    with pytest.raises(DataError, match="sampling rate is unknown"):
        read_record(path)
    assert read_record(path, fs=250).signal.shape == (1, 2000)


@pytest.mark.parametrize("record", ["100", "119"])
def test_r_peaks_match_the_cardiologists_annotations(record):
    """XQRS on the bundled MIT-BIH minutes finds every annotated beat within 75 ms, and nothing else."""
    pipeline = EcgPipeline.of()
    raw = read_record(MITDB / f"{record}.hea")
    found = pipeline(raw).peaks / pipeline.fs
    annotation = wfdb.rdann(str(MITDB / record), "atr")
    truth = np.array([s for s, sym in zip(annotation.sample, annotation.symbol) if sym in BEAT_SYMBOLS]) / raw.fs
    truth = truth[(truth > 0.3) & (truth < raw.seconds - 0.3)]  # a beat cut by the record's edge is not a miss
    hits = np.array([np.min(np.abs(found - t)) <= 0.075 for t in truth])
    extra = np.array([np.min(np.abs(truth - f)) > 0.075 for f in found if 0.3 < f < raw.seconds - 0.3])
    assert hits.mean() >= 0.99 and extra.mean() <= 0.01


def test_the_band_pass_removes_wander_and_keeps_the_beat_band():
    fs = 250
    t = np.arange(0, 20, 1 / fs)
    wander, beat_band = np.sin(2 * np.pi * 0.1 * t), np.sin(2 * np.pi * 10 * t)
    out = bandpass(wander + beat_band, fs)
    middle = slice(2 * fs, -2 * fs)
    assert np.abs(out[middle] - beat_band[middle]).max() < 0.05


def test_beat_windows_are_centred_on_the_r_peak():
    pipeline = EcgPipeline.of(fs=250, before=0.2, after=0.4)
    prepared = pipeline(read_record(MITDB / "100.hea"))
    assert prepared.windows.shape[1:] == (1, 150)
    assert ((prepared.windows[:, 0].abs().argmax(1) - 50).abs() <= 2).all()  # the R wave at 0.2 s × 250 Hz
    fixed = EcgPipeline.of(windows="fixed", window_seconds=2, hop_seconds=1)(read_record(MITDB / "100.hea"))
    assert fixed.windows.shape == (59, 1, 500)


def test_bad_records_are_one_line_errors(tmp_path):
    shutil.copy(MITDB / "100.hea", tmp_path / "100.hea")
    one_line_error(invoke("run", "ecg-peaks", f"record={tmp_path / '100.hea'}", "-o", tmp_path / "a"), "data file 100.dat is missing")
    (tmp_path / "100.dat").write_bytes((MITDB / "100.dat").read_bytes()[:5000])
    one_line_error(invoke("run", "ecg-peaks", f"record={tmp_path / '100.hea'}", "-o", tmp_path / "b"), "truncated")
    flat = tmp_path / "flat.csv"
    flat.write_text("time,ECG\n" + "".join(f"{i / 250:.4f},0.5\n" for i in range(5000)))
    one_line_error(invoke("run", "ecg-peaks", f"record={flat}", "-o", tmp_path / "c"), "flat line")
    holes = tmp_path / "holes.csv"
    holes.write_text("time,ECG\n" + "".join(f"{i / 250:.4f},{np.nan if i == 700 else np.sin(i / 9):.4f}\n" for i in range(5000)))
    one_line_error(invoke("run", "ecg-peaks", f"record={holes}", "-o", tmp_path / "d"), "NaN")
    one_line_error(invoke("run", "ecg-peaks", f"record={MITDB / '100.hea'}", "ecg.resample=false", "-o", tmp_path / "e"),
                   "sampled at 360 Hz but fs=250")  # fmt: skip
    result = invoke("run", "ecg-peaks", f"record={tmp_path}", "-o", tmp_path / "f")
    one_line_error(result, "is a folder")
    assert result.exit_code == 6  # a path error, not a bad file
    assert not (tmp_path / "a" / "peaks.png").exists()


def test_peaks_recipe_writes_the_plot_and_the_times(tmp_path):
    result = invoke("run", "ecg-peaks", "-o", tmp_path)
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "summary.json").read_text())
    times = np.loadtxt(tmp_path / "peaks.csv", skiprows=1)
    assert summary["beats"] == len(times) == 74 and 60 < summary["heart_rate_bpm"] < 90
    assert (tmp_path / "peaks.png").stat().st_size > 10_000


def test_the_dataset_groups_records_by_person_with_the_recording_as_session():
    data = EcgRecords()
    assert len(data.classes) == 10 and data.classes[0] == "Person_01"
    sessions = {(data.classes[y], s) for y, s in zip(data.labels, data.sessions)}
    assert len({s for _, s in sessions}) == len(data.records) == 25
    assert all(s.startswith(person + "/") for person, s in sessions)
    x, y = data[0]
    assert x.shape == (1, 175) and y == 0
    two = EcgRecords(people=["Person_04", "Person_09"])
    assert two.classes == ["Person_04", "Person_09"] and set(two.labels) == {0, 1}
    with pytest.raises(DataError, match="no records of Person_99"):
        EcgRecords(people=["Person_99"])


def test_one_long_record_per_person_becomes_sessions():
    data = EcgRecords(root=str(MITDB), session_seconds=20)
    assert data.classes == ["100", "119"]
    assert sorted(set(data.sessions)) == ["100@0", "100@1", "100@2", "119@0", "119@1", "119@2"]


@pytest.fixture
def ecg_weights(tmp_path):
    return tiny_encoder_weights(tmp_path / "ecg.safetensors", spatial_dims=1)


def test_evaluate_enrols_from_one_record_and_identifies_from_the_others(tmp_path, ecg_weights):
    result = invoke("run", "ecg-evaluate", f"weights={ecg_weights}", "-o", tmp_path / "run")
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    cross = report["cross_session"]
    assert cross["people_with_2_sessions"] == 10 and cross["sessions"] == 25
    assert cross["closed_set"]["sessions"]["probes"] == 15  # every record after each person's first
    assert 0 <= cross["closed_set"]["sessions"]["rank_1"] <= 1 and "0.1" in cross["open_set"]["fpir"]


def test_enrol_verify_identify_whole_records(tmp_path, ecg_weights):
    db = tmp_path / "people.db"
    first, second = ECGID / "Person_01" / "rec_1.hea", ECGID / "Person_01" / "rec_2.hea"
    result = invoke("run", "ecg-enrol", f"gallery={db}", f"weights={ecg_weights}", "name=p1", f"records=[{first}]", "-o", tmp_path / "r1")
    assert result.exit_code == 0, result.output
    result = invoke("run", "ecg-verify", f"gallery={db}", "name=p1", f"record={first}", "threshold=0.01", "-o", tmp_path / "r2")
    assert result.exit_code == 0 and json.loads((tmp_path / "r2" / "summary.json").read_text())["match"] is True
    result = invoke("run", "ecg-identify", f"gallery={db}", f"records=[{first},{second}]", "threshold=0.0", "-o", tmp_path / "r3")
    answers = json.loads((tmp_path / "r3" / "summary.json").read_text())["results"]
    assert answers[0]["name"] == "p1" and answers[0]["distance"] < 1e-6 and answers[1]["distance"] > 0
    one_line_error(invoke("run", "ecg-identify", f"gallery={db}", "records=[]", "-o", tmp_path / "r4"), "no records given")


def test_train_recipe_runs_on_the_bundled_sample(tmp_path):
    result = invoke("run", "ecg-train", "epochs=1", "encoder.channels=[8,16,16]", "-o", tmp_path)
    assert result.exit_code == 0, result.output
    assert (tmp_path / "encoder.safetensors").is_file()


def test_stylize_two_traces_lowers_the_style_distance(tmp_path):
    result = invoke("run", "ecg-stylize", "iterations=60", "seconds=4", "-o", tmp_path)
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["style_reduction"] >= 0.9
    out = read_record(tmp_path / "stylized.csv")
    assert out.fs == pytest.approx(250) and out.signal.shape == (1, 1000)
    assert (tmp_path / "preview.png").is_file()


def test_visualize_finds_the_top_heartbeat_segments(tmp_path):
    result = invoke("run", "ecg-visualize", "encoder.channels=[8,16,16]", "top_k=4", "units=2", "-o", tmp_path)
    assert result.exit_code == 0, result.output
    assert list(tmp_path.glob("*.png"))


def test_several_folders_pool_their_people():
    data = EcgRecords(root=[str(ECGID), str(MITDB)], people=["ecgid/Person_04", "mitdb/119"])
    assert data.classes == ["ecgid/Person_04", "mitdb/119"]
    assert {s.split("/")[0] for s in data.sessions} == {"ecgid", "mitdb"}
