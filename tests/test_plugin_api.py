"""The plugin API (`convgen.plugin_api`) is the only part of convgen that the first-party
plugins and the example plugin use: read from their source, every import of a convgen
module, every name used of the API module bound as a whole (``from convgen import
plugin_api as api``) and every ``"convgen.module:attribute"`` reference is checked against
it, and every public name resolves. Plugins reach the core recipes by name
(``based_on="train"``, ``recipe("train")``), never by importing them.

Plugin tests are not plugin code: they may reach into the core to check it.
"""

from __future__ import annotations

import ast
import importlib
import json
import re
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest

import convgen.plugin_api as api
from test_architecture import LAYERS, layer_of  # tests/ is on sys.path under pytest

ROOT = Path(__file__).resolve().parents[1]
#: the source of every first-party plugin, of the tutorial's example plugin, and of the test
#: plugin that stands for a third party (it shows the API is enough for a search backend)
SOURCES = sorted([*ROOT.glob("plugins/*/src/**/*.py"), *ROOT.glob("examples/*/src/**/*.py"),
                  ROOT / "tests" / "plugins" / "convgen-hello" / "convgen_hello.py"])  # fmt: skip
PUBLIC = "convgen.plugin_api"
REFERENCE = re.compile(r"^(convgen(?:\.\w+)*):([\w.]+)$")


def _where(path: Path, node: ast.AST) -> str:
    return f"{path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}:{node.lineno}"


def violations(path: Path) -> list[str]:
    """What one plugin module uses of convgen besides the plugin API, as ``file:line: why``."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found = []
    modules = set()  # local names of the plugin API module itself (from convgen import plugin_api as api)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("convgen.") and alias.name != PUBLIC:
                    found.append(f"{_where(path, node)}: import {alias.name}")
                elif alias.name == PUBLIC and alias.asname:
                    modules.add(alias.asname)
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            if node.module == "convgen":
                found += [f"{_where(path, node)}: from convgen import {a.name}" for a in node.names if a.name not in ("hookimpl", "plugin_api")]
                modules |= {a.asname or a.name for a in node.names if a.name == "plugin_api"}
            elif node.module.startswith("convgen.") and node.module != PUBLIC:
                found.append(f"{_where(path, node)}: from {node.module} import {', '.join(a.name for a in node.names)}")
            elif node.module == PUBLIC:
                for alias in node.names:
                    if alias.name not in api.__all__:
                        found.append(f"{_where(path, node)}: {alias.name} is not in convgen.plugin_api.__all__")
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            match = REFERENCE.match(node.value)
            if match and match.group(1) != PUBLIC:
                found.append(f"{_where(path, node)}: reference {node.value!r} (name {PUBLIC}:... instead)")
            elif match and match.group(2).split(".")[0] not in api.__all__:
                found.append(f"{_where(path, node)}: reference {node.value!r} names no public name")
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in modules:
            if node.attr not in api.__all__:
                found.append(f"{_where(path, node)}: {node.attr} is not in convgen.plugin_api.__all__")
    return found


def test_the_sources_are_found():
    names = {p.relative_to(ROOT).parts[1] for p in SOURCES}
    assert {"faces", "ecg", "audio", "ct", "convgen-zstack", "plugins"} <= names


def test_first_party_plugins_import_only_the_plugin_api():
    found = [line for path in SOURCES for line in violations(path)]
    assert not found, "plugins import convgen only through convgen.plugin_api (and convgen.hookimpl):\n" + "\n".join(found)


def test_the_check_catches_internal_imports(tmp_path):
    """The reader itself, on a module that breaks each rule once."""
    bad = tmp_path / "probe.py"
    source = (
        "import convgen\n"
        "import convgen.io\n"
        "from convgen import registry\n"
        "from convgen.errors import DataError\n"
        "from convgen.plugin_api import recipe, nothing_public, DataError\n"
        "from convgen.recipes import train\n"
        "y = recipe('train').run\n"
        "REF = 'convgen.recipes.stylize:run'\n"
        "OK = 'convgen.plugin_api:run_style_transfer'\n"
        "from convgen import plugin_api as api\n"
        "z = api.finite_json, api._finite\n"
        "@convgen.hookimpl\n"
        "def f(): pass\n"
    )
    bad.write_text(source, encoding="utf-8")
    found = violations(bad)
    lines = sorted(int(line.split(":")[1]) for line in found)
    assert all(line.startswith(f"{bad}:") for line in found)
    assert lines == [2, 3, 4, 5, 6, 8, 11], found


@pytest.mark.parametrize("name", api.__all__)
def test_every_public_name_resolves(name):
    value = getattr(api, name)
    assert value is not None and not isinstance(value, types.ModuleType)  # names, not whole (internal) modules
    assert not name.startswith("_")


def test_all_lists_each_public_name_once():
    assert sorted(api.__all__) == sorted(api.PUBLIC)


def test_public_names_point_no_higher_than_the_api_itself():
    """The module imports lazily (so the import graph does not see these edges): its targets
    must sit at its own layer or below, like an import would."""
    own = layer_of("plugin_api")
    for name, where in api.PUBLIC.items():
        module = where.partition(":")[0].removeprefix("convgen.")
        assert layer_of(module) is not None and layer_of(module) <= own, f"{name} -> {where} is above {LAYERS[own][0]}"
        importlib.import_module(where.partition(":")[0])


def test_an_unknown_name_is_a_clear_attribute_error():
    with pytest.raises(AttributeError, match="public names are in its __all__"):
        api.nothing_public  # noqa: B018
    assert set(api.__all__) <= set(dir(api))


def test_importing_a_name_loads_only_its_module():
    """``from convgen.plugin_api import DataError`` stays as cheap as importing convgen.errors:
    a plugin's listing-time module may import the API at its top."""
    code = "import sys; from convgen.plugin_api import DataError, atomic_path; print('torch' in sys.modules, 'convgen.metric' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["False", "False"]


def test_finite_json_makes_a_report_json_safe():
    """JSON has no infinities: a report's unbounded threshold is written as null, at any depth."""
    report = {"threshold": float("inf"), "rates": [0.5, float("nan"), (np.float64("-inf"), 2)], "name": "x", "n": 3}
    safe = api.finite_json(report)
    assert safe == {"threshold": None, "rates": [0.5, None, [None, 2]], "name": "x", "n": 3}
    assert json.loads(json.dumps(safe, allow_nan=False)) == safe
