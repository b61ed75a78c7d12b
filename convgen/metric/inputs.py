"""A recipe's dataset and encoder, made to fit each other: the dataset built from its block
(through the input pipeline that the weights record), the encoder built or loaded for the
samples' dimensions and channels; and what the dataset says happened to its inputs.

Every recipe that embeds a dataset (train, evaluate, embed, visualize, a plugin's own)
starts here, so that one file is turned into encoder inputs the same way by all of them.
"""

from __future__ import annotations

from rich.console import Console

from convgen import pipelines, registry
from convgen.errors import ConfigError, DataError, ModelMismatchError
from convgen.weights import build_encoder, encoder_spec, fingerprint, load_encoder, read_pipeline


def prepare_encoder(config: dict, spatial_dims: int, in_channels: int):
    """The recipe's encoder (random, or from ``weights``): ``(encoder, spec, fingerprint)``."""
    context = {"spatial_dims": spatial_dims, "in_channels": in_channels}
    if config["encoder"] is None and not config["weights"]:
        raise ConfigError("no encoder: set weights=PATH (a trained encoder.safetensors) or an encoder block (encoder.name=resnet)")
    if config["weights"]:
        expected = {**context, **config["encoder"]} if config["encoder"] else None
        encoder, spec, fp = load_encoder(config["weights"], expected)
    else:
        spec = encoder_spec(config["encoder"], **context)
        encoder = build_encoder(spec)
        fp = fingerprint(spec, encoder.state_dict())
    if (spec.get("spatial_dims"), spec.get("in_channels")) != (spatial_dims, in_channels):
        raise ModelMismatchError(
            f"encoder {spec['name']} takes spatial_dims={spec.get('spatial_dims')}, in_channels={spec.get('in_channels')} "
            f"but the data has spatial_dims={spatial_dims}, in_channels={in_channels}"
        )
    return encoder, spec, fp


def recorded_inputs(config: dict) -> tuple[dict, dict]:
    """``config`` with its dataset set from the input pipeline the weights record, and what was done.

    A dataset made by the same pipeline (say ``faces``) takes the recorded options (size,
    channels, ...), so an encoder trained at 28 × 28 is not fed 56 × 46; the recipe's
    ``pipeline`` block (``pipeline.name=faces pipeline.size=[56,46]``) changes them
    explicitly. The second value, for the run's report, holds the recorded pipeline, the
    overrides, each dataset key that changed, and a notice for weights that record none.
    """
    recorded = read_pipeline(config["weights"]) if config.get("weights") else None
    overrides = config.get("pipeline") or None
    dataset, changes = pipelines.dataset_config(config["dataset"], recorded, overrides)
    info = {"pipeline": recorded, "pipeline_overrides": overrides or {}, "dataset_changes": changes}
    if config.get("weights") and not recorded:
        info["notice"] = f"notice: {config['weights']} records no input pipeline (saved by an older convgen); the dataset's settings are used as given"
    return {**config, "dataset": dataset}, info


def print_inputs(info: dict) -> None:
    """After a successful run: how the inputs followed the recorded pipeline (stderr, one line each)."""
    console = Console(stderr=True)
    for line in [f"inputs: {change}" for change in info["dataset_changes"]] + [info.get("notice")] * bool(info.get("notice")):
        console.print(line, highlight=False, soft_wrap=True)


def input_report(dataset) -> dict | None:
    """What the dataset says happened to its inputs (its optional ``input_report()``), for the run's report."""
    report = getattr(dataset, "input_report", None)
    return report() if callable(report) else None


def print_input_summary(dataset, name: str) -> None:
    """The dataset's one line for people (its optional ``input_summary()``), on stderr at the end of a run."""
    summary = getattr(dataset, "input_summary", None)
    line = summary() if callable(summary) else None
    if line:
        Console(stderr=True).print(f"{name}: {line}", highlight=False, soft_wrap=True)


def sample_sources(dataset) -> list[str] | None:
    """Each sample's source: its file (one file, one sample), its session/record name, or None."""
    for attribute in ("files", "sessions"):
        values = getattr(dataset, attribute, None)
        if values is not None and len(values) == len(dataset):
            return [str(v) for v in values]
    return None


def dataset_and_encoder(config: dict):
    """The recipe's dataset and an encoder that fits its samples: ``(dataset, encoder, spec, fingerprint)``.

    ``spatial_dims`` and ``in_channels`` come from the first sample, so one recipe serves
    1D, 2D and 3D data alike.
    """
    dataset = registry.build("dataset", config["dataset"], spatial_dims=config["spatial_dims"])
    if len(dataset) == 0:
        raise DataError(f"the dataset {config['dataset']['name']!r} is empty; check its settings or folder")
    first, _ = dataset[0]
    return (dataset, *prepare_encoder(config, first.ndim - 1, first.shape[0]))
