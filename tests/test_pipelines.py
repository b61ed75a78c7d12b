"""Input pipelines: registered like any component, saved with the weights, used by every command."""

import csv
import json
import sqlite3
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open

from convgen import pipelines, plugins
from convgen.errors import ConfigError, DataError, ModelMismatchError
from convgen.gallery.store import Gallery
from convgen.testing import invoke, one_line_error
from convgen.weights import build_encoder, encoder_spec, fingerprint, load_model, read_pipeline, save_encoder

HELLO = Path(__file__).parent / "plugins" / "convgen-hello"


def _spec(dims=2, channels=1):
    return encoder_spec({"name": "resnet", "channels": [4, 8], "strides": [1, 2], "embedding_dim": 8}, spatial_dims=dims, in_channels=channels)


def _weights(path, pipeline=None, dims=2):
    torch.manual_seed(0)
    spec = _spec(dims)
    save_encoder(path, build_encoder(spec), spec, pipeline=pipeline)
    return path


def _folder(root, people: int, files: int, size=(20, 20), seed=0, nested=False):
    """One sub-folder of .npy samples per person; a person is a smooth pattern plus noise."""
    rng = np.random.default_rng(seed)
    for p in range(people):
        folder = root / (f"group{p % 2}/p{p}" if nested else f"p{p}")
        folder.mkdir(parents=True)
        base = rng.normal(size=(1, *size))
        for k in range(files):
            np.save(folder / f"{k}.npy", (base + 0.2 * rng.normal(size=base.shape)).astype(np.float32))
    return root


def test_the_core_pipeline_is_registered_with_its_defaults():
    assert pipelines.pipeline_spec({"name": "array"}) == {"name": "array", "spatial_size": None}
    with pytest.raises(ConfigError, match="unknown key 'pipeline.spatial_sise'.*did you mean 'spatial_size'"):
        pipelines.pipeline_spec({"name": "array", "spatial_sise": 3})
    with pytest.raises(ConfigError, match="unknown pipeline 'arary'; did you mean 'array'"):
        pipelines.pipeline_spec({"name": "arary"})
    with pytest.raises(ConfigError, match="spatial_size"):
        pipelines.build_pipeline({"name": "array", "spatial_size": [0, 3]})


def test_a_plugin_registers_a_pipeline_through_the_hook(tmp_path):
    sys.path.insert(0, str(HELLO))
    try:
        import convgen_hello

        manager = plugins.get_plugin_manager()
        if not manager.has_plugin("hello"):  # not installed here: register the module as its entry point would
            manager.add(convgen_hello, "hello")
        (tmp_path / "x.txt").write_text("1 2 3 4\n")
        inputs = pipelines.build_pipeline({"name": "text", "scale": 2.0})(tmp_path / "x.txt")
        assert torch.equal(inputs, torch.tensor([[[2.0, 4.0, 6.0, 8.0]]]))
        assert pipelines.pipeline_spec({"name": "text"}) == {"name": "text", "scale": 1.0}
    finally:
        sys.path.remove(str(HELLO))


def test_the_weights_record_the_pipeline_and_the_fingerprint_still_names_the_network(tmp_path):
    torch.manual_seed(0)
    spec = _spec()
    encoder = build_encoder(spec)
    fp_with = save_encoder(tmp_path / "with.safetensors", encoder, spec, pipeline={"name": "array", "spatial_size": [28, 28]})
    fp_without = save_encoder(tmp_path / "without.safetensors", encoder, spec)
    assert fp_with == fp_without == fingerprint(spec, encoder.state_dict())
    model = load_model(tmp_path / "with.safetensors")
    assert model.pipeline == {"name": "array", "spatial_size": [28, 28]} and model.fingerprint == fp_with
    assert load_model(tmp_path / "without.safetensors").pipeline is None
    with pytest.raises(ConfigError, match="unknown pipeline"):
        save_encoder(tmp_path / "bad.safetensors", encoder, spec, pipeline={"name": "nope"})
    assert not (tmp_path / "bad.safetensors").exists()


def test_a_damaged_pipeline_entry_is_a_one_line_error(tmp_path):
    from safetensors.torch import load_file, save_file

    path = _weights(tmp_path / "w.safetensors", {"name": "array"})
    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata()
    save_file(load_file(str(path)), str(path), metadata={**metadata, "pipeline": "[1, 2"})
    with pytest.raises(DataError, match="damaged input pipeline"):
        read_pipeline(path)


def test_a_file_embedding_is_the_normalised_mean_of_its_inputs(tmp_path):
    from convgen.metric.embedder import Embedder

    model = Embedder(build_encoder(_spec(1))).eval()
    files = [tmp_path / f"{k}.npy" for k in range(3)]
    rng = np.random.default_rng(0)
    for k, f in enumerate(files):
        np.save(f, rng.normal(size=(k + 1, 1, 12)).astype(np.float32))  # k + 1 inputs of (1, 12)

    def windows(path):
        return torch.from_numpy(np.load(path))

    got = pipelines.embed_files(model, windows, files, batch_size=2)
    with torch.no_grad():
        expected = [torch.nn.functional.normalize(model(windows(f)).mean(0), dim=0).numpy() for f in files]
    assert np.abs(got - np.stack(expected)).max() <= 1e-6


def test_training_records_the_datasets_pipeline(tmp_path):
    data = _folder(tmp_path / "data", people=8, files=4, size=(24, 24))
    result = invoke("run", "train", "dataset.name=folder", f"dataset.root={data}", "dataset.spatial_size=[16,16]", "epochs=1",
                    "encoder.channels=[4,8]", "encoder.strides=[1,2]", "sampler.p=2", "sampler.k=2", "batch_size=4", "device=cpu",
                    "-o", tmp_path / "run")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert read_pipeline(tmp_path / "run" / "encoder.safetensors") == {"name": "array", "spatial_size": [16, 16]}


def test_evaluate_reads_files_as_the_encoder_was_trained(tmp_path):
    """The bug: an encoder trained at 28 x 28 was evaluated at the recipe's size without a word."""
    weights = _weights(tmp_path / "w.safetensors", {"name": "array", "spatial_size": [28, 28]})
    data = _folder(tmp_path / "data", people=6, files=3)
    common = ["evaluate", f"weights={weights}", "dataset.name=folder", f"dataset.root={data}", "device=cpu", "episodes.n_way=2"]
    result = invoke("run", *common, "dataset.spatial_size=[56,46]", "-o", tmp_path / "a")
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "a" / "report.json").read_text())
    assert report["inputs"]["dataset_changes"] == ["dataset.spatial_size: [56, 46] -> [28, 28] (the encoder was trained so)"]
    assert "dataset.spatial_size" in result.stderr
    explicit = invoke("run", *common, "dataset.spatial_size=[28,28]", "-o", tmp_path / "b")
    assert explicit.exit_code == 0
    again = json.loads((tmp_path / "b" / "report.json").read_text())
    assert report["verification"]["eer"] == again["verification"]["eer"]

    # Only an explicit override changes a recorded setting, and the report says so.
    result = invoke("run", *common, "pipeline.name=array", "pipeline.spatial_size=[56,46]", "-o", tmp_path / "c")
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "c" / "report.json").read_text())
    assert report["inputs"]["pipeline_overrides"] == {"name": "array", "spatial_size": [56, 46]}


def test_embed_uses_the_files_encoder_and_names_each_sample(tmp_path):
    """The bug: embed's default encoder block conflicted with weights= (it needed encoder=null)."""
    weights = _weights(tmp_path / "w.safetensors", {"name": "array"})
    data = _folder(tmp_path / "data", people=3, files=2)
    result = invoke("run", "embed", f"weights={weights}", "dataset.name=folder", f"dataset.root={data}", "device=cpu", "-o", tmp_path / "e")
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader((tmp_path / "e" / "samples.csv").open()))
    assert [(r["identity"], Path(r["source"]).relative_to(data).as_posix()) for r in rows][:2] == [("p0", "p0/0.npy"), ("p0", "p0/1.npy")]
    with safe_open(str(tmp_path / "e" / "embeddings.safetensors"), framework="pt") as handle:
        assert len(json.loads(handle.metadata()["sources"])) == 6


def test_galleries_record_the_pipeline_and_explicit_overrides(tmp_path):
    weights = _weights(tmp_path / "w.safetensors", {"name": "array", "spatial_size": [12, 12]})
    data = _folder(tmp_path / "data", people=3, files=2)
    result = invoke("gallery", "create", tmp_path / "g.db", "-w", weights, "-p", "spatial_size=[10,10]", "--json")
    assert result.exit_code == 0, result.output
    with Gallery.open(tmp_path / "g.db") as gallery:
        assert gallery.pipeline == {"name": "array", "spatial_size": [10, 10]}
        assert json.loads(gallery.meta["pipeline_overrides"]) == {"spatial_size": [10, 10]}
    assert invoke("gallery", "enrol", tmp_path / "g.db", data).exit_code == 0
    result = invoke("gallery", "identify", tmp_path / "g.db", data / "p1" / "0.npy", "-t", "2", "-p", "spatial_size=[14,14]", "--json")
    answer = json.loads(result.stdout)
    assert answer["results"][0]["distance"] > 1e-4, "the override was applied: other inputs than those enrolled"
    assert "pipeline override spatial_size=[14, 14]" in result.stderr
    assert answer["pipeline_overrides"] == {"spatial_size": [14, 14]} and answer["pipeline"]["spatial_size"] == [14, 14]
    assert answer["gallery"] == str(tmp_path / "g.db")  # the --json answer carries results.json's record, not a bare list
    plain = invoke("gallery", "identify", tmp_path / "g.db", data / "p1" / "0.npy", "-t", "2", "--json")
    answer = json.loads(plain.stdout)
    assert answer["results"][0]["distance"] < 1e-6 and "override" not in plain.stderr
    assert answer["pipeline_overrides"] == {} and answer["pipeline"]["spatial_size"] == [10, 10]  # the gallery's own
    one_line_error(invoke("gallery", "identify", tmp_path / "g.db", data / "p1" / "0.npy", "-t", "2", "-p", "spatial_sise=3"),
                   "unknown key 'pipeline.spatial_sise'")  # fmt: skip


def test_legacy_weights_and_galleries_keep_working_with_a_notice(tmp_path):
    weights = _weights(tmp_path / "old.safetensors")  # records no pipeline
    data = _folder(tmp_path / "data", people=2, files=2)
    result = invoke("gallery", "create", tmp_path / "g.db", "-w", weights, "--spatial-size", "16")
    assert result.exit_code == 0 and "records no input pipeline" in result.stderr
    with Gallery.open(tmp_path / "g.db") as gallery:
        assert gallery.pipeline == {"name": "array", "spatial_size": [16]}
    # A gallery made before pipelines were recorded: no pipeline in its meta, only spatial_size.
    with sqlite3.connect(tmp_path / "g.db") as db:
        db.execute("DELETE FROM meta WHERE key IN ('pipeline', 'pipeline_overrides')")
        db.execute("UPDATE meta SET value = '[16, 16]' WHERE key = 'spatial_size'")
    assert invoke("gallery", "enrol", tmp_path / "g.db", "p0", *sorted((data / "p0").iterdir())).exit_code == 0
    result = invoke("gallery", "verify", tmp_path / "g.db", "p0", data / "p0" / "0.npy", "-t", "0.0001", "--json")
    assert result.exit_code == 0 and json.loads(result.stdout)["pipeline"] == {"name": "array", "spatial_size": [16, 16]}
    assert "made before galleries recorded their input pipeline" in result.stderr


def test_bulk_enrol_nested_folders_and_identify_with_a_contact_sheet(tmp_path):
    weights = _weights(tmp_path / "w.safetensors", {"name": "array"})
    known = _folder(tmp_path / "known", people=4, files=3, nested=True)
    assert invoke("gallery", "create", tmp_path / "g.db", "-w", weights).exit_code == 0
    one_line_error(invoke("gallery", "enrol", tmp_path / "g.db", known), "no people under")  # the people sit one level deeper
    result = invoke("gallery", "enrol", tmp_path / "g.db", known, "--nested", "--json")
    assert result.exit_code == 0, result.output
    assert sorted(json.loads(result.stdout)["enrolled"]) == ["group0/p0", "group0/p2", "group1/p1", "group1/p3"]
    one_line_error(invoke("gallery", "enrol", tmp_path / "g.db", known, "--nested"), "already enrolled")
    result = invoke("gallery", "identify", tmp_path / "g.db", known / "group1", "-t", "0.0001", "-o", tmp_path / "out")
    assert result.exit_code == 0, result.output
    results = json.loads((tmp_path / "out" / "results.json").read_text())["results"]
    assert len(results) == 6 and all(r["name"] == Path(r["file"]).parent.relative_to(known).as_posix() for r in results)
    sheet = (tmp_path / "out" / "sheet.html").read_text()
    assert sheet.count("<tr>") == 7 and sheet.count("data:image/png;base64") == 12
    from PIL import Image

    assert Image.open(tmp_path / "out" / "sheet.png").height > 6 * 128, "one row per query"


def test_an_export_imports_only_into_a_gallery_with_the_same_pipeline(tmp_path):
    weights = _weights(tmp_path / "w.safetensors", {"name": "array"})
    data = _folder(tmp_path / "data", people=2, files=1)
    for name, options in (("a.db", []), ("b.db", ["-p", "spatial_size=[8,8]"]), ("c.db", [])):
        assert invoke("gallery", "create", tmp_path / name, "-w", weights, *options).exit_code == 0
    assert invoke("gallery", "enrol", tmp_path / "a.db", data).exit_code == 0
    assert invoke("gallery", "export", tmp_path / "a.db", tmp_path / "a.safetensors").exit_code == 0
    one_line_error(invoke("gallery", "import", tmp_path / "b.db", tmp_path / "a.safetensors"), "same input pipeline")
    assert invoke("gallery", "import", tmp_path / "c.db", tmp_path / "a.safetensors").exit_code == 0
    with pytest.raises(ModelMismatchError):
        from convgen.gallery import api

        with Gallery.open(tmp_path / "b.db") as gallery:
            api.import_(gallery, tmp_path / "a.safetensors")


def test_a_gallery_without_weights_needs_an_encoder_that_ships_its_own():
    from convgen.gallery.api import Encoder

    random_start = encoder_spec({"name": "resnet", "channels": [4], "strides": [1]}, spatial_dims=1, in_channels=1)
    with pytest.raises(ConfigError, match="has no weights of its own"):
        Encoder(None, None, encoder=random_start)


def test_the_folder_dataset_takes_nested_identity_folders(tmp_path):
    from convgen import registry

    root = _folder(tmp_path / "data", people=4, files=2, nested=True)
    data = registry.build("dataset", {"name": "folder", "root": str(root), "nested": True})
    assert data.classes == ["group0/p0", "group0/p2", "group1/p1", "group1/p3"] and len(data) == 8
    with pytest.raises(DataError):
        registry.build("dataset", {"name": "folder", "root": str(root)})  # the people sit one level deeper


def test_a_folder_of_loose_samples_is_told_to_make_a_sub_folder_per_person(tmp_path):
    """The bug: enrolling a folder whose samples sit directly in it suggested --nested, which cannot help."""
    weights = _weights(tmp_path / "w.safetensors", {"name": "array"})
    assert invoke("gallery", "create", tmp_path / "g.db", "--weights", weights).exit_code == 0
    (tmp_path / "flat").mkdir()
    np.save(tmp_path / "flat" / "a.npy", np.zeros((1, 20, 20), np.float32))
    result = invoke("gallery", "enrol", tmp_path / "g.db", tmp_path / "flat")
    one_line_error(result, "sit directly in it", "sub-folder")
    assert "--nested" not in result.stderr


def test_create_from_an_encoder_without_shipped_weights_says_to_give_weights(tmp_path):
    """The bug: `convgen gallery create DB --encoder resnet` said only "missing a required argument: 'spatial_dims'"."""
    result = invoke("gallery", "create", tmp_path / "g.db", "--encoder", "resnet")
    one_line_error(result, "--encoder is for an encoder whose weights ship with its plugin", "--weights")
    assert not (tmp_path / "g.db").exists()
    one_line_error(invoke("gallery", "create", tmp_path / "g.db", "--encoder", "nope"), "unknown encoder 'nope'")


def test_an_override_cannot_write_other_inputs_into_a_gallery(tmp_path):
    """The bug: `gallery enrol DB ... -p spatial_size=...` stored embeddings of other inputs beside the gallery's own
    (and calibrate stored a τ measured on them), with only a notice: distances that cannot be compared."""
    weights = _weights(tmp_path / "w.safetensors", {"name": "array", "spatial_size": [12, 12]})
    data = _folder(tmp_path / "data", people=3, files=2)
    db = tmp_path / "g.db"
    assert invoke("gallery", "create", db, "-w", weights).exit_code == 0
    assert invoke("gallery", "enrol", db, "p0", data / "p0" / "0.npy").exit_code == 0
    one_line_error(invoke("gallery", "enrol", db, "p1", data / "p1" / "0.npy", "-p", "spatial_size=[10,10]"), "would mix inputs")
    one_line_error(invoke("gallery", "calibrate", db, data, "--far", "0.5", "-p", "spatial_size=[10,10]"), "would mix inputs")
    with Gallery.open(db) as gallery:
        assert [p.name for p in gallery.people()] == ["p0"] and gallery.threshold is None
    # The same setting given explicitly is no change; reading through another pipeline is still allowed.
    assert invoke("gallery", "enrol", db, "p1", data / "p1" / "0.npy", "-p", "spatial_size=[12,12]").exit_code == 0
    assert invoke("gallery", "identify", db, data / "p1" / "0.npy", "-t", "2", "-p", "spatial_size=[10,10]").exit_code == 0


def test_a_contact_sheet_of_many_queries_draws_only_the_first_rows(tmp_path):
    """The bug: `identify FOLDER -o` drew every query (re-reading each through the pipeline) into one PNG, 140 pixels
    per row: a folder of 10,000 photos made a 1.4-million-pixel-high picture of several GB."""
    from PIL import Image

    from convgen.gallery import sheet

    rows = [{"file": str(tmp_path / f"{i}.npy"), "name": None, "distance": 1.0, "threshold": 0.5} for i in range(5)]
    png, page = sheet.write(tmp_path, "identify against g.db", rows, lambda path: None, max_rows=2)
    assert Image.open(png).height == 34 + 2 * (sheet.HEIGHT + 12)
    text = page.read_text()
    assert text.count("<tr>") == 3 and "the first 2 of 5 files (all in results.json)" in text


def test_enrol_name_with_a_folder_takes_its_samples(tmp_path):
    """The bug: `convgen gallery enrol DB alice photos/alice/` read the folder as one file ("is a directory")."""
    weights = _weights(tmp_path / "w.safetensors", {"name": "array"})
    data = _folder(tmp_path / "data", people=2, files=3)
    db = tmp_path / "g.db"
    assert invoke("gallery", "create", db, "-w", weights).exit_code == 0
    result = invoke("gallery", "enrol", db, "alice", data / "p0", data / "p1" / "0.npy", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["samples"] == 4


def test_a_symlink_loop_under_a_query_folder_is_searched_once(tmp_path):
    from convgen.gallery.api import query_files

    data = _folder(tmp_path / "data", people=1, files=2)
    (data / "p0" / "loop").symlink_to(data, target_is_directory=True)
    assert [f.name for f in query_files([data])] == ["0.npy", "1.npy"]
