import types

import pytest

import convgen
from convgen import plugins, registry
from convgen.errors import ConfigError
from convgen.registry import Registry


def test_unknown_name_lists_the_known_ones_and_suggests_the_closest():
    with pytest.raises(ConfigError) as err:
        registry.get("encoder", "resnt")
    message = str(err.value)
    assert "unknown encoder 'resnt'" in message
    assert "did you mean 'resnet'?" in message
    assert "resnet" in message and "vgg" in message
    assert "\n" not in message


def test_duplicate_name_names_both_plugins():
    reg = Registry("dataset")
    reg.add("faces", object(), plugin="plugin-a")
    with pytest.raises(ConfigError, match="dataset 'faces' is registered twice: by plugin 'plugin-a' and by plugin 'plugin-b'"):
        reg.add("faces", object(), plugin="plugin-b")


def test_a_plugin_that_reuses_a_core_name_is_reported_through_the_hooks(monkeypatch):
    pm = plugins.build_plugin_manager()

    @convgen.hookimpl
    def register_encoders(register):
        register("resnet", lambda spatial_dims: None)

    pm.add(types.SimpleNamespace(register_encoders=register_encoders, __name__="impostor"), name="impostor")
    monkeypatch.setattr(plugins, "get_plugin_manager", lambda: pm)
    registry.reset()
    with pytest.raises(ConfigError, match="'convgen.default_plugins.encoders' and by plugin 'impostor'"):
        registry.get_registry("encoder")


def test_core_components_are_registered_through_the_hooks():
    entries = {e.name: e.plugin for e in registry.get_registry("encoder").entries()}
    assert entries["resnet"] == entries["vgg"] == "convgen.default_plugins.encoders"
    assert {"folder", "synthetic"} <= set(registry.get_registry("dataset"))
    assert ".npy" in registry.get_registry("reader") and ".npy" in registry.get_registry("writer")
    assert {"embed", "inspect"} <= set(registry.get_registry("recipe"))


def test_build_checks_arguments_and_fills_context():
    dataset = registry.build("dataset", {"name": "synthetic", "identities": 2, "samples_per_identity": 2, "size": 8},
                             spatial_dims=1)  # fmt: skip
    assert dataset[0][0].shape == (1, 8)
    with pytest.raises(ConfigError, match="unknown key 'dataset.identitys' for dataset 'synthetic'; did you mean 'identities'"):
        registry.build("dataset", {"name": "synthetic", "identitys": 3})


def test_one_rule_fills_context_in_the_registry_and_in_encoder_specs():
    """Context fills an argument the factory names and the block leaves unset or null; a
    value the block sets wins; ``**kwargs`` gets no context (registry.build and
    weights.encoder_spec share `convgen.signatures.fill_context`)."""
    from convgen.signatures import fill_context
    from convgen.weights import encoder_spec

    def factory(spatial_dims, in_channels=1, width=4):
        return (spatial_dims, in_channels, width)

    def loose(**options):
        return options

    context = {"spatial_dims": 2, "in_channels": 3, "embedding_dim": 9}
    assert fill_context(factory, {"in_channels": None}, context) == {"in_channels": 3, "spatial_dims": 2}
    assert fill_context(factory, {"in_channels": 5}, context) == {"in_channels": 5, "spatial_dims": 2}
    assert fill_context(loose, {"a": 1}, context) == {"a": 1}
    block = {"name": "resnet", "channels": [4], "strides": [1], "embedding_dim": 8}
    built, spec = registry.build("encoder", block, **context), encoder_spec(block, **context)
    assert (built.spatial_dims, built.in_channels) == (spec["spatial_dims"], spec["in_channels"]) == (2, 3)
    assert spec["embedding_dim"] == 8  # the block's value wins over the context's


def test_unknown_kind_is_an_error():
    with pytest.raises(ConfigError, match="unknown component kind 'widget'"):
        registry.get_registry("widget")


def test_a_misspelt_hook_makes_only_that_plugin_fail(monkeypatch, capsys):
    import importlib.metadata

    @convgen.hookimpl
    def register_encoderz(register):  # not a hook
        register("x", object)

    good = types.SimpleNamespace(__name__="good_plugin")
    bad = types.SimpleNamespace(register_encoderz=register_encoderz, __name__="bad_plugin")

    class FakeEntryPoint:
        def __init__(self, name, module):
            self.name, self.value, self.module, self.dist = name, f"{name}_module", module, None

        def load(self):
            return self.module

    fakes = [FakeEntryPoint("bad", bad), FakeEntryPoint("good", good)]
    monkeypatch.setattr(importlib.metadata, "entry_points", lambda group: fakes)
    pm = plugins.build_plugin_manager()
    assert pm.has_plugin("good") and not pm.has_plugin("bad")
    warning = capsys.readouterr().err.strip()
    assert warning.startswith("warning: convgen plugin 'bad' (bad_module) failed to load:") and "register_encoderz" in warning
    assert "\n" not in warning


def _with_recipes(monkeypatch, register_recipes):
    """A plugin manager with the core plugins plus one that registers ``register_recipes``."""
    pm = plugins.build_plugin_manager()
    pm.add(types.SimpleNamespace(register_recipes=convgen.hookimpl(register_recipes), __name__="mine"), name="mine")
    monkeypatch.setattr(plugins, "get_plugin_manager", lambda: pm)
    registry.reset()


def test_a_recipe_based_on_another_inherits_its_run_defaults_and_components(monkeypatch):
    def own_run(config, out_dir):
        return {"epochs": config["epochs"]}

    def register_recipes(register):
        register("long-train", based_on="train", defaults={"epochs": 99, "note": "x"}, description="train, longer")
        register("longer-train", based_on="long-train", defaults={"epochs": 500})  # a chain
        register("quick", own_run, based_on="train", without=("augment", "sampler"))

    _with_recipes(monkeypatch, register_recipes)
    train, long = registry.recipe("train"), registry.recipe("long-train")
    assert long.run is train.run and long.based_on == "train" and long.description == "train, longer"
    assert long.defaults == {**train.defaults, "epochs": 99, "note": "x"}
    assert long.components == train.components
    long.defaults["dataset"]["name"] = "changed"  # a deep copy: the parent's defaults never change
    assert train.defaults["dataset"]["name"] == "synthetic"
    assert registry.recipe("longer-train").defaults["epochs"] == 500 and registry.recipe("longer-train").defaults["note"] == "x"
    quick = registry.recipe("quick")
    assert quick.run is own_run and "augment" not in quick.defaults and "sampler" not in quick.defaults
    assert quick.components == train.components  # augment and sampler name no component


@pytest.mark.parametrize(("options", "message"), [
    ({"based_on": "trian"}, "recipe 'circle-a' is based on 'trian': unknown recipe 'trian'; did you mean 'train'?"),
    ({"based_on": "train", "without": ("nothing",)}, r"without=\['nothing'\] names keys that recipe 'train' does not have"),
    ({"based_on": "circle-b"}, "recipes cannot derive in a circle"),
    ({}, "recipe 'circle-a' needs a run function"),
])  # fmt: skip
def test_a_bad_derivation_is_a_clear_error(monkeypatch, options, message):
    def register_recipes(register):
        register("circle-a", **options)
        register("circle-b", based_on="circle-a")

    _with_recipes(monkeypatch, register_recipes)
    with pytest.raises(ConfigError, match=message):
        registry.recipe("circle-a")


def test_a_recipe_result_is_what_run_recipe_returns_and_its_summary_is_written(tmp_path):
    from convgen.running import RecipeResult, run_recipe

    result = RecipeResult({"answer": 42}, report={"long": [1, 2]})
    recipe = registry.Recipe("answer", lambda config, out_dir: result, defaults={"seed": 0})
    assert run_recipe(recipe, {"seed": 0}, tmp_path / "run") is result
    assert (tmp_path / "run" / "summary.json").read_text() == '{\n  "answer": 42\n}\n'


def test_declared_recipes_may_derive_from_each_other_in_one_group(monkeypatch, tmp_path):
    """register.lazy: a recipe based on another of the same group (registered just before it) loads once, without recursing."""
    module = tmp_path / "derived_group.py"
    module.write_text(
        "def register(register):\n"
        "    register('g-train', based_on='train', defaults={'epochs': 3}, description='g')\n"
        "    register('g-longer', based_on='g-train', defaults={'epochs': 30}, description='g, longer')\n",
        encoding="utf-8",
    )
    monkeypatch.syspath_prepend(str(tmp_path))

    def register_recipes(register):
        register.lazy("derived_group:register", {"g-longer": "g, longer", "g-train": "g"})

    _with_recipes(monkeypatch, register_recipes)
    longer = registry.recipe("g-longer")
    assert longer.based_on == "g-train" and longer.defaults["epochs"] == 30
    assert longer.run is registry.recipe("train").run
