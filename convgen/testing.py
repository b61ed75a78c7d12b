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
