"""Helpers for testing convgen and its plugins through the command line, as users run it."""

from __future__ import annotations


def invoke(*args):
    """Run the convgen CLI in-process; returns click's Result (``exit_code``, ``stdout``, ``stderr``)."""
    from typer.testing import CliRunner

    from convgen.cli import app

    return CliRunner().invoke(app, [str(a) for a in args])


def one_line_error(result, *contains: str) -> None:
    """Assert a user error: non-zero exit, one ``error: ...`` line on stderr holding ``contains``, no traceback."""
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.exit_code != 0 and len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.output
    for text in contains:
        assert text in lines[0], lines[0]


def tiny_encoder_weights(path, spatial_dims: int, in_channels: int = 1):
    """Save a small seeded ResNet encoder (16-d embeddings) to ``path``: weights for recipe tests."""
    import torch

    from convgen.weights import build_encoder, encoder_spec, save_encoder

    torch.manual_seed(0)
    spec = encoder_spec({"name": "resnet", "channels": [8, 16], "strides": [1, 2], "embedding_dim": 16},
                        spatial_dims=spatial_dims, in_channels=in_channels)  # fmt: skip
    save_encoder(path, build_encoder(spec), spec)
    return path


def gallery_doors(tmp_path, prefix: str, noun: str, weights, people, queries, calibration, threshold: float = 2.0, extra=()) -> dict:
    """Enrol, search and calibrate through a domain's gallery recipes and through ``convgen gallery``; compare.

    ``people`` is a folder with one sub-folder per person, ``calibration`` another one
    (people not enrolled), ``queries`` a list of files. Gallery A is enrolled by the
    recipe ``PREFIX-enrol`` and gallery B by ``convgen gallery create/enrol``; each is
    searched by the other door. Returns the largest embedding difference between the two
    galleries, both doors' identify results, and both calibrated thresholds.
    """
    import json

    import numpy as np

    from convgen.gallery.store import Gallery

    def ok(result):
        assert result.exit_code == 0, result.output + result.stderr
        return result

    a, b = tmp_path / "recipe.db", tmp_path / "cli.db"
    ok(invoke("run", f"{prefix}-enrol", f"gallery={a}", f"weights={weights}", f"folder={people}", *extra, "-o", tmp_path / "enrol"))
    ok(invoke("gallery", "create", b, "--weights", weights))
    ok(invoke("gallery", "enrol", b, people))
    with Gallery.open(a) as ga, Gallery.open(b) as gb:
        names = [p.name for p in ga.people()]
        assert names == [p.name for p in gb.people()]
        delta = max(float(np.abs(ga.embeddings_of(n) - gb.embeddings_of(n)).max()) for n in names)
        pipelines = (ga.pipeline, gb.pipeline)
    listed = "[" + ",".join(str(q) for q in queries) + "]"
    ok(invoke("run", f"{prefix}-identify", f"gallery={b}", f"{noun}s={listed}", f"threshold={threshold}", "-o", tmp_path / "identify"))
    by_recipe = json.loads((tmp_path / "identify" / "summary.json").read_text())["results"]
    by_cli = json.loads(ok(invoke("gallery", "identify", a, *queries, "--threshold", threshold, "--json")).stdout)["results"]
    ok(invoke("run", f"{prefix}-calibrate", f"gallery={a}", f"folder={calibration}", "far=0.25", "-o", tmp_path / "calibrate"))
    tau_recipe = json.loads((tmp_path / "calibrate" / "summary.json").read_text())["threshold"]
    tau_cli = json.loads(ok(invoke("gallery", "calibrate", b, calibration, "--far", "0.25", "--json")).stdout)["threshold"]
    return {"delta": delta, "pipelines": pipelines, "recipe": by_recipe, "cli": by_cli, "thresholds": (tau_recipe, tau_cli)}
