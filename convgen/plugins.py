"""The plugin manager: the core's DEFAULT_PLUGINS first, then the ``convgen`` entry points.

Environment switches (read when the manager is first built):

- ``CONVGEN_DISABLE_PLUGIN_AUTOLOAD=1``: load no entry-point plugins, only the core's.
- ``CONVGEN_LOAD_PLUGINS=a,b``: load only the entry-point plugins named ``a`` and ``b``
  (an empty value loads none).

A plugin that fails to import prints a one-line warning naming it; the others still load.
"""

from __future__ import annotations

import functools
import importlib
import importlib.metadata
import os
import sys
from dataclasses import dataclass, field

import pluggy

from convgen import hookspecs

#: The core's own plugins, registered through the same hooks as any third-party plugin.
DEFAULT_PLUGINS = (
    "convgen.default_plugins.encoders",
    "convgen.default_plugins.datasets",
    "convgen.default_plugins.files",
    "convgen.default_plugins.losses",
    "convgen.default_plugins.style",
    "convgen.default_plugins.recipes",
    "convgen.default_plugins.search",
)

ENTRY_POINT_GROUP = "convgen"


@dataclass(frozen=True)
class PluginInfo:
    """Where a loaded plugin came from. ``distribution`` and ``version`` may be given as
    ``dist``, an `importlib.metadata.Distribution` read only when asked (parsing every
    plugin's metadata would slow every command down)."""

    name: str
    module: str
    _distribution: str | None = None
    _version: str | None = None
    dist: importlib.metadata.Distribution | None = field(default=None, repr=False, compare=False)

    @property
    def distribution(self) -> str | None:
        return self.dist.name if self.dist is not None else self._distribution

    @property
    def version(self) -> str | None:
        if self.dist is not None:
            return self.dist.version
        if self._distribution == "convgen" and self._version is None:
            from convgen import __version__

            return __version__
        return self._version


@dataclass(frozen=True)
class PluginFailure:
    """An entry-point plugin that could not be imported."""

    name: str
    target: str
    error: str


class PluginManager(pluggy.PluginManager):
    """A pluggy manager that remembers each plugin's origin and any import failures."""

    def __init__(self):
        super().__init__("convgen")
        self.add_hookspecs(hookspecs)
        self.infos: dict[str, PluginInfo] = {}
        self.failures: list[PluginFailure] = []
        self.registries: dict = {}  # kind -> convgen.registry.Registry, built from this manager's hooks

    def add(self, module, name: str, distribution=None, version=None, dist=None) -> None:
        self.register(module, name=name)
        self.infos[name] = PluginInfo(name, module.__name__, distribution, version, dist)


def _allow_list() -> set[str] | None:
    value = os.environ.get("CONVGEN_LOAD_PLUGINS")
    if value is None:
        return None
    return {name.strip() for name in value.split(",") if name.strip()}


def _autoload_disabled() -> bool:
    return os.environ.get("CONVGEN_DISABLE_PLUGIN_AUTOLOAD", "").lower() not in ("", "0", "false", "no")


def build_plugin_manager() -> PluginManager:
    """Build a fresh manager (use `get_plugin_manager` for the shared one)."""
    pm = PluginManager()
    for module_name in DEFAULT_PLUGINS:  # their version, convgen's, is read when asked for
        pm.add(importlib.import_module(module_name), name=module_name, distribution="convgen")
    if _autoload_disabled():
        return pm
    allow = _allow_list()
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        if allow is not None and ep.name not in allow:
            continue
        if pm.has_plugin(ep.name):
            continue  # the same distribution seen twice on sys.path
        dist = getattr(ep, "dist", None)
        try:
            module = ep.load()
            pm.add(module, name=ep.name, dist=dist)
            pm.check_pending()  # a misspelt hook name is an error, not silence
        except Exception as exc:  # a broken plugin must not take the others down
            if pm.has_plugin(ep.name):
                pm.unregister(name=ep.name)
                pm.infos.pop(ep.name, None)
            message = " ".join(f"{type(exc).__name__}: {exc}".split())
            pm.failures.append(PluginFailure(ep.name, ep.value, message))
            print(f"warning: convgen plugin {ep.name!r} ({ep.value}) failed to load: {message}", file=sys.stderr)
    return pm


@functools.cache
def get_plugin_manager() -> PluginManager:
    """The process-wide plugin manager, built on first use."""
    return build_plugin_manager()


def reset() -> None:
    """Forget the loaded plugins and their registries (tests, or after changing the env switches)."""
    get_plugin_manager.cache_clear()
