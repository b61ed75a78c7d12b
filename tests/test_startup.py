"""A fast command line: listing and help commands import neither torch nor MONAI, recipes
are listed from their declarations (their modules are imported when used), help shows
defaults, shell completion is on, and every listing speaks JSON."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import typer

from convgen import registry
from convgen.gallery.store import Gallery
from convgen.testing import invoke

HEAVY = ("torch", "monai")
#: this repository's plugins (others that happen to be installed are not ours to test)
OURS = "faces,ecg,audio,ct,zstack"


def small_gallery(path):
    vectors = np.random.default_rng(0).standard_normal((4, 8)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    with Gallery.create(path, fingerprint="test", encoder={"name": "test", "embedding_dim": 8}, dim=8) as gallery:
        gallery.enrol_many({"ada": vectors[:2], "bob": vectors[2:]})
    return path


def imported_packages(*args) -> set[str]:
    """The top-level packages a fresh ``python -m convgen ARGS`` imports (``-X importtime``)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVGEN_")}
    env["CONVGEN_LOAD_PLUGINS"] = OURS
    done = subprocess.run([sys.executable, "-X", "importtime", "-m", "convgen", *map(str, args)],
                          capture_output=True, text=True, env=env, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    return {line.rsplit("|", 1)[-1].strip().split(".")[0] for line in done.stderr.splitlines() if line.startswith("import time:")}


@pytest.mark.parametrize(
    "args",
    [["--version"], ["--help"], ["gallery", "--help"], ["gallery", "list", "DB"], ["gallery", "list", "DB", "--json"],
     ["recipes", "list"], ["recipes", "list", "--json"], ["plugins"], ["plugins", "--json"], ["run", "--help"]],
)  # fmt: skip
def test_light_commands_import_neither_torch_nor_monai(args, tmp_path):
    args = [str(small_gallery(tmp_path / "people.db")) if a == "DB" else a for a in args]
    packages = imported_packages(*args)
    assert "typer" in packages and "convgen" in packages  # the measurement sees imports at all
    assert not packages & set(HEAVY), f"convgen {' '.join(args)} imported {sorted(packages & set(HEAVY))}"


def test_a_command_that_runs_a_recipe_still_imports_what_it_needs():
    assert "torch" in imported_packages("recipes", "show", "embed")


def test_listing_recipes_imports_none_and_using_one_imports_it():
    recipes = registry.get_registry("recipe")
    assert {"train", "embed"} <= set(recipes)
    assert not any(entry.loaded for entry in recipes.entries())  # names and descriptions are declared
    assert recipes.entry("train").description.startswith("Learn a similarity function")
    train = recipes.get("train")
    assert callable(train.run) and train.defaults["encoder"]["name"] and recipes.entry("train").loaded
    for kind in ("encoder", "dataset", "loss", "style_cost", "pipeline", "reader", "writer", "search_backend"):
        light = "convgen.default_plugins.files"  # numpy's .npy functions and the array pipeline: no import to save
        assert not any(entry.loaded for entry in registry.get_registry(kind).entries() if entry.plugin != light), kind
    assert registry.get("encoder", "resnet").__name__ == "ResNetEncoder"


def test_declared_recipes_are_exactly_what_the_plugins_register():
    """A plugin's declaration (names, descriptions) and its register function agree: a recipe
    added to one and not the other, or a reworded description, fails here."""
    recipes = registry.get_registry("recipe")
    declared = {entry.name: entry.description for entry in recipes.entries()}
    assert "no-such-recipe" not in recipes  # a miss runs every declared group's register function
    registered = {entry.name: entry.obj.description for entry in recipes.entries()}
    assert registered == declared, f"declare these in the plugin: {set(registered.items()) ^ set(declared.items())}"


def test_reference_errors_are_clear():
    reg = registry.Registry("encoder")
    reg.add("gone", "convgen_no_such_module:Thing", plugin="someone")
    assert not reg.entry("gone").loaded
    with pytest.raises(registry.ConfigError, match="'gone' from plugin 'someone' cannot be loaded: No module named 'convgen_no_such_module'"):
        reg.get("gone")
    with pytest.raises(registry.ConfigError, match="is not a 'package.module:attribute' reference"):
        registry.resolve("convgen.nets")


def test_lazy_recipe_groups_load_once_and_catch_a_wrong_declaration(monkeypatch):
    calls = []

    def register_all(register):
        calls.append(1)
        register("a", lambda config, out: None, defaults={"x": 1}, description="A.")
        register("b", lambda config, out: None, description="B, not declared.")

    monkeypatch.setattr(sys.modules[__name__], "register_all", register_all, raising=False)
    reg = registry.Registry("recipe")
    registry._RegisterRecipe(reg, "p").lazy(f"{__name__}:register_all", {"a": "A.", "c": "C."})
    assert set(reg) == {"a", "c"} and not calls
    assert reg.get("a").defaults == {"x": 1} and calls == [1]
    assert "b" in reg and reg.entry("b").plugin == "p" and calls == [1]  # undeclared: still works once loaded
    with pytest.raises(registry.ConfigError, match="plugin 'p' declares recipe 'c', but .* does not register it"):
        reg.get("c")


@pytest.mark.parametrize("module, declared", [("convgen_faces.images", "IMAGE_SUFFIXES"), ("convgen_audio.audio", "AUDIO_SUFFIXES")])
def test_plugins_declare_the_suffixes_their_readers_take(module, declared):
    """The plugins name their readers' suffixes without importing the readers; the lists stay equal."""
    reader_module = pytest.importorskip(module)
    plugin = pytest.importorskip(module.split(".")[0] + ".plugin")
    assert list(getattr(plugin, declared)) == list(reader_module.SUFFIXES)


def test_help_shows_defaults_and_completion_is_on():
    top = invoke("--help").stdout
    assert "--install-completion" in top and "--show-completion" in top
    run_help = invoke("run", "--help").stdout
    assert "[default: runs/RECIPE-TIMESTAMP]" in " ".join(run_help.split())
    create = " ".join(invoke("gallery", "create", "--help").stdout.split())
    assert "[default: closest]" in create and "[default: exact]" in create


def _commands(group, path=()):
    for name, command in group.commands.items():
        yield (*path, name), command
        if hasattr(command, "commands"):  # a group (typer's own copy of click)
            yield from _commands(command, (*path, name))


def test_every_listing_has_json():
    from convgen.cli import app

    root = typer.main.get_command(app)
    listings = [path for path, command in _commands(root) if path[-1] in ("list", "plugins")]
    assert ("recipes", "list") in listings and ("gallery", "list") in listings and ("plugins",) in listings
    for path, command in _commands(root):
        if path in listings:
            assert any("--json" in p.opts for p in command.params), f"convgen {' '.join(path)} has no --json"


def test_listings_print_json(tmp_path):
    recipes = json.loads(invoke("recipes", "list", "--json").stdout)
    train = next(r for r in recipes if r["recipe"] == "train")
    assert train == {"recipe": "train", "plugin": "convgen.default_plugins.recipes",
                     "description": registry.get_registry("recipe").get("train").description}  # fmt: skip
    plugins = json.loads(invoke("plugins", "--json").stdout)
    core = next(p for p in plugins if p["name"] == "convgen.default_plugins.encoders")
    assert "resnet" in core["components"]["encoder"]
    people = json.loads(invoke("gallery", "list", small_gallery(tmp_path / "people.db"), "--json").stdout)
    assert people == [{"name": "ada", "samples": 2}, {"name": "bob", "samples": 2}]


def test_bench_startup_runs_at_a_toy_size(tmp_path):
    script = os.path.join(os.path.dirname(__file__), "..", "benchmarks", "bench_startup.py")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVGEN_")} | {"CONVGEN_LOAD_PLUGINS": OURS}
    done = subprocess.run([sys.executable, script, "--repeat", "1"], capture_output=True, text=True, timeout=300, cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = {line.split("|")[1].strip(): line.split("|")[2:] for line in done.stdout.splitlines() if line.startswith("| ")}
    assert float(rows['python -c "import typer"'][1].strip().rstrip("x")) == 1.0
    for command in ("convgen --help", "convgen recipes list", "convgen gallery list DB", "convgen plugins"):
        assert float(rows[command][0]) > 0 and rows[command][3].strip() == "no", rows[command]


def test_shell_completion_offers_commands_and_recipe_names():
    script = os.path.join(os.path.dirname(sys.executable), "convgen")

    def complete(line: str) -> list[str]:
        words = line.split(" ")
        env = {**os.environ, "_CONVGEN_COMPLETE": "complete_bash", "COMP_WORDS": line, "COMP_CWORD": str(len(words) - 1)}
        done = subprocess.run([script], capture_output=True, text=True, env=env, timeout=120)
        assert done.returncode == 0, done.stderr
        return done.stdout.split()

    assert complete("convgen rec") == ["recipes"]
    assert complete("convgen run emb") == ["embed"]
    assert {"train", "embed"} <= set(complete("convgen run "))
