"""Input pipelines: how ONE file becomes the encoder's input(s). Part of the model.

A pipeline is a registered name plus JSON-able options, e.g. ``{"name": "array",
"spatial_size": [28, 28]}`` or ``{"name": "faces", "size": [150, 150], "align": "dlib",
...}``. Built, it maps a file path to a float tensor ``(n, C, *spatial)`` with ``n >= 1``
inputs (an ECG record gives one input per heartbeat, a photo one face crop), and a file's
embedding is the L2-normalised mean of its inputs' embeddings (`embed_files`).

Why it is part of the model: an encoder trained on 28 × 28 crops or 16 kHz audio gives
meaningless distances on 56 × 46 crops or 8 kHz audio, without any error. So training
records the pipeline that made its samples in the weights file
(``convgen.weights.save_encoder(..., pipeline=...)``; a dataset says which one through its
``pipeline_spec`` attribute), and every command that embeds files (``embed``,
``evaluate``, galleries) uses the recorded pipeline. Changing a recorded setting takes an
explicit override (``pipeline.name=NAME pipeline.KEY=VALUE`` in a recipe, ``--pipeline-option KEY=VALUE`` on
the command line), and the run writes it in its outputs. Weights saved before pipelines
were recorded keep today's behaviour, with a one-line notice.

Plugins register pipelines through the ``register_pipelines`` hook; the core registers
``array`` (any file a reader reads, checked and optionally resized).
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Callable

from convgen.errors import ConfigError, DataError
from convgen.signatures import check_component_kwargs, full_spec, jsonable

#: The pipeline of weights saved before pipelines were recorded: a file read as one sample.
LEGACY = {"name": "array"}


def pipeline_spec(spec: dict | None) -> dict:
    """The full spec of a pipeline: ``name`` plus every option, defaults filled in, JSON-able.

    A missing or unknown name, or an option the pipeline does not take, is a one-line
    `ConfigError` that lists what is known.
    """
    from convgen.registry import get

    if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
        raise ConfigError(f"a pipeline is a mapping with a 'name' (like {{'name': 'array'}}), got {spec!r}")
    options = dict(spec)
    name = options.pop("name")
    factory = get("pipeline", name)
    check_component_kwargs("pipeline", name, factory, options, where="pipeline")
    return full_spec("pipeline", name, factory, options)


def build_pipeline(spec: dict) -> Callable:
    """The callable ``pipeline(path) -> (n, C, *spatial)`` of a spec (checked first)."""
    from convgen.registry import get

    full = pipeline_spec(spec)
    return get("pipeline", full["name"])(**{k: v for k, v in full.items() if k != "name"})


def describe(spec: dict | None) -> str:
    """``faces(size=[150, 150], channels=3, ...)``: a pipeline in one line, for notices and tables."""
    if not spec:
        return "none"
    return f"{spec['name']}({', '.join(f'{k}={v}' for k, v in spec.items() if k != 'name')})"


def parse_options(texts) -> dict:
    """``["size=[28, 28]", "detect=false"]`` -> ``{"size": [28, 28], "detect": False}`` (YAML values)."""
    from convgen.config import parse_override

    options = {}
    for text in texts or []:
        path, value = parse_override(text)
        if len(path) != 1:
            raise ConfigError(f"a pipeline option is KEY=VALUE with a plain key (like size=[28,28]), got {text!r}")
        options[path[0]] = value
    return options


def resolve(recorded: dict | None, overrides: dict | None = None, fallback: dict | None = None) -> dict:
    """The pipeline a command uses, and why: ``{"pipeline", "recorded", "overrides", "notice"}``.

    ``recorded`` (from the weights file or the gallery) wins over ``fallback`` (the
    command's own default, for weights that record none; else `LEGACY`). ``overrides``
    are the user's explicit changes; ``name`` among them switches to another pipeline.
    ``notice`` is one line for the user when nothing was recorded, else None.
    """
    overrides = dict(overrides or {})
    notice = None
    if recorded:
        base = dict(recorded)
    else:
        base = dict(fallback or LEGACY)
        notice = (f"notice: the encoder records no input pipeline (weights saved by an older convgen, or trained on "
                  f"generated data); files go through {describe(pipeline_spec(base))}")  # fmt: skip
    if "name" in overrides and overrides["name"] != base.get("name"):
        base = {"name": overrides["name"]}  # another pipeline: none of the old one's options
    full = pipeline_spec({**base, **overrides})
    return {"pipeline": full, "recorded": bool(recorded), "overrides": jsonable(overrides), "notice": notice}


def embed_files(model, pipeline: Callable, files, encoder_spec: dict | None = None, batch_size: int = 32,
                show_progress: bool = False) -> "np.ndarray":  # noqa: F821  # fmt: skip
    """One L2-normalised embedding per file: the mean of the embeddings of its inputs.

    ``model`` is an `convgen.metric.embedder.Embedder` (normalised outputs). Inputs of
    several files are batched together (``batch_size`` inputs per forward pass);
    ``encoder_spec`` (``spatial_dims``, ``in_channels``) checks each file's inputs first,
    so that a file of the wrong shape is a one-line error that names it.
    """
    import numpy as np
    import torch
    import torch.nn.functional as F

    from convgen import progress

    files = list(files)
    if not files:
        raise DataError("no input files given")
    rows: list[torch.Tensor] = []
    pending: list[tuple[int, torch.Tensor]] = []  # (file index, inputs)

    def flush():
        if not pending:
            return
        batch = torch.cat([inputs for _, inputs in pending])
        with torch.no_grad():
            out = torch.cat([model(batch[i : i + batch_size]) for i in range(0, len(batch), batch_size)]).float().cpu()
        start = 0
        for _, inputs in pending:
            rows.append(F.normalize(out[start : start + len(inputs)].mean(0, keepdim=True), dim=1))
            start += len(inputs)
        pending.clear()

    was_training = model.training
    model.eval()
    try:
        bar = progress.bar("embedding", show=show_progress and len(files) > 1)
        with bar:
            task = bar.add_task("embedding", total=len(files), info="")
            queued = 0
            for index, file in enumerate(files):
                inputs = _inputs(pipeline, file, encoder_spec)
                pending.append((index, inputs))
                queued += len(inputs)
                if queued >= batch_size:
                    flush()
                    queued = 0
                bar.update(task, advance=1, info=Path(str(file)).name)
            flush()
    finally:
        model.train(was_training)
    return torch.cat(rows).numpy().astype(np.float32)


def _inputs(pipeline: Callable, file, encoder_spec: dict | None):
    import torch

    inputs = pipeline(Path(file))
    if not isinstance(inputs, torch.Tensor) or inputs.ndim < 3 or len(inputs) == 0:
        shape = tuple(inputs.shape) if isinstance(inputs, torch.Tensor) else type(inputs).__name__
        raise DataError(f"{file}: nothing to embed (the pipeline gave {shape}, not inputs (n, C, *spatial))")
    if encoder_spec and "spatial_dims" in encoder_spec and "in_channels" in encoder_spec:
        dims, channels = encoder_spec["spatial_dims"], encoder_spec["in_channels"]
        if inputs.ndim - 2 != dims or inputs.shape[1] != channels:
            raise DataError(
                f"{file}: a sample of shape {tuple(inputs.shape[1:])} does not fit the gallery's encoder, "
                f"which takes {channels} channel(s) and {dims} spatial axes"
            )
    return inputs.float()


# --------------------------------------------------------------------------- the core's pipeline


class ArrayPipeline:
    """``array``: a file read by the reader of its type as ONE input ``(1, C, *spatial)``.

    Args:
        spatial_size: resize (area interpolation) to this size: an int for every axis,
            or one value per axis; None keeps the file's size.
    """

    def __init__(self, spatial_size: int | list[int] | None = None):
        if spatial_size is not None:
            sizes = [spatial_size] if isinstance(spatial_size, int) else list(spatial_size) if isinstance(spatial_size, (list, tuple)) else []
            if not sizes or any(not isinstance(s, int) or isinstance(s, bool) or s < 1 for s in sizes):
                raise ConfigError(f"spatial_size must be a positive int or a list of them, got {spatial_size!r}")
        self.spatial_size = spatial_size

    def sample(self, path):
        """The file as one sample ``(C, *spatial)`` (what a dataset's item holds)."""
        import torch

        from convgen import io

        sample = io.read(path)
        if self.spatial_size is not None:
            from monai.transforms import Resize

            size = self.spatial_size
            dims = sample.ndim - 1
            size = [size] * dims if isinstance(size, int) else list(size) * dims if len(size) == 1 else list(size)
            if len(size) != dims:
                raise DataError(f"{path}: spatial_size {self.spatial_size} has {len(size)} axes but the sample has {dims}")
            sample = Resize(size, mode="area")(sample)
        return torch.as_tensor(sample, dtype=torch.float32)

    def __call__(self, path):
        return self.sample(path)[None]

    def preview(self, path):
        """A 2D sample as a picture (other dims: none)."""
        sample = self.sample(path)
        if sample.ndim != 3 or sample.shape[0] not in (1, 3):
            return None
        low, high = float(sample.min()), float(sample.max())
        return (sample - low) / (high - low) if high > low else sample * 0


# --------------------------------------------------------------------------- datasets


def of_dataset(dataset) -> dict | None:
    """The full pipeline spec that made a dataset's samples (its ``pipeline_spec``), or None."""
    while not hasattr(dataset, "pipeline_spec") and hasattr(dataset, "dataset"):  # Subset, Augmented
        dataset = dataset.dataset
    spec = getattr(dataset, "pipeline_spec", None)
    return pipeline_spec(spec) if spec else None


def dataset_config(dataset: dict, recorded: dict | None, overrides: dict | None = None) -> tuple[dict, list[str]]:
    """A recipe's ``dataset`` block with the recorded pipeline's options (then ``overrides``) applied.

    Only for a dataset that makes its samples with the same pipeline (its factory's
    ``pipeline_name``); its ``pipeline_options(options)`` (or, by default, the options
    whose names it takes as keyword arguments) says which dataset keys to set. Returns
    the block and one note per setting that changed, for the run's outputs.
    """
    from convgen.signatures import accepted_kwargs
    from convgen.registry import get

    if not recorded and not overrides:
        return dataset, []
    factory = get("dataset", dataset["name"])
    name = getattr(factory, "pipeline_name", None)
    spec = dict(recorded or {})
    if overrides:
        spec = resolve(recorded, overrides)["pipeline"] if recorded else {"name": name, **overrides}
    if name is None or spec.get("name") != name:
        if overrides:
            raise ConfigError(f"dataset {dataset['name']!r} does not make its samples with pipeline {spec.get('name')!r}; "
                              "pipeline options cannot apply to it")  # fmt: skip
        return dataset, []
    options = {k: v for k, v in spec.items() if k != "name"}
    mapper = getattr(factory, "pipeline_options", None)

    def dataset_keys(options: dict) -> dict:
        if mapper is not None:
            return mapper(options)
        accepted = accepted_kwargs(factory) or set(options)
        return {k: v for k, v in options.items() if k in accepted}

    wanted = dataset_keys(options)
    trained = dataset_keys({k: v for k, v in recorded.items() if k != "name"}) if recorded and recorded.get("name") == name else {}
    block, notes = dict(dataset), []
    try:
        defaults = {k: p.default for k, p in inspect.signature(factory).parameters.items() if p.default is not p.empty}
    except (TypeError, ValueError):
        defaults = {}
    for key, value in wanted.items():
        current = block.get(key, defaults.get(key))  # what the dataset would have used
        if isinstance(value, dict) and isinstance(current, dict):
            value = {**current, **value}
        if jsonable(current) != jsonable(value):
            why = "the encoder was trained so" if key in trained and jsonable(trained[key]) == jsonable(wanted[key]) else "your pipeline override"
            if isinstance(value, dict) and isinstance(current, dict):  # a block of settings: only those that change
                notes += [f"dataset.{key}.{k}: {current.get(k)!r} -> {v!r} ({why})" for k, v in value.items()
                          if jsonable(current.get(k)) != jsonable(v)]  # fmt: skip
            else:
                notes.append(f"dataset.{key}: {current!r} -> {value!r} ({why})")
        block[key] = value
    return block, notes
