"""Third-party plugins are installed with pip and loaded through the ``convgen`` entry
point group, exactly like the first-party ones; a broken plugin only warns."""

import json

import pytest

from conftest import assert_one_line_error, install_plugin, run_convgen


@pytest.fixture(scope="module")
def hello(tmp_path_factory):
    target = tmp_path_factory.mktemp("site-hello")
    install_plugin("convgen-hello", target)
    return target


@pytest.fixture(scope="module")
def broken(tmp_path_factory):
    target = tmp_path_factory.mktemp("site-broken")
    install_plugin("convgen-broken", target)
    return target


def _report(result):
    assert result.returncode == 0, result.stderr
    return {item["name"]: item for item in json.loads(result.stdout)}


def test_installed_plugin_shows_its_components(hello):
    report = _report(run_convgen("plugins", "--json", pythonpath=[hello]))
    item = report["hello"]
    assert (item["distribution"], item["version"]) == ("convgen-hello", "0.3.0")
    components = item["components"]
    assert components["encoder"] == ["tiny"] and components["loss"] == ["center"]
    assert components["style_cost"] == ["mean-std"] and components["recipe"] == ["count", "sines-evaluate"]
    assert components["dataset"] == ["sines"] and components["baseline"] == ["dominant-frequency"]
    assert components["reader"] == [".txt"] and components["writer"] == [".txt"]
    assert components["search_backend"] == ["brute-force"]
    assert "command" in components
    assert report["convgen.default_plugins.encoders"]["components"]["encoder"] == ["random-multiscale", "resnet", "vgg", "vgg19-torchvision"]

    table = run_convgen("plugins", pythonpath=[hello])
    assert "hello" in table.stdout and "convgen-hello 0.3.0" in table.stdout


def test_plugin_components_are_usable_from_recipes_and_the_cli(hello, tmp_path):
    result = run_convgen("hello", "--name", "plugin author", pythonpath=[hello])
    assert result.stdout.strip() == "hello plugin author, from convgen-hello"

    # The plugin's encoder, chosen by registry name in a core recipe.
    out = tmp_path / "embed"
    result = run_convgen("run", "embed", "encoder.name=tiny", "encoder.width=3", "dataset.name=sines",
                         "dataset.identities=3", "dataset.samples_per_identity=2", "-o", out, pythonpath=[hello])  # fmt: skip
    assert result.returncode == 0, result.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["encoder"] == "tiny" and summary["samples"] == 6

    # The plugin's recipe, reading the plugin's file type through the folder dataset.
    for person, values in {"ann": [[1, 2, 3], [4, 5, 6]], "bob": [[7, 8, 9]]}.items():
        (tmp_path / "data" / person).mkdir(parents=True)
        for i, row in enumerate(values):
            (tmp_path / "data" / person / f"{i}.txt").write_text(" ".join(map(str, row)))
    result = run_convgen("run", "count", f"dataset.root={tmp_path / 'data'}", "-o", tmp_path / "count", pythonpath=[hello])
    assert result.returncode == 0, result.stderr
    summary = json.loads((tmp_path / "count" / "summary.json").read_text())
    assert summary == {"samples": 3, "per_identity": {"ann": 2, "bob": 1}}


def test_a_plugin_baseline_is_scored_beside_the_encoder(hello, tmp_path):
    """register_baselines: evaluate scores the plugin's features on the same people and protocol."""
    out = tmp_path / "evaluate"
    result = run_convgen("run", "evaluate", "spatial_dims=1", "encoder.name=tiny", "dataset.name=sines",
                         "dataset.identities=6", "dataset.samples_per_identity=4", "episodes.n_way=3",
                         "baselines=[samples, dominant-frequency]", "-o", out, pythonpath=[hello])  # fmt: skip
    assert result.returncode == 0, result.stderr
    report = json.loads((out / "report.json").read_text())
    frequency = report["baselines"]["dominant-frequency"]
    assert frequency["description"].startswith("The strongest frequency")
    assert frequency["identification_one_shot"]["rank_1"] == 1.0  # the peak is the identity
    assert [row["method"] for row in report["comparison"]] == ["samples", "dominant-frequency", "trained"]
    assert "what training bought" in result.stdout


def test_a_derived_recipe_runs_its_parent_with_its_changes_and_a_plugin_readout(hello, tmp_path):
    """based_on="evaluate": the core's run and components, the plugin's defaults and key; the
    evaluation_readouts hook adds to report.json and summary.json, with the evaluation's own encoder."""
    shown = run_convgen("recipes", "show", "sines-evaluate", pythonpath=[hello])
    assert shown.returncode == 0, shown.stderr
    assert "norms: true" in shown.stdout and "max_pairs: 200000" in shown.stdout  # its own key, and the parent's
    assert "# based on the 'evaluate' recipe" in shown.stdout
    bad = run_convgen("run", "sines-evaluate", "encoder.widht=3", "-o", tmp_path / "bad", pythonpath=[hello])
    assert bad.returncode != 0 and "width" in bad.stderr  # the parent's components: encoder keys are checked
    out = tmp_path / "evaluate"
    result = run_convgen("run", "sines-evaluate", "episodes.n_way=3", "-o", out, pythonpath=[hello])
    assert result.returncode == 0, result.stderr
    report, summary = (json.loads((out / name).read_text()) for name in ("report.json", "summary.json"))
    assert report["identities"] == 5 and report["encoder"] == "tiny"
    norms = report["norms"]
    assert norms["same_encoder"] and abs(norms["max"] - 1.0) < 1e-5  # L2-normalised embeddings
    assert summary["norm_max"] == norms["max"]
    plain = tmp_path / "plain"  # the core recipe itself never asks for the read-out
    assert run_convgen("run", "evaluate", "spatial_dims=1", "encoder.name=tiny", "dataset.name=sines", "episodes.n_way=3",
                       "-o", plain, pythonpath=[hello]).returncode == 0  # fmt: skip
    assert "norms" not in json.loads((plain / "report.json").read_text())


def test_a_gallery_searches_with_a_plugin_backend_through_the_cli(hello, tmp_path):
    """register_search_backends: `gallery create --backend brute-force` checks the plugin's
    options, follows enrol/remove, and answers exactly like the core's exact backend."""
    import numpy as np

    from convgen.testing import invoke, tiny_encoder_weights

    weights = tiny_encoder_weights(tmp_path / "enc.safetensors", spatial_dims=1)
    rng = np.random.default_rng(0)
    for person in range(6):
        base = rng.normal(size=(1, 32))
        for k in range(3):
            folder = tmp_path / ("known" if k < 2 else "probes") / f"p{person}"
            folder.mkdir(parents=True, exist_ok=True)
            np.save(folder / f"{k}.npy", (base + 0.3 * rng.normal(size=base.shape)).astype(np.float32))
    probes = sorted((tmp_path / "probes").rglob("*.npy"))
    steps = [["create", "-w", weights], ["enrol", tmp_path / "known"], ["remove", "p0"],
             ["identify", *probes, "--top-k", "3", "--threshold", "100", "--json"]]  # fmt: skip
    answers = {}
    for backend in ("exact", "brute-force"):  # exact in this process; the plugin's in fresh ones, as a user runs it
        db = tmp_path / f"{backend}.db"
        for command, *args in steps:
            if command == "create":
                args += ["--backend", backend, *(["--backend-option", "queries_per_pass=2"] if backend != "exact" else [])]
            if backend == "exact":
                result = invoke("gallery", command, db, *args)
                code, stdout, stderr = result.exit_code, result.stdout, result.stderr
            else:
                result = run_convgen("gallery", command, db, *args, pythonpath=[hello])
                code, stdout, stderr = result.returncode, result.stdout, result.stderr
            assert code == 0, stderr
        answers[backend] = [[(c["name"], round(c["distance"], 4)) for c in r["candidates"]] for r in json.loads(stdout)["results"]]
    assert answers["brute-force"] == answers["exact"]
    assert all("p0" not in [name for name, _ in row] for row in answers["exact"]) and len(answers["exact"][0]) == 3

    bad = run_convgen("gallery", "create", tmp_path / "bad.db", "-w", weights, "--backend", "brute-force",
                      "--backend-option", "queries_per_pass=0", pythonpath=[hello])  # fmt: skip
    assert bad.returncode != 0 and "queries_per_pass must be a whole number" in bad.stderr and not (tmp_path / "bad.db").exists()
    assert_one_line_error(invoke("gallery", "create", tmp_path / "bad.db", "-w", weights, "--backend", "exakt"),
                          3, ["unknown search backend 'exakt'; did you mean 'exact'? (known: exact, faiss, milvus)"])  # fmt: skip
    gone = invoke("gallery", "identify", tmp_path / "brute-force.db", probes[0], "-t", "1")  # this process lacks the plugin
    assert_one_line_error(gone, 3, ["searches with backend 'brute-force', which no installed plugin provides"])
    people = invoke("gallery", "list", tmp_path / "brute-force.db", "--json").stdout  # listing needs no backend
    assert_one_line_error(invoke("gallery", "remove", tmp_path / "brute-force.db", "p1"), 3, ["install the plugin that registers it"])
    assert invoke("gallery", "list", tmp_path / "brute-force.db", "--json").stdout == people, "refused before changing anything"


def test_environment_switches_control_autoloading(hello, broken):
    path = [hello, broken]
    assert "hello" not in _report(run_convgen("plugins", "--json", pythonpath=path,
                                              env={"CONVGEN_DISABLE_PLUGIN_AUTOLOAD": "1"}))  # fmt: skip
    only_hello = run_convgen("plugins", "--json", pythonpath=path, env={"CONVGEN_LOAD_PLUGINS": "hello"})
    assert "hello" in _report(only_hello) and "broken" not in only_hello.stderr
    none = _report(run_convgen("plugins", "--json", pythonpath=path, env={"CONVGEN_LOAD_PLUGINS": ""}))
    assert "hello" not in none and "convgen.default_plugins.recipes" in none


def test_a_broken_plugin_only_warns(hello, broken):
    result = run_convgen("plugins", "--json", pythonpath=[hello, broken])
    report = _report(result)
    assert "hello" in report, "the other plugins still load"
    assert report["broken"]["failed"].startswith("ModuleNotFoundError")
    warnings = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(warnings) == 1
    assert warnings[0].startswith("warning: convgen plugin 'broken' (convgen_broken) failed to load")

    result = run_convgen("recipes", "list", pythonpath=[broken])
    assert result.returncode == 0 and "embed" in result.stdout
