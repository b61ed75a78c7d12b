import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from convgen import config
from convgen.errors import ConfigError, PathError


@pytest.mark.parametrize(
    "text, path, value",
    [
        ("batch_size=64", ("batch_size",), 64),
        ("encoder.channels=[8, 16]", ("encoder", "channels"), [8, 16]),
        ("weights=null", ("weights",), None),
        ("device=cuda:0", ("device",), "cuda:0"),
        ("dataset.noise=0.25", ("dataset", "noise"), 0.25),
        ("dataset.root=/data/a=b", ("dataset", "root"), "/data/a=b"),
        ("name=", ("name",), ""),
    ],
)
def test_overrides_are_dotted_keys_with_yaml_values(text, path, value):
    assert config.parse_override(text) == (path, value)


@given(st.integers(), st.lists(st.integers(), max_size=4), st.booleans())
def test_override_values_round_trip_through_yaml(number, numbers, flag):
    for value in (number, numbers, flag):
        text = yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()
        assert config.parse_override(f"a.b={text}") == (("a", "b"), value)


@pytest.mark.parametrize("text", ["batch_size", "=3", "encoder..name=vgg", "a=[1, 2"])
def test_malformed_overrides_are_one_line_errors(text):
    with pytest.raises(ConfigError) as err:
        config.parse_override(text)
    assert "\n" not in str(err.value)


def test_resolve_applies_overrides_over_defaults():
    recipe, resolved = config.resolve("embed", ["batch_size=8", "encoder.channels=[4, 8]", "dataset.identities=3"])
    assert recipe.name == "embed"
    assert resolved["batch_size"] == 8
    assert resolved["encoder"] == {"name": "resnet", "embedding_dim": 128, "channels": [4, 8]}
    assert resolved["dataset"] == {"name": "synthetic", "identities": 3}
    assert recipe.defaults["batch_size"] == 32, "defaults are not mutated"


def test_unknown_keys_show_their_path_and_a_suggestion():
    with pytest.raises(ConfigError, match="unknown key 'batchsize' for recipe 'embed'; did you mean 'batch_size'"):
        config.resolve("embed", ["batchsize=3"])
    with pytest.raises(ConfigError, match="unknown key 'encoder.chanels' for encoder 'resnet'; did you mean 'channels'"):
        config.resolve("embed", ["encoder.chanels=[4]"])
    with pytest.raises(ConfigError, match=r"encoder.name: unknown encoder 'resnett'; did you mean 'resnet'\?"):
        config.resolve("embed", ["encoder.name=resnett"])


def test_type_mismatches_are_errors():
    with pytest.raises(ConfigError, match="key 'batch_size' expects an integer .* got 'many'"):
        config.resolve("embed", ["batch_size=many"])
    with pytest.raises(ConfigError, match="key 'encoder' expects a mapping"):
        config.resolve("embed", ["encoder=[1, 2]"])


def test_switching_component_keeps_shared_defaults_and_drops_the_rest():
    _, resolved = config.resolve("inspect", ["encoder=resnet"])
    assert resolved["encoder"] == {"name": "resnet", "embedding_dim": 128}
    _, resolved = config.resolve("embed", ["dataset.name=folder", "dataset.root=/tmp"])
    assert resolved["dataset"] == {"name": "folder", "root": "/tmp"}


def test_recipe_files(tmp_path):
    good = tmp_path / "good.yaml"
    good.write_text("recipe: embed\nbatch_size: 4\nencoder:\n  name: vgg\n  channels: [4, 8]\n  convs: [1, 1]\n")
    recipe, resolved = config.resolve(str(good), ["batch_size=5"])
    assert recipe.name == "embed" and resolved["batch_size"] == 5
    assert resolved["encoder"] == {"name": "vgg", "embedding_dim": 128, "channels": [4, 8], "convs": [1, 1]}
    # the dump is a recipe file that resolves to the same config
    again = tmp_path / "again.yaml"
    again.write_text(config.dump(recipe.name, resolved))
    assert config.resolve(str(again)) == (recipe, resolved)


@pytest.mark.parametrize(
    "text, message",
    [
        ("recipe: embed\nbatch_size: [1,\n", "cannot parse recipe file .*line 3"),
        ("batch_size: 4\n", "needs a top-level 'recipe:' key"),
        ("- just\n- a list\n", "must hold a mapping"),
        ("recipe: embedd\n", "unknown recipe 'embedd'; did you mean 'embed'"),
        ("recipe: embed\nencoder: {name: vgg, depth: 3}\n", "unknown key 'encoder.depth' for encoder 'vgg'"),
        ("recipe: embed\nx: !!python/object/apply:os.system ['true']\n", "cannot parse recipe file"),
    ],
)
def test_bad_recipe_files_are_one_line_errors(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message) as err:
        config.resolve(str(path))
    assert "\n" not in str(err.value)


def test_missing_recipe_file_and_unknown_recipe(tmp_path):
    with pytest.raises(PathError, match="recipe file not found"):
        config.resolve(str(tmp_path / "nope.yaml"))
    with pytest.raises(ConfigError, match="unknown recipe 'embd'; did you mean 'embed'"):
        config.resolve("embd")
