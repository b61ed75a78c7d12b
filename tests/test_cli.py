import json

import torch
import yaml
from safetensors.torch import load_file

import convgen
from conftest import assert_one_line_error, invoke, run_convgen
from convgen.weights import build_encoder, encoder_spec, save_encoder

SMALL = ["dataset.identities=3", "dataset.samples_per_identity=3", "dataset.size=16", "encoder.channels=[4, 8]",
         "encoder.strides=[1, 2]", "batch_size=4"]  # fmt: skip


def test_help_version_and_listing():
    result = invoke("--help")
    assert result.exit_code == 0
    for command in ("run", "recipes", "plugins"):
        assert command in result.stdout
    assert invoke("--version").stdout.strip() == f"convgen {convgen.__version__}"
    listing = invoke("recipes", "list")
    assert listing.exit_code == 0 and "embed" in listing.stdout and "inspect" in listing.stdout
    plugins = invoke("plugins", "--json")
    names = {item["name"] for item in json.loads(plugins.stdout)}
    assert {"convgen.default_plugins.encoders", "convgen.default_plugins.recipes"} <= names


def test_recipes_show_and_cp(tmp_path):
    shown = invoke("recipes", "show", "embed")
    assert shown.exit_code == 0
    assert yaml.safe_load(shown.stdout)["recipe"] == "embed"
    target = tmp_path / "mine.yaml"
    assert invoke("recipes", "cp", "embed", target).exit_code == 0
    assert yaml.safe_load(target.read_text())["encoder"]["name"] == "resnet"
    assert_one_line_error(invoke("recipes", "cp", "embed", target), contains=["already exists", "--force"])
    assert invoke("recipes", "cp", "embed", target, "--force").exit_code == 0
    assert invoke("recipes", "cp", "inspect", tmp_path).exit_code == 0
    assert (tmp_path / "inspect.yaml").exists()


def test_print_config_resolves_without_running(tmp_path):
    result = invoke("run", "embed", "batch_size=3", "--print-config", "-o", tmp_path / "out")
    assert result.exit_code == 0
    assert yaml.safe_load(result.stdout)["batch_size"] == 3
    assert not (tmp_path / "out").exists()


def test_embed_writes_outputs_and_its_config_reproduces_the_run(tmp_path):
    first = tmp_path / "first"
    result = invoke("run", "embed", *SMALL, "-o", first)
    assert result.exit_code == 0, result.stderr
    summary = json.loads((first / "summary.json").read_text())
    assert summary["samples"] == 9 and summary["identities"] == 3 and summary["embedding_dim"] == 128
    tensors = load_file(str(first / "embeddings.safetensors"))
    assert tensors["embeddings"].shape == (9, 128)
    assert torch.allclose(tensors["embeddings"].norm(dim=1), torch.ones(9), atol=1e-5)

    second = tmp_path / "second"
    assert invoke("run", first / "config.yaml", "-o", second).exit_code == 0
    again = load_file(str(second / "embeddings.safetensors"))
    assert torch.equal(tensors["embeddings"], again["embeddings"])
    assert json.loads((second / "summary.json").read_text()) == summary


def test_inspect_reports_every_layer(tmp_path):
    result = invoke("run", "inspect", "spatial_dims=3", "input_size=16", "encoder.channels=[2, 2]", "encoder.convs=[1, 1]",
                    "-o", tmp_path)  # fmt: skip
    assert result.exit_code == 0, result.stderr
    layers = json.loads((tmp_path / "layers.json").read_text())
    assert [row["layer"] for row in layers] == ["conv1_1", "relu1_1", "pool1", "conv2_1", "relu2_1", "pool2"]
    assert layers[-1] == {"layer": "pool2", "shape": [2, 4, 4, 4], "rf_size": [10] * 3, "rf_stride": [4] * 3, "rf_offset": [1.5] * 3}


def test_user_errors_are_one_line_with_distinct_exit_codes(tmp_path):
    assert_one_line_error(invoke("run", "embedd"), 3, ["unknown recipe 'embedd'", "did you mean 'embed'"])
    assert_one_line_error(invoke("run", "embed", "encoder.widht=3"), 3, ["'encoder.widht'"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("recipe: embed\nencoder: {name: vgg\n")
    assert_one_line_error(invoke("run", bad), 3, ["cannot parse recipe file", "line"])
    assert_one_line_error(invoke("recipes", "show", "nope"), 3, ["unknown recipe 'nope'"])


def test_wrong_architecture_weights_are_rejected_and_nothing_is_written(tmp_path):
    spec = encoder_spec({"name": "vgg", "channels": [4], "convs": [1]}, spatial_dims=2, in_channels=1)
    weights = tmp_path / "vgg.safetensors"
    save_encoder(weights, build_encoder(spec), spec)
    out = tmp_path / "out"
    line = assert_one_line_error(invoke("run", "embed", *SMALL, f"weights={weights}", "-o", out), 4)
    assert "holds weights for vgg(" in line and "the recipe builds resnet(" in line
    assert not (out / "embeddings.safetensors").exists()

    # Dropping the encoder block uses the file's own encoder.
    result = invoke("run", "embed", *SMALL[:3], "encoder=null", f"weights={weights}", "-o", out)
    assert result.exit_code == 0, result.stderr
    assert json.loads((out / "summary.json").read_text())["encoder"] == "vgg"


def test_debug_shows_the_traceback():
    result = invoke("--debug", "run", "embedd")
    assert result.exit_code != 0 and result.exception is not None
    assert type(result.exception).__name__ == "ConfigError"


def test_console_script_errors_in_a_fresh_process(tmp_path):
    result = run_convgen("run", "embed", "batch_size=lots", cwd=tmp_path)
    assert_one_line_error(result, None, ["key 'batch_size' expects an integer"])
    assert result.returncode == 3
    assert not (tmp_path / "runs").exists()


def test_core_recipes_report_what_a_dataset_says_of_its_inputs(tmp_path, monkeypatch):
    """A dataset may offer ``input_summary()`` (one line, printed once at the end) and ``input_report()`` (a dict,
    recorded under ``input_report`` in report.json and summary.json); datasets without them change nothing."""
    from convgen import registry
    from convgen.data import SyntheticClusters
    from convgen.registry import Entry

    class Counted(SyntheticClusters):  # counts the distinct samples read, as a file dataset counts its photos
        def __getitem__(self, index):
            self.__dict__.setdefault("seen", set()).add(index)
            return super().__getitem__(index)

        def input_report(self):
            seen = len(self.__dict__.get("seen", ()))
            return {"samples": seen, "summary": f"{seen} samples read"}

        def input_summary(self):
            return self.input_report()["summary"]

    monkeypatch.setitem(registry.get_registry("dataset")._entries, "counted", Entry("counted", Counted, "test"))
    options = [*SMALL, "encoder.name=resnet", "baselines=[]"]
    result = invoke("run", "evaluate", "dataset.name=counted", *options, "-o", tmp_path / "counted")
    assert result.exit_code == 0, result.output
    assert [line for line in result.stderr.splitlines() if "samples read" in line] == ["counted: 9 samples read"]
    report = json.loads((tmp_path / "counted" / "report.json").read_text())["input_report"]
    assert report == {"samples": 9, "summary": "9 samples read"}
    assert json.loads((tmp_path / "counted" / "summary.json").read_text())["input_report"] == report

    plain = invoke("run", "evaluate", *options, "-o", tmp_path / "plain")  # the synthetic dataset offers neither
    assert plain.exit_code == 0 and "input_report" not in json.loads((tmp_path / "plain" / "report.json").read_text())


def test_usage_errors_are_one_line_naming_the_help_to_read(tmp_path):
    """Unknown options, missing arguments and mistyped values: one line, exit 2, as every user error."""
    cases = [(("gallery", "list", tmp_path / "x.db", "--bogus"), "No such option: --bogus (see `convgen gallery list --help`)"),
             (("gallery", "identify", tmp_path / "x.db", "s.npy", "-t", "abc"), "Invalid value for '--threshold'"),
             (("run",), "Missing argument 'recipe' (see `convgen run --help`)"),
             (("no-such-command",), "No such command 'no-such-command'")]  # fmt: skip
    for args, message in cases:
        result = run_convgen(*args)
        assert result.returncode == 2 and result.stderr.count("\n") == 1 and result.stderr.startswith("error: "), result.stderr
        assert message in result.stderr and not list(tmp_path.iterdir())
    group = run_convgen("gallery")  # a group alone shows its help, as before
    assert group.returncode == 2 and "Commands" in group.stdout + group.stderr
