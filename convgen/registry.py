"""Named registries of components, filled by the plugins' ``register_*`` hooks.

Each kind (encoder, loss, style_cost, dataset, pipeline, recipe, reader, writer) has one
`Registry`. A registry is built the first time it is asked for, by calling every
plugin's hook with a ``register`` callback that knows which plugin is calling, so that a
duplicate name can name both plugins.
"""

from __future__ import annotations

import difflib
import functools
from dataclasses import dataclass
from typing import Any, Callable

from convgen.errors import ConfigError

#: registry kind -> (hook name, what one entry is called in messages)
KINDS: dict[str, tuple[str, str]] = {
    "encoder": ("register_encoders", "encoder"),
    "loss": ("register_losses", "loss"),
    "style_cost": ("register_style_costs", "style cost"),
    "dataset": ("register_datasets", "dataset"),
    "pipeline": ("register_pipelines", "pipeline"),
    "recipe": ("register_recipes", "recipe"),
    "reader": ("register_readers", "reader for file type"),
    "writer": ("register_writers", "writer for file type"),
}


@dataclass(frozen=True)
class Entry:
    name: str
    obj: Any
    plugin: str


class Registry:
    """Name -> component, with errors that list the known names and suggest the closest."""

    def __init__(self, kind: str):
        self.kind = kind
        self.label = KINDS[kind][1] if kind in KINDS else kind
        self._entries: dict[str, Entry] = {}

    def add(self, name: str, obj: Any, plugin: str) -> None:
        if not isinstance(name, str) or not name:
            raise ConfigError(f"plugin {plugin!r} registered a {self.label} with an invalid name {name!r}")
        if name in self._entries:
            first = self._entries[name].plugin
            raise ConfigError(
                f"{self.label} {name!r} is registered twice: by plugin {first!r} and by plugin {plugin!r}; "
                f"uninstall or disable one of them (CONVGEN_LOAD_PLUGINS)"
            )
        self._entries[name] = Entry(name, obj, plugin)

    def get(self, name: str) -> Any:
        return self.entry(name).obj

    def entry(self, name: str) -> Entry:
        try:
            return self._entries[name]
        except (KeyError, TypeError):
            raise ConfigError(self.unknown_message(name)) from None

    def unknown_message(self, name: str) -> str:
        known = sorted(self._entries)
        close = difflib.get_close_matches(str(name), known, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        listing = ", ".join(known) if known else "none (is the plugin that provides it installed?)"
        return f"unknown {self.label} {name!r}{hint} (known: {listing})"

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self):
        return iter(sorted(self._entries))

    def __len__(self) -> int:
        return len(self._entries)

    def entries(self) -> list[Entry]:
        return [self._entries[name] for name in sorted(self._entries)]


def _file_type_adder(registry: Registry, plugin: str) -> Callable:
    def register(suffixes, function: Callable) -> None:
        for suffix in [suffixes] if isinstance(suffixes, str) else list(suffixes):
            suffix = suffix.lower()
            if not suffix.startswith("."):
                suffix = "." + suffix
            registry.add(suffix, function, plugin)

    return register


def _build(kind: str) -> Registry:
    from convgen.plugins import get_plugin_manager

    pm = get_plugin_manager()
    registry = Registry(kind)
    hook = getattr(pm.hook, KINDS[kind][0])
    for impl in hook.get_hookimpls():  # registration order: the core first, then entry points
        plugin = pm.get_name(impl.plugin)
        if kind in ("reader", "writer"):
            register = _file_type_adder(registry, plugin)
        elif kind == "recipe":
            from convgen.recipes import Recipe

            def register(name, run, _plugin=plugin, **kwargs):
                registry.add(name, Recipe(name=name, run=run, **kwargs), _plugin)
        else:

            def register(name, factory, _plugin=plugin):
                registry.add(name, factory, _plugin)

        impl.function(register=register)
    return registry


@functools.cache
def get_registry(kind: str) -> Registry:
    """The registry of one kind (``"encoder"``, ``"dataset"``, ...), built on first use."""
    if kind not in KINDS:
        raise ConfigError(f"unknown component kind {kind!r}; known: {', '.join(KINDS)}")
    return _build(kind)


def get(kind: str, name: str) -> Any:
    """Look up one component: ``get("encoder", "resnet")``."""
    return get_registry(kind).get(name)


def build(kind: str, spec: dict, **context) -> Any:
    """Build a component from a ``{"name": ..., **kwargs}`` block of a recipe.

    ``context`` (such as the recipe's ``spatial_dims``) fills arguments that the
    component takes and the block leaves unset; other context keys are ignored.
    """
    from convgen.config import accepted_kwargs, check_component_kwargs

    spec = dict(spec)
    name = spec.pop("name", None)
    factory = get(kind, name)
    check_component_kwargs(kind, name, factory, spec, where=kind)
    accepted = accepted_kwargs(factory)
    for key, value in context.items():
        if (accepted is None or key in accepted) and key not in spec:
            spec[key] = value
    return factory(**spec)


def reset() -> None:
    get_registry.cache_clear()
