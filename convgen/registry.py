"""Named registries of components, filled by the plugins' ``register_*`` hooks.

Each kind (encoder, loss, style_cost, dataset, pipeline, baseline, recipe, reader, writer,
search_backend) has one
`Registry`. A registry is built the first time it is asked for, by calling every
plugin's hook with a ``register`` callback that knows which plugin is calling, so that a
duplicate name can name both plugins.

A plugin may register a ``"package.module:attribute"`` reference instead of the object, as
entry points do, and declare recipes by name and description (``register.lazy``): listing
what is registered (``convgen recipes list``, ``convgen plugins``) then imports no heavy
module, and each component is imported the first time it is used.
"""

from __future__ import annotations

import copy
import difflib
import functools
import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from convgen.errors import ConfigError
from convgen.signatures import check_component_kwargs, fill_context

#: registry kind -> (hook name, what one entry is called in messages)
KINDS: dict[str, tuple[str, str]] = {
    "encoder": ("register_encoders", "encoder"),
    "loss": ("register_losses", "loss"),
    "style_cost": ("register_style_costs", "style cost"),
    "dataset": ("register_datasets", "dataset"),
    "pipeline": ("register_pipelines", "pipeline"),
    "baseline": ("register_baselines", "baseline"),
    "recipe": ("register_recipes", "recipe"),
    "reader": ("register_readers", "reader for file type"),
    "writer": ("register_writers", "writer for file type"),
    "search_backend": ("register_search_backends", "search backend"),
}


@dataclass(frozen=True)
class Recipe:
    """A registered recipe (kind ``recipe``); `convgen.running.run_recipe` runs one.

    Attributes:
        name: what ``convgen run NAME`` calls it.
        run: ``run(config, out_dir) -> RecipeResult | summary dict | None``
            (see `convgen.running.RecipeResult`).
        defaults: the complete default config; its keys are the keys a user may set.
        components: top-level keys that name registry components, and their kind.
        description: one line for ``convgen recipes list``.
        based_on: the recipe this one was derived from (``register(..., based_on="train")``).
    """

    name: str
    run: Callable[[dict, Path], Any]
    defaults: dict = field(default_factory=dict)
    components: dict[str, str] = field(default_factory=dict)
    description: str = ""
    based_on: str | None = None


def with_changes(defaults: dict, **changes) -> dict:
    """A deep copy of a recipe's ``defaults`` with top-level keys replaced (no state shared)."""
    out = copy.deepcopy(defaults)
    out.update(copy.deepcopy(changes))
    return out


def resolve(reference: str) -> Any:
    """The object that a ``"package.module:attribute"`` reference names, imported now."""
    module_name, colon, attribute = reference.partition(":")
    if not (module_name and colon and attribute):
        raise ConfigError(f"{reference!r} is not a 'package.module:attribute' reference")
    obj = importlib.import_module(module_name)
    for part in attribute.split("."):
        obj = getattr(obj, part)
    return obj


class _Deferred:
    """A component built by ``load()`` the first time it is used."""

    def __init__(self, load: Callable[[], Any]):
        self.load = load


class Entry:
    """One registered component: its name, the plugin that registered it, a one-line
    description (recipes), and the object, imported on first use if registered by reference."""

    def __init__(self, name: str, obj: Any, plugin: str, description: str = ""):
        self.name, self.plugin, self.description = name, plugin, description
        self._obj = obj

    @property
    def obj(self) -> Any:
        if isinstance(self._obj, str):
            self._obj = _Deferred(functools.partial(resolve, self._obj))
        if isinstance(self._obj, _Deferred):
            try:
                self._obj = self._obj.load()
            except ModuleNotFoundError as exc:  # an optional dependency of the plugin is missing
                raise ConfigError(f"{self.name!r} from plugin {self.plugin!r} cannot be loaded: {exc}; install what it needs") from exc
        return self._obj

    @property
    def loaded(self) -> bool:
        """Whether the object has been imported (listing names never imports it)."""
        return not isinstance(self._obj, (str, _Deferred))

    def __repr__(self) -> str:
        return f"Entry({self.name!r}, plugin={self.plugin!r}, loaded={self.loaded})"


class Registry:
    """Name -> component, with errors that list the known names and suggest the closest."""

    def __init__(self, kind: str):
        self.kind = kind
        self.label = KINDS[kind][1] if kind in KINDS else kind
        self._entries: dict[str, Entry] = {}
        self._groups: list[_RecipeGroup] = []  # declared recipes whose register function has not run yet

    def add(self, name: str, obj: Any, plugin: str, description: str = "") -> None:
        """Add ``obj`` (or a ``"package.module:attribute"`` reference to it) under ``name``."""
        if not isinstance(name, str) or not name:
            raise ConfigError(f"plugin {plugin!r} registered a {self.label} with an invalid name {name!r}")
        if name in self._entries:
            first = self._entries[name].plugin
            raise ConfigError(
                f"{self.label} {name!r} is registered twice: by plugin {first!r} and by plugin {plugin!r}; "
                f"uninstall or disable one of them (CONVGEN_LOAD_PLUGINS)"
            )
        self._entries[name] = Entry(name, obj, plugin, description)

    def get(self, name: str) -> Any:
        return self.entry(name).obj

    def entry(self, name: str) -> Entry:
        if name not in self:
            raise ConfigError(self.unknown_message(name))
        return self._entries[name]

    def _load_groups(self) -> bool:
        """Run every pending declared-recipe function (they may register undeclared names)."""
        pending, self._groups = self._groups, []
        for group in pending:
            group.load()
        return bool(pending)

    def unknown_message(self, name: str) -> str:
        self._load_groups()
        known = sorted(self._entries)
        close = difflib.get_close_matches(str(name), known, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        listing = ", ".join(known) if known else "none (is the plugin that provides it installed?)"
        return f"unknown {self.label} {name!r}{hint} (known: {listing})"

    def __contains__(self, name: object) -> bool:
        try:
            return name in self._entries or (self._load_groups() and name in self._entries)
        except TypeError:  # unhashable
            return False

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


def _recipe(name: str, run, options: dict, lookup: Callable[[str], Recipe]):
    """Build one `Recipe`; with ``based_on``, from the parent's run, defaults and components
    (``lookup``: a recipe by name, loading it first if it is deferred)."""
    options = dict(options)
    parent_name, without = options.pop("based_on", None), tuple(options.pop("without", ()))
    defaults = options.get("defaults")
    defaults = resolve(defaults) if isinstance(defaults, str) else defaults  # a reference to the dict or to a function
    if callable(defaults):  # a function that returns the dict (it may look other recipes up by name)
        options["defaults"] = defaults()
    elif defaults is not None:
        options["defaults"] = defaults
    if parent_name is None:
        if run is None or without:
            raise ConfigError(f"recipe {name!r} needs a run function" if run is None else f"recipe {name!r}: without= needs based_on=")
        return Recipe(name=name, run=resolve(run) if isinstance(run, str) else run, **options)
    if parent_name in _DERIVING:
        raise ConfigError(f"recipe {name!r} is based on {parent_name!r}, which is based on {name!r}: recipes cannot derive in a circle")
    _DERIVING.add(name)
    try:
        parent = lookup(parent_name)
    except ConfigError as exc:
        raise ConfigError(f"recipe {name!r} is based on {parent_name!r}: {exc}") from None
    finally:
        _DERIVING.discard(name)
    if unknown := [key for key in without if key not in parent.defaults]:
        raise ConfigError(f"recipe {name!r}: without={unknown} names keys that recipe {parent_name!r} does not have")
    inherited = {key: value for key, value in parent.defaults.items() if key not in without}
    options["defaults"] = with_changes(inherited, **(options.get("defaults") or {}))
    options["components"] = {key: kind for key, kind in {**parent.components, **options.get("components", {})}.items()
                             if key in options["defaults"]}  # fmt: skip
    run = parent.run if run is None else resolve(run) if isinstance(run, str) else run
    return Recipe(name=name, run=run, based_on=parent_name, **options)


#: Recipes whose parent is being looked up (a derivation circle would otherwise recurse for ever).
_DERIVING: set[str] = set()


class _RecipeGroup:
    """Recipes a plugin declares by name and description, registered by one function of a
    module that is imported only when one of them is first used."""

    def __init__(self, registry: Registry, reference: str, plugin: str, declared: dict[str, str]):
        self.registry, self.reference, self.plugin, self.declared = registry, reference, plugin, declared
        self.recipes: dict | None = None

    def load(self) -> dict:
        if self.recipes is None:
            found = {}

            def register(name, run=None, **options):
                if name in found:
                    raise ConfigError(f"recipe {name!r} is registered twice by plugin {self.plugin!r}")
                found[name] = _recipe(name, run, options, lambda parent: found.get(parent) or self.registry.get(parent))

            resolve(self.reference)(register)
            self.recipes = found
            for name, recipe in found.items():
                if name not in self.declared:  # works, but `recipes list` misses it until declared
                    self.registry.add(name, recipe, self.plugin, recipe.description)
        return self.recipes

    def get(self, name: str):
        recipes = self.load()
        if name not in recipes:
            raise ConfigError(f"plugin {self.plugin!r} declares recipe {name!r}, but {self.reference} does not register it; "
                              f"reinstall the plugin or report it to its authors")  # fmt: skip
        return recipes[name]


class _RegisterRecipe:
    """The ``register`` callback of ``register_recipes`` (see `convgen.hookspecs.register_recipes`)."""

    def __init__(self, registry: Registry, plugin: str):
        self.registry, self.plugin = registry, plugin

    def __call__(self, name: str, run=None, **options) -> None:
        deferred = _Deferred(functools.partial(_recipe, name, run, options, self.registry.get))
        self.registry.add(name, deferred, self.plugin, options.get("description", ""))

    def lazy(self, reference: str, recipes: dict[str, str]) -> None:
        """Declare ``recipes`` (name -> description) that the function ``reference``
        (``"package.module:function"``, called with a ``register`` callback) registers."""
        group = _RecipeGroup(self.registry, reference, self.plugin, dict(recipes))
        for name, description in recipes.items():
            self.registry.add(name, _Deferred(functools.partial(group.get, name)), self.plugin, description)
        self.registry._groups.append(group)


def _build(kind: str, pm) -> Registry:
    registry = Registry(kind)
    hook = getattr(pm.hook, KINDS[kind][0])
    for impl in hook.get_hookimpls():  # registration order: the core first, then entry points
        plugin = pm.get_name(impl.plugin)
        if kind in ("reader", "writer"):
            register = _file_type_adder(registry, plugin)
        elif kind == "recipe":
            register = _RegisterRecipe(registry, plugin)
        else:

            def register(name, factory, _plugin=plugin):
                registry.add(name, factory, _plugin)

        impl.function(register=register)
    return registry


def get_registry(kind: str) -> Registry:
    """The registry of one kind (``"encoder"``, ``"dataset"``, ...), built on first use
    and kept by the plugin manager it was built from (`convgen.plugins.reset` forgets both)."""
    from convgen.plugins import get_plugin_manager

    if kind not in KINDS:
        raise ConfigError(f"unknown component kind {kind!r}; known: {', '.join(KINDS)}")
    pm = get_plugin_manager()
    if kind not in pm.registries:
        pm.registries[kind] = _build(kind, pm)
    return pm.registries[kind]


def get(kind: str, name: str) -> Any:
    """Look up one component: ``get("encoder", "resnet")``."""
    return get_registry(kind).get(name)


def recipe(name: str) -> Recipe:
    """The registered recipe ``name`` (a plugin's or the core's), to run from code:
    ``recipe("train").run(config, out_dir)``."""
    return get("recipe", name)


def build(kind: str, spec: dict, **context) -> Any:
    """Build a component from a ``{"name": ..., **kwargs}`` block of a recipe.

    ``context`` (such as the recipe's ``spatial_dims``) fills arguments that the
    component names and the block leaves unset or null (`convgen.signatures.fill_context`);
    other context keys are ignored.
    """
    spec = dict(spec)
    name = spec.pop("name", None)
    factory = get(kind, name)
    check_component_kwargs(kind, name, factory, spec, where=kind)
    return factory(**fill_context(factory, spec, context))


def reset() -> None:
    """Forget the built registries (the plugin manager stays)."""
    from convgen.plugins import get_plugin_manager

    get_plugin_manager().registries.clear()
