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
import difflib
import inspect
import os
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any, Callable

import yaml

from convgen.errors import ConfigError, PathError

RECIPE_KEY = "recipe"
OUTPUT_KEYS = ("output",)  # keys naming a file the run writes, relative to its folder


def accepted_kwargs(factory: Callable) -> set[str] | None:
    """Keyword arguments a component factory takes (None: it takes ``**kwargs``)."""
    try:
        params = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):
        return None
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return None
    return {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}


def _suggest(name: str, known) -> str:
    close = difflib.get_close_matches(name, sorted(known), n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


def check_component_kwargs(kind: str, name: str, factory: Callable, kwargs: dict, where: str | None = None) -> None:
    """Raise a ConfigError naming the first argument ``factory`` does not take."""
    accepted = accepted_kwargs(factory)
    if accepted is None:
        return
    for key in kwargs:
        if key not in accepted:
            path = f"{where}.{key}" if where else key
            raise ConfigError(
                f"unknown key {path!r} for {kind} {name!r}{_suggest(key, accepted)} "
                f"({kind} {name!r} takes: {', '.join(sorted(accepted)) or 'nothing'})"
            )


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
        raise ConfigError(f"cannot parse the value of override {key}: {raw!r} is not valid YAML ({_yaml_problem(exc)})") from None
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
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"cannot parse recipe file {path}: {_yaml_problem(exc)}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"recipe file {path} is not UTF-8 text") from None
    if not isinstance(data, dict):
        raise ConfigError(f"recipe file {path} must hold a mapping of keys (recipe: NAME, ...), not {type(data).__name__}")
    return data


def is_recipe_file(spec: str) -> bool:
    """A YAML file name, or a path to a file; a bare word is a recipe name."""
    return spec.endswith((".yaml", ".yml")) or (("/" in spec or os.sep in spec) and Path(spec).is_file())


def _type_name(value) -> str:
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "a list", dict: "a mapping"}.get(
        type(value), type(value).__name__
    )


def _check_type(path: str, default, value) -> None:
    if default is None or value is None:
        return
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif isinstance(default, float):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    elif isinstance(default, (list, tuple)):
        ok = isinstance(value, (list, tuple))
    elif isinstance(default, dict):
        ok = isinstance(value, dict)
    else:
        ok = isinstance(value, type(default))
    if not ok:
        raise ConfigError(f"key {path!r} expects {_type_name(default)} (like {default!r}), got {value!r}")


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
