"""Recipe configs: load a YAML file or a recipe name, apply dotted overrides, validate, dump.

Rules a user can rely on:

- A recipe's ``defaults`` list every key it accepts; any other key is an error that shows
  the key's full dotted path and suggests the closest known key.
- Component blocks (``encoder:``, ``dataset:``, ...) hold ``name`` plus the chosen
  component's keyword arguments; keys are checked against that component's signature.
  When a block's ``name`` is changed, default keys the new component does not take are
  dropped; keys the user set are never dropped silently.
- Override values are parsed as YAML scalars (``batch_size=64`` is an int,
  ``channels=[8,16]`` a list, ``weights=null`` is None). YAML is read with ``safe_load``:
  a recipe file cannot import or evaluate code.
- Outputs stay in the run's folder: a recipe's ``output`` key names a file relative to
  ``-o OUT``, and an absolute path or a ``..`` is refused, so a recipe file from someone
  else cannot make a run write elsewhere. (Input paths are read where they point.)
"""

from __future__ import annotations

import copy
import inspect
import math
import os
import re
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any, Callable

import yaml

from convgen.errors import ConfigError, PathError
from convgen.signatures import accepted_kwargs, check_component_kwargs
from convgen.signatures import suggest as _suggest

RECIPE_KEY = "recipe"
MAX_RECIPE_BYTES = 1 << 20
OUTPUT_KEYS = ("output",)  # keys naming a file the run writes, relative to its folder


def parse_override(text: str) -> tuple[tuple[str, ...], Any]:
    """``"encoder.channels=[8, 16]"`` -> ``(("encoder", "channels"), [8, 16])``."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {text!r} must look like key=value (for example batch_size=64)")
    path = tuple(part.strip() for part in key.split("."))
    if any(not part for part in path):
        raise ConfigError(f"override key {key!r} has an empty part; write dotted keys like encoder.embedding_dim=64")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        raise ConfigError(f"cannot parse the value of override {key}: {raw[:80]!r} is not valid YAML ({_yaml_problem(exc)})") from None
    except RecursionError:
        raise ConfigError(f"the value of override {key} is nested too deeply; a recipe value needs only a few levels") from None
    return path, value


def _yaml_problem(exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    return f"line {mark.line + 1}, column {mark.column + 1}: {problem}" if mark else problem


def read_yaml(path: Path) -> dict:
    """Read a recipe file (safe YAML, a mapping at the top)."""
    if not path.exists():
        raise PathError(f"recipe file not found: {path}; check the path, or give a recipe name (see `convgen recipes list`)")
    if path.is_dir():
        raise PathError(f"{path} is a directory; give a recipe YAML file or a recipe name")
    try:
        if path.stat().st_size > MAX_RECIPE_BYTES:
            raise ConfigError(f"recipe file {path} is {path.stat().st_size} bytes; a recipe is a few lines (at most {MAX_RECIPE_BYTES})")
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"cannot parse recipe file {path}: {_yaml_problem(exc)}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"recipe file {path} is not UTF-8 text") from None
    except RecursionError:
        raise ConfigError(f"recipe file {path} is nested too deeply; a recipe needs only a few levels") from None
    except OSError as exc:
        from convgen.errors import describe_os_error

        raise ConfigError(f"cannot read recipe file {path}: {describe_os_error(exc)}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"recipe file {path} must hold a mapping of keys (recipe: NAME, ...), not {type(data).__name__}")
    return data


def is_recipe_file(spec: str) -> bool:
    """A YAML file name, or a path to a file; a bare word is a recipe name."""
    return spec.endswith((".yaml", ".yml")) or (("/" in spec or os.sep in spec) and Path(spec).is_file())


def _type_name(value) -> str:
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "a list", tuple: "a list", dict: "a mapping"}.get(
        type(value), type(value).__name__
    )


def _shown(default) -> str:
    return repr(list(default) if isinstance(default, tuple) else default)


def _fits(default, value) -> bool:
    """Does ``value`` have the type of ``default`` (an int is a number; a tuple a list)?"""
    if isinstance(default, bool):
        return isinstance(value, bool)
    if isinstance(default, int):
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(default, float):
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if isinstance(default, (list, tuple)):
        return isinstance(value, (list, tuple))
    if isinstance(default, dict):
        return isinstance(value, dict)
    return isinstance(value, type(default))


_SCIENTIFIC = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def coerce(default, value):
    """``1e-3`` for a number key: YAML 1.1 reads scientific notation without a dot as text."""
    if isinstance(default, float) and isinstance(value, str) and _SCIENTIFIC.fullmatch(value.strip()):
        return float(value)
    return value


def _check_type(path: str, default, value) -> None:
    """``value`` must have its default's type; a list's items that of the default's items."""
    if default is None:
        return
    if value is None:
        leaf = path.rpartition(".")[2]
        if (isinstance(default, (int, float, list, tuple)) or leaf in RANGES) and path not in _nullable_keys():
            raise ConfigError(f"key {path!r} expects {_type_name(default)} (like {_shown(default)}), got null")
        return
    if not _fits(default, value):
        raise ConfigError(f"key {path!r} expects {_type_name(default)} (like {_shown(default)}), got {value!r}")
    if isinstance(default, (list, tuple)) and default and len({type(d) for d in default}) == 1:
        for item in value:
            if not _fits(default[0], item):
                raise ConfigError(f"key {path!r} expects a list of {_type_name(default[0]).split(' ', 1)[1]}s (like {list(default)!r}), got {value!r}")


def _nullable_keys() -> set[str]:
    """Dotted keys that some recipe defaults to null (``units``, ``dataset.max_per_class``,
    ``seconds``...): null means "all" or "automatic" there, so it stays allowed for that key
    in every recipe (``encoder.channels`` is never null, so null is refused there)."""
    from convgen.registry import get_registry

    found = {"seed"}  # seed=null: do not seed (convgen.runtime.seed_everything)

    def walk(node: dict, prefix: str) -> None:
        for key, value in node.items():
            if value is None:
                found.add(f"{prefix}{key}")
            elif isinstance(value, dict):
                walk(value, f"{prefix}{key}.")

    recipes = get_registry("recipe")
    for name in recipes:
        walk(recipes.get(name).defaults, "")
    return found


# Ranges of numeric keys, by leaf name or full dotted path (the path wins), in interval
# notation; for a list the range applies to each item. Types come from the defaults (the
# recipe's, or the component's signature); these bound what a type cannot.
RANGES = {
    "spatial_dims": "[1, 3]", "epochs": "[1, 1000000]", "batch_size": "[1, 10000000]", "embedding_dim": "[1, 65536]",
    "channels": "[1, 16384]", "in_channels": "[1, 16384]", "filters": "[1, 16384]", "strides": "[1, 64]",
    "convs": "[1, 64]", "kernel_size": "[1, 64]", "kernel_sizes": "[1, 1024]", "stem_kernel": "[1, 64]",
    "stem_stride": "[1, 64]", "subunits": "[1, 64]", "head_grid": "[1, 64]", "dropout": "[0, 1)",
    "size": "[1, 65536]", "style_size": "[1, 65536]", "input_size": "[1, 65536]", "identities": "[1, 10000000]",
    "samples_per_identity": "[1, 1000000]", "motifs": "[1, 1024]", "motif_size": "[1, 1024]", "noise": "[0, inf)",
    "iterations": "[1, 100000000]", "top_k": "[1, 1000000]", "lr": "(0, inf)", "weight_decay": "[0, inf)", "momentum": "[0, 1]",
    "gamma": "(0, inf)", "warmup_epochs": "[0, 1000000]", "margin": "[0, inf)", "grad_clip": "[0, inf)",
    "val_fraction": "(0, 1)", "threshold": "[0, inf)", "fpir": "(0, 1)", "far": "(0, 1)", "seed": "[-9223372036854775808, 18446744073709551615]",
    "sampler.p": "[2, 1000000]", "sampler.k": "[2, 1000000]", "alpha": "[0, inf)", "beta": "[0, inf)", "tv": "[0, inf)",
    "lowpass": "[0, inf)", "lowpass_sigma": "(0, 1000000]",
    "memory_budget_gb": "(0, inf)", "max_pairs": "[1, 1000000000]", "folds": "[2, 1000000]", "episodes": "[1, 100000000]",
    "n_way": "[2, 1000000]", "k_shot": "[1, 1000000]", "queries": "[1, 1000000]", "n_fft": "[2, 1048576]", "hop": "[1, 1048576]",
    "n_mels": "[1, 4096]", "sample_rate": "(0, 10000000]", "fs": "(0, 10000000]", "snapshot_every": "[0, 100000000]",
    "milestones": "[0, 1000000]",
    "open_set_fraction": "[0, 1]",
    "seconds": "(0, 1000000000]",
    "fs_csv": "(0, 10000000]",
}  # fmt: skip
MAX_SAMPLE_ELEMENTS = 2**28  # one sample of a size key (size ** spatial_dims): 1 GiB as float32
MAX_DEPTH = 16  # nesting of a config: real ones need 3


def _interval(text: str) -> tuple[float, float, bool, bool]:
    low, high = (float(x) for x in text[1:-1].split(","))
    return low, high, text[0] == "(", text[-1] == ")"


def _check_range(path: str, value) -> None:
    rule = RANGES.get(path) or RANGES.get(path.rpartition(".")[2])
    items = value if isinstance(value, (list, tuple)) else [value]
    for item in items:
        if rule is not None and isinstance(item, str):
            raise ConfigError(f"key {path!r} expects {'numbers' if isinstance(value, (list, tuple)) else 'a number'} in {rule}, got {value!r}")
        if isinstance(item, bool) or not isinstance(item, (int, float)):
            continue
        if isinstance(item, float) and not math.isfinite(item):  # (an int is finite, however long)
            raise ConfigError(f"key {path!r} must be a finite number, got {value!r}")
        if rule is None:
            continue
        low, high, open_low, open_high = _interval(rule)
        if item < low or item > high or (open_low and item == low) or (open_high and item == high):
            where = "each item of " if isinstance(value, (list, tuple)) else ""
            raise ConfigError(f"key {path!r} is out of range: {where}{path.rpartition('.')[2]} must be in {rule}, got {value!r}")


def check_values(path: str, value, depth: int = 0) -> None:
    """Every number finite and within its key's range, nesting bounded (recursive over mappings)."""
    if depth > MAX_DEPTH:
        raise ConfigError(f"key {path!r} is nested more than {MAX_DEPTH} levels deep; a recipe needs only a few")
    if isinstance(value, dict):
        for key, sub in value.items():
            check_values(f"{path}.{key}" if path else str(key), sub, depth + 1)
        return
    if isinstance(value, (list, tuple)):
        for item in value:
            if isinstance(item, (dict, list, tuple)):
                check_values(path, item, depth + 1)
    _check_range(path, value)


def _check_sample_sizes(config: dict) -> None:
    """A size key must not ask for a sample larger than ``MAX_SAMPLE_ELEMENTS`` (terabytes fail late and slowly)."""
    dims = config.get("spatial_dims") if isinstance(config.get("spatial_dims"), int) else None

    def walk(path, node):
        for key, value in node.items():
            here = f"{path}.{key}" if path else key
            if isinstance(value, dict):
                walk(here, value)
            elif key in ("size", "style_size", "input_size") and value is not None:
                sizes = value if isinstance(value, (list, tuple)) else [value] * (dims or 1)
                if all(isinstance(s, int) and not isinstance(s, bool) for s in sizes) and math.prod(sizes) > MAX_SAMPLE_ELEMENTS:
                    raise ConfigError(
                        f"key {here!r}={value!r} asks for samples of {math.prod(sizes):.3g} elements each "
                        f"(at most {MAX_SAMPLE_ELEMENTS:.3g}); choose a smaller size"
                    )

    walk("", config)


def _check_device(value, available: bool = False) -> None:
    """``device`` must name a device; with ``available`` (when a run starts, not when a config
    is resolved: a config written for a GPU machine resolves anywhere) it must also exist here."""
    if not isinstance(value, str):
        return
    if not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", value):
        raise ConfigError(f"unknown device {value!r}; use auto, cpu, cuda or cuda:N")
    if available and value.startswith("cuda"):
        import torch

        index = int(value.partition(":")[2] or 0)
        if not torch.cuda.is_available():
            raise ConfigError(f"device={value} but this machine has no usable CUDA GPU; use device=auto or device=cpu")
        if index >= torch.cuda.device_count():
            raise ConfigError(f"device={value} but this machine has {torch.cuda.device_count()} CUDA GPU(s); use cuda:0 to cuda:{torch.cuda.device_count() - 1}")


def check_device_available(config: dict) -> None:
    """Refuse ``device=cuda`` (or ``cuda:N``) on a machine without that GPU, before a run writes anything."""
    _check_device(config.get("device"), available=True)


def check_component_types(kind: str, factory: Callable, block: dict, where: str) -> None:
    """Each argument of a component block has the type of the factory's default for it, where
    the factory annotates that argument with one type (``channels: Sequence[int] = (32, 64)``;
    an unannotated or union argument may take other types, so only its range is checked)."""
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return
    for key, value in block.items():
        param = params.get(key)
        if param is None or param.default is inspect.Parameter.empty or param.annotation is inspect.Parameter.empty:
            continue
        annotation = str(param.annotation)
        if not any(mark in annotation for mark in ("|", "Union", "Optional", "Any")):
            block[key] = value = coerce(param.default, value)
            _check_type(f"{where}.{key}", param.default, value)


class _Resolver:
    """Applies user values on top of a recipe's defaults, remembering what the user set."""

    def __init__(self, recipe):
        self.recipe = recipe
        self.config = copy.deepcopy(recipe.defaults)
        self.explicit: set[tuple[str, ...]] = set()

    def set(self, path: tuple[str, ...], value) -> None:
        if len(path) == 1 and path[0] in self.recipe.components and isinstance(value, str):
            path = (path[0], "name")  # encoder=vgg is short for encoder.name=vgg
        node, defaults = self.config, self.recipe.defaults
        for depth, key in enumerate(path[:-1]):
            here = ".".join(path[: depth + 1])
            in_component = depth >= 1 and path[0] in self.recipe.components
            if key not in node:
                if in_component:
                    node[key] = {}
                else:
                    self._unknown(path[: depth + 1], node)
            if node[key] is None and depth == 0 and key in self.recipe.components:
                node[key] = {}  # a component left out by default (encoder: null), now being set
            if not isinstance(node[key], dict):
                raise ConfigError(f"key {here!r} is {_type_name(node[key])}, not a mapping; cannot set {'.'.join(path)!r}")
            node = node[key]
            defaults = defaults.get(key, {}) if isinstance(defaults, dict) else {}
        last = path[-1]
        in_component = len(path) >= 2 and path[0] in self.recipe.components
        if last not in node and not in_component:
            self._unknown(path, node)
        if isinstance(value, dict) and isinstance(node.get(last), dict):
            for key, sub in value.items():
                self.set(path + (str(key),), sub)
            return
        if not in_component and isinstance(defaults, dict):
            value = coerce(defaults.get(last), value)
            _check_type(".".join(path), defaults.get(last), value)
        node[last] = value
        self.explicit.add(path)

    def _unknown(self, path: tuple[str, ...], node: dict):
        known = [k for k in node if not (len(path) == 1 and k == RECIPE_KEY)]
        raise ConfigError(
            f"unknown key {'.'.join(path)!r} for recipe {self.recipe.name!r}{_suggest(path[-1], known)} "
            f"(known keys here: {', '.join(known) or 'none'})"
        )

    def finish(self) -> dict:
        from convgen.registry import get_registry

        for key, kind in self.recipe.components.items():
            block = self.config.get(key)
            if block is None:
                continue
            if not isinstance(block, dict) or not isinstance(block.get("name"), str):
                raise ConfigError(f"key {key!r} must be a mapping with a 'name' (for example {key}.name=...), got {block!r}")
            registry = get_registry(kind)
            if block["name"] not in registry:
                raise ConfigError(f"{key}.name: {registry.unknown_message(block['name'])}")
            accepted = accepted_kwargs(registry.get(block["name"]))
            for arg in list(block):
                if arg == "name" or accepted is None or arg in accepted:
                    continue
                if (key, arg) in self.explicit:
                    check_component_kwargs(kind, block["name"], registry.get(block["name"]), {arg: block[arg]}, where=key)
                del block[arg]  # a default meant for the previous component
            check_component_types(kind, registry.get(block["name"]), block, key)
        check_values("", self.config)
        _check_sample_sizes(self.config)
        _check_device(self.config.get("device"))
        check_output_paths(self.config)
        return self.config


def check_output_paths(config: dict) -> None:
    """Refuse an ``output`` that would leave the run's folder (absolute, ``~`` or ``..``)."""
    for key in OUTPUT_KEYS:
        if key not in config:
            continue
        value = config[key]
        if not isinstance(value, str) or not value.strip():
            raise ConfigError(f"key {key!r} must name the file to write inside the run's folder (like stylized.png), got {value!r}")
        escapes = any(p.is_absolute() or p.drive or ".." in p.parts for p in (PurePosixPath(value), PureWindowsPath(value)))
        if escapes or value.startswith("~"):
            raise ConfigError(
                f"{key}={value!r} leaves the run's folder; give a file name relative to it without '..' "
                f"(like {PurePosixPath(value).name or 'result.npy'}) and choose the folder with -o OUT"
            )


def resolve(recipe_spec: str, overrides: list[str] = ()) -> tuple[Any, dict]:
    """Resolve ``convgen run RECIPE_SPEC OVERRIDES...`` into ``(recipe, config)``."""
    from convgen.registry import get_registry

    recipes = get_registry("recipe")
    if is_recipe_file(recipe_spec):
        path = Path(recipe_spec)
        data = read_yaml(path)
        name = data.pop(RECIPE_KEY, None)
        if not isinstance(name, str):
            raise ConfigError(f"recipe file {path} needs a top-level 'recipe:' key naming the recipe to run (known: {', '.join(recipes)})")
        if name not in recipes:
            raise ConfigError(f"{path}: {recipes.unknown_message(name)}")
        resolver = _Resolver(recipes.get(name))
        for key, value in data.items():
            resolver.set((str(key),), value)
    else:
        if recipe_spec not in recipes:
            raise ConfigError(recipes.unknown_message(recipe_spec) + "; or give a path to a recipe .yaml file")
        resolver = _Resolver(recipes.get(recipe_spec))
    for text in overrides:
        path, value = parse_override(text)
        resolver.set(path, value)
    return resolver.recipe, resolver.finish()


def dump(recipe_name: str, config: dict) -> str:
    """The YAML text of a resolved config; ``convgen run`` on it reproduces the run."""
    return yaml.safe_dump({RECIPE_KEY: recipe_name, **config}, sort_keys=False, default_flow_style=None)
