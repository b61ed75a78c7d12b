"""The plugin API: the one module a convgen plugin imports (besides ``convgen.hookimpl``).

Everything here is public and kept stable; every other convgen module is internal and may
change. ``tests/test_plugin_api.py`` fails when a first-party plugin imports anything else.
The names come in groups:

- **errors**: raise these for bad input; the command line prints them as one line and exits
  non-zero (a `PathError` is a `DataError`).
- **files**: write through `atomic_path` / `atomic_write_text` so that nothing is ever
  half-written; `read_sample` / `write_sample` go through the reader or writer registered
  for a suffix; `load_npy` reads a ``.npy`` without pickle; `finite_json` makes a report
  JSON-safe (infinities become null).
- **datasets and components**: `LabelledDataset` is the base of a plugin's datasets;
  `build_component` builds any registered component from its ``{"name": ...}`` block.
- **encoders**: `TappedEncoder` exposes the layers that style transfer and visualisation
  tap; `check_dims` and `embedding_head` help an encoder factory.
- **weights**: load a saved encoder (`load_encoder`, `load_model`) and the input pipeline
  it records (`read_pipeline`).
- **embedding and evaluation**: embed samples (`Embedder`, `embed_dataset`,
  `prepare_encoder`), score them (`pairs_from_labels`, `roc`, `eer`, `knn_accuracy`) and
  plot the scores.
- **galleries**: `register_gallery_recipes` gives a domain its enrol / verify / identify /
  calibrate recipes; `Gallery`, `identify` and `calibrate` search one; `SearchIndex` and its
  helpers are the base of a search backend.
- **style**: `StyleTransfer` and its pieces, for a plugin that drives transfer itself; the
  memory-budgeted tile-by-tile engine (`check_style_budget`, `fitting_tile`,
  `style_statistics`, `stylize_tiles`, `style_distance`) for inputs too large for one pass;
  `run_style_transfer` / `write_style_report` / `print_style_costs`, what the ``stylize``
  recipe does with a config, for a plugin's own stylize run (its own file types).
- **recipes**: a plugin derives its recipes from the core's by name
  (``register("mine-train", based_on="train", defaults={...})``, see
  `convgen.hookspecs.register_recipes`), runs one from code with
  ``recipe("train").run(config, out_dir)``, which returns a `RecipeResult` (summary, report,
  the model, embeddings); the ``evaluation_readouts`` hook receives an `Evaluation` and
  returns a `Readout`. `with_changes`, `seed_everything`, `resolve_device` and
  `progress_bar` are what a recipe of its own needs.

Each name is imported when first used (``from convgen.plugin_api import DataError`` loads
``convgen.errors`` only), so a plugin that imports this module at its top stays cheap to load:
``convgen --help`` imports neither torch nor MONAI.
"""

from __future__ import annotations

import importlib

#: Public name -> where it lives: ``"module:attribute"``.
PUBLIC: dict[str, str] = {
    # errors
    "ConvgenError": "convgen.errors:ConvgenError",
    "ConfigError": "convgen.errors:ConfigError",
    "DataError": "convgen.errors:DataError",
    "PathError": "convgen.errors:PathError",
    "ModelMismatchError": "convgen.errors:ModelMismatchError",
    # files
    "atomic_path": "convgen.io:atomic_path",
    "atomic_write_text": "convgen.io:atomic_write_text",
    "read_sample": "convgen.io:read",
    "write_sample": "convgen.io:write",
    "load_npy": "convgen.io:load_npy",
    "finite_json": "convgen.io:finite_json",
    # datasets and components
    "LabelledDataset": "convgen.data:LabelledDataset",
    "build_component": "convgen.registry:build",
    # encoders
    "TappedEncoder": "convgen.nets.tapped:TappedEncoder",
    "check_dims": "convgen.nets.tapped:check_dims",
    "embedding_head": "convgen.nets.resnet:embedding_head",
    # weights
    "load_encoder": "convgen.weights:load_encoder",
    "load_model": "convgen.weights:load_model",
    "read_pipeline": "convgen.weights:read_pipeline",
    # embedding and evaluation
    "Embedder": "convgen.metric.embedder:Embedder",
    "embed_dataset": "convgen.metric.embedder:embed_dataset",
    "prepare_encoder": "convgen.metric.inputs:prepare_encoder",
    "pairs_from_labels": "convgen.metric.evaluation:pairs_from_labels",
    "roc": "convgen.metric.evaluation:roc",
    "eer": "convgen.metric.evaluation:eer",
    "knn_accuracy": "convgen.metric.evaluation:knn_accuracy",
    "plot_distance_histograms": "convgen.metric.plots:plot_distance_histograms",
    "plot_roc": "convgen.metric.plots:plot_roc",
    "plot_row": "convgen.visualize.figures:plot_row",
    # galleries
    "register_gallery_recipes": "convgen.gallery.recipes:register_gallery_recipes",
    "Gallery": "convgen.gallery.store:Gallery",
    "identify": "convgen.gallery.api:identify",
    "calibrate": "convgen.gallery.api:calibrate",
    "SearchIndex": "convgen.gallery.search:SearchIndex",
    "padded": "convgen.gallery.search:padded",
    "parse_options": "convgen.gallery.search:parse_options",
    "saved_state": "convgen.gallery.search:saved_state",
    "write_json": "convgen.gallery.search:write_json",
    # style
    "StyleTransfer": "convgen.style.transfer:StyleTransfer",
    "activation_bytes": "convgen.style.transfer:activation_bytes",
    "layer_weights": "convgen.style.transfer:layer_weights",
    "content_cost": "convgen.style.costs:content_cost",
    "frozen_layers": "convgen.style.frozen:frozen_layers",
    "StatisticCost": "convgen.style.costs:StatisticCost",
    "style_statistics": "convgen.style.tiled:style_statistics",
    "style_distance": "convgen.style.tiled:style_distance",
    "stylize_tiles": "convgen.style.tiled:stylize_tiles",
    "check_style_budget": "convgen.style.tiled:check_budget",
    "fitting_tile": "convgen.style.tiled:fitting_tile",
    "peak_rss_mib": "convgen.style.tiled:peak_rss_mib",
    "run_style_transfer": "convgen.style.from_config:transfer",
    "write_style_report": "convgen.style.from_config:write_report",
    "print_style_costs": "convgen.style.from_config:print_costs",
    # recipes
    "recipe": "convgen.registry:recipe",
    "RecipeResult": "convgen.running:RecipeResult",
    "Evaluation": "convgen.metric.reports:Evaluation",
    "Readout": "convgen.metric.reports:Readout",
    "with_changes": "convgen.registry:with_changes",
    "seed_everything": "convgen.runtime:seed_everything",
    "resolve_device": "convgen.runtime:resolve_device",
    "progress_bar": "convgen.progress:bar",
}

__all__ = [
    # errors
    "ConvgenError", "ConfigError", "DataError", "PathError", "ModelMismatchError",
    # files
    "atomic_path", "atomic_write_text", "read_sample", "write_sample", "load_npy", "finite_json",
    # datasets and components
    "LabelledDataset", "build_component",
    # encoders
    "TappedEncoder", "check_dims", "embedding_head",
    # weights
    "load_encoder", "load_model", "read_pipeline",
    # embedding and evaluation
    "Embedder", "embed_dataset", "prepare_encoder", "pairs_from_labels", "roc", "eer", "knn_accuracy",
    "plot_distance_histograms", "plot_roc", "plot_row",
    # galleries
    "register_gallery_recipes", "Gallery", "identify", "calibrate", "SearchIndex", "padded", "parse_options",
    "saved_state", "write_json",
    # style
    "StyleTransfer", "activation_bytes", "layer_weights", "content_cost", "frozen_layers", "StatisticCost",
    "style_statistics", "style_distance", "stylize_tiles", "check_style_budget", "fitting_tile", "peak_rss_mib",
    "run_style_transfer", "write_style_report", "print_style_costs",
    # recipes
    "recipe", "RecipeResult", "Evaluation", "Readout", "with_changes", "seed_everything", "resolve_device",
    "progress_bar",
]  # fmt: skip


def __getattr__(name: str):
    """Import a public name on first use and keep it (PEP 562)."""
    where = PUBLIC.get(name)
    if where is None:
        raise AttributeError(f"module 'convgen.plugin_api' has no attribute {name!r}; the public names are in its __all__")
    module, _, attribute = where.partition(":")
    value = importlib.import_module(module)
    if attribute:
        value = getattr(value, attribute)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
