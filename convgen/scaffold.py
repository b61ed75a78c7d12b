"""``convgen plugins new NAME``: a plugin package that installs, registers and passes its test as generated.

The package is what a third-party plugin needs and nothing more: a ``pyproject.toml``
whose ``convgen`` entry point names the plugin module, a module with one working recipe,
a test that finds the plugin through its entry point (as convgen does for a user), and a
README. It is written into a hidden temporary folder and renamed into place, so an
interrupted run never leaves half a package behind.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path
from string import Template

from convgen.errors import ConfigError

NAME = re.compile(r"[a-z][a-z0-9]*(-[a-z0-9]+)*")
MAX_NAME = 40


def check_name(name: str) -> str:
    """The plugin name, or a ConfigError that says what a valid one looks like."""
    if name.startswith("convgen-") or name == "convgen":
        raise ConfigError(f"plugin name {name!r}: leave out the 'convgen-' prefix (the package is called convgen-NAME)")
    if not NAME.fullmatch(name) or len(name) > MAX_NAME:
        raise ConfigError(
            f"invalid plugin name {name!r}: use lowercase letters, digits and single dashes, starting with a letter "
            f"(at most {MAX_NAME} characters), e.g. 'zstack' or 'light-sheet'"
        )
    return name


def files(name: str) -> dict[str, str]:
    """Relative path -> text of every file of the package ``convgen-NAME``."""
    module = "convgen_" + name.replace("-", "_")
    values = {"name": name, "module": module, "dist": f"convgen-{name}", "recipe": f"{name}-describe"}
    paths = {path: path.replace("MODULE", module).replace("NAME", name.replace("-", "_")) for path in TEMPLATES}
    return {paths[path]: Template(text).substitute(values) for path, text in TEMPLATES.items()}


def create(name: str, parent: Path) -> Path:
    """Write ``parent/convgen-NAME/`` and return it; an existing folder is never touched."""
    name = check_name(name)
    parent = Path(parent)
    target = parent / f"convgen-{name}"
    if target.exists():
        raise ConfigError(f"{target} already exists; choose another name or --dir, or remove it first")
    if parent.exists() and not parent.is_dir():
        raise ConfigError(f"--dir {parent} is a file, not a folder")
    parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".convgen-{name}.", dir=parent))
    try:
        for relative, text in files(name).items():
            path = tmp / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700; give the package the usual permissions
        os.rename(tmp, target)  # fails if a non-empty folder appeared meanwhile
    except OSError as exc:
        raise ConfigError(f"could not create {target}: {exc.strerror or exc}") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


# The templates: string.Template, so the Python and TOML braces need no escaping.
# $name: the plugin (entry-point) name; $module: the import name; $dist: the distribution.
TEMPLATES = {
    "pyproject.toml": '''\
[build-system]
requires = ["setuptools>=68"]
build-backend = "setuptools.build_meta"

[project]
name = "$dist"
version = "0.1.0"
description = "A convgen plugin."
readme = "README.md"
requires-python = ">=3.11"
dependencies = ["convgen"]

[project.optional-dependencies]
test = ["pytest>=7"]

# The whole connection to convgen: the key is the plugin's name, the value its module.
[project.entry-points.convgen]
$name = "$module.plugin"

[tool.setuptools.packages.find]
where = ["src"]

[tool.pytest.ini_options]
testpaths = ["tests"]
''',
    "README.md": '''\
# $dist

A convgen plugin. It registers the recipe `$recipe`, which describes a dataset:
samples per identity, the sample shape and the value range.

```bash
pip install -e '.[test]'     # install into the environment that has convgen
convgen plugins              # "$name" is listed, with what it registers
convgen run $recipe -o runs/describe
pytest                       # the plugin's test, through its entry point
```

Add components in `src/$module/plugin.py`: every hook is described, with an
example, in convgen's hooks reference (`convgen/hookspecs.py`).
''',
    "src/MODULE/__init__.py": '''\
"""$dist: a convgen plugin (its hooks are in ``$module.plugin``)."""
''',
    "src/MODULE/plugin.py": '''\
"""The plugin's hook implementations: convgen imports this module through the
``convgen`` entry point in pyproject.toml and calls each hook when it first needs
components of that kind. Add more ``register_*`` hooks here (see convgen.hookspecs)."""

import convgen
from convgen.plugin_api import build_component  # the plugin API: convgen's one public module for plugins

#: The recipe's default dataset: small and generated, so that it runs anywhere.
DATASET = dict(name="synthetic", identities=3, samples_per_identity=4, size=16)


def describe(config, out_dir):
    """Samples per identity, sample shape and value range of any registered dataset."""
    dataset = build_component("dataset", config["dataset"])
    counts, low, high = {}, float("inf"), float("-inf")
    for index, label in enumerate(dataset.labels):
        name = dataset.classes[label]
        counts[name] = counts.get(name, 0) + 1
        sample, _ = dataset[index]
        low, high = min(low, float(sample.min())), max(high, float(sample.max()))
    shape = list(dataset[0][0].shape)
    print(f"{len(dataset)} samples of shape {shape}, {len(counts)} identities")
    return {
        "samples": len(dataset),
        "shape": shape,
        "per_identity": counts,
        "range": [low, high],
    }


@convgen.hookimpl
def register_recipes(register):
    register(
        "$recipe",
        describe,
        defaults={"dataset": DATASET},
        components={"dataset": "dataset"},  # check the dataset block's keys
        description="Describe a dataset: counts, sample shape and value range.",
    )
''',
    "tests/test_NAME.py": '''\
"""The plugin as a user gets it: installed, and found through its entry point."""

import json
import os
import subprocess
import sys


def convgen(*args):
    """Run convgen in a fresh process that loads only this plugin (and the core)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVGEN_")}
    env["CONVGEN_LOAD_PLUGINS"] = "$name"
    command = [sys.executable, "-m", "convgen", *map(str, args)]
    result = subprocess.run(command, capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_the_entry_point_registers_the_recipe():
    report = {item["name"]: item for item in json.loads(convgen("plugins", "--json"))}
    assert "$name" in report, "is the package installed? (pip install -e .)"
    assert report["$name"]["distribution"] == "$dist"
    assert report["$name"]["components"]["recipe"] == ["$recipe"]


def test_the_recipe_runs(tmp_path):
    convgen("run", "$recipe", "dataset.identities=2", "-o", tmp_path)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["samples"] == 8 and summary["shape"] == [1, 16, 16]
    assert sorted(summary["per_identity"].values()) == [4, 4]
    assert (tmp_path / "config.yaml").exists(), "the resolved config, saved by convgen"
''',
}
