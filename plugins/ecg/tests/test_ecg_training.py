"""What ECG training relies on: beat augmentation, person-disjoint folds, and the shipped encoder."""

import json

import numpy as np
import torch
from convgen_ecg import pretrained, recipes
from convgen_ecg.datasets import EcgRecords, person_fold, sample_dir

from convgen.metric import evaluation
from convgen.metric.augment import Augment
from convgen.metric.embedder import Embedder
from convgen.testing import invoke
from convgen.weights import read_pipeline

ECGID = sample_dir("ecgid")


def test_the_recipe_augmentation_keeps_a_beat_a_beat():
    """Never mirrored; the R peak stays within the shift and stretch bounds; the shape stays the person's."""
    assert recipes.AUGMENT["flip"] == [] and recipes.AUGMENT["rotate"] == 0
    beats = EcgRecords(root=str(ECGID), people=["Person_01"], max_records_per_person=1).windows[:5]
    augment = Augment(**recipes.AUGMENT)
    torch.manual_seed(0)
    length = beats.shape[-1]
    peak = int(round(recipes.PIPELINE["before"] * recipes.PIPELINE["fs"]))
    bound = (recipes.AUGMENT["shift"] + recipes.AUGMENT["scale"]) * length + 2
    changed = []
    for beat in beats:
        assert abs(int(beat[0].argmax()) - peak) <= 2  # the windows are cut at the R peak
        for _ in range(10):
            out = augment(beat)
            assert out.shape == beat.shape and torch.isfinite(out).all()
            assert abs(int(out[0].argmax()) - peak) <= bound
            lags = range(-int(bound), int(bound) + 1)  # moved, not reshaped: some lag lines it up with the beat again
            assert max(float(np.corrcoef(np.roll(out[0], lag)[20:-20], beat[0][20:-20])[0, 1]) for lag in lags) > 0.8
            changed.append(float((out - beat).abs().max()))
    assert min(changed) > 0  # every draw changes the beat


def test_folds_divide_the_first_folders_people_and_keep_extra_training_people():
    names = [f"Person_{i:02d}" for i in range(1, 11)]
    parts = [person_fold(names, 5, k) for k in range(5)]
    assert sorted(p for part in parts for p in part) == names and all(len(part) == 2 for part in parts)
    test = EcgRecords(root=str(ECGID), fold=1, max_seconds=8)
    assert set(test.classes) == parts[1]
    train = EcgRecords(root=[str(ECGID), str(sample_dir("mitdb"))], fold=1, exclude_fold=True, max_seconds=8)
    assert {c.split("/")[1] for c in train.classes if c.startswith("ecgid/")} == set(names) - parts[1]
    assert {"mitdb/100", "mitdb/119"} <= set(train.classes)  # further folders: extra people, kept whole


def test_a_metadata_file_beside_the_person_folders_is_nobodys_record(tmp_path):
    import shutil

    for person in ("Person_01", "Person_02"):
        shutil.copytree(ECGID / person, tmp_path / person)
    (tmp_path / "people.csv").write_text("sex,age\nF,30\n")  # like LUDB's ludb.csv
    assert EcgRecords(root=str(tmp_path), max_seconds=8).classes == ["Person_01", "Person_02"]


def test_the_shipped_encoder_embeds_records_and_identifies_people_it_never_saw():
    """Persons 2, 3 and 5 of the bundled sample were held out of its training: enrol one record, identify the others."""
    card = pretrained.card()
    assert not set(card["held_out"]["people"]) & set(card["trained_on"]["people"])
    assert pretrained.path().stat().st_size < 20 * 2**20
    pipeline = read_pipeline(pretrained.path())
    assert pipeline["name"] == "ecg" and {k: pipeline[k] for k in ("fs", "lead", "before", "after")} == \
        {k: recipes.PIPELINE[k] for k in ("fs", "lead", "before", "after")}  # fmt: skip
    bundled = EcgRecords(root=str(ECGID))
    encoder, spec, _ = pretrained.load()
    with torch.no_grad():
        embeddings = Embedder(encoder).eval()(bundled.windows).numpy()
    assert embeddings.shape == (len(bundled), spec["embedding_dim"]) and np.isfinite(embeddings).all()
    held = sorted(set(card["held_out"]["people"]) & set(bundled.classes))
    assert held == ["Person_02", "Person_03", "Person_05"]
    unseen = EcgRecords(root=str(ECGID), people=held)
    with torch.no_grad():
        embeddings = Embedder(encoder).eval()(unseen.windows).numpy()
    result = evaluation.cross_session(embeddings, unseen.labels, unseen.sessions, fpir_targets=[0.1])
    assert result["closed_set"]["sessions"]["probes"] == 5 and result["closed_set"]["sessions"]["rank_1"] == 1.0


def test_ecg_evaluate_without_weights_measures_the_shipped_encoder(tmp_path):
    result = invoke("run", "ecg-evaluate", "baselines=[]", "-o", tmp_path)
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["encoder_fingerprint"] == pretrained.load()[2]
    assert report["cross_session"]["closed_set"]["sessions"]["probes"] == 15


def test_a_new_ecg_gallery_without_weights_uses_the_shipped_encoder(tmp_path):
    db, first, second = tmp_path / "people.db", ECGID / "Person_03" / "rec_1.hea", ECGID / "Person_03" / "rec_2.hea"
    result = invoke("run", "ecg-enrol", f"gallery={db}", "name=p3", f"records=[{first}]", "-o", tmp_path / "r1")
    assert result.exit_code == 0, result.output
    result = invoke("run", "ecg-enrol", f"gallery={db}", "name=p5", f"records=[{ECGID / 'Person_05' / 'rec_1.hea'}]", "-o", tmp_path / "r2")
    assert result.exit_code == 0, result.output
    result = invoke("run", "ecg-identify", f"gallery={db}", f"records=[{second}]", "threshold=1.0", "-o", tmp_path / "r3")
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "r3" / "summary.json").read_text())["results"][0]["name"] == "p3"
    from convgen.gallery.store import Gallery

    with Gallery.open(db) as gallery:
        assert gallery.encoder["name"] == pretrained.NAME


def test_window_scale_keeps_each_beats_shape_and_drops_its_amplitude():
    record = ECGID / "Person_01" / "rec_1.hea"
    from convgen_ecg.preprocess import EcgPipeline
    from convgen_ecg.signals import read_record

    raw = read_record(record)
    by_record = EcgPipeline.of(scale="record")(raw).windows
    by_window = EcgPipeline.of(scale="window")(raw).windows
    rms = by_record.pow(2).mean(-1, keepdim=True).sqrt()
    torch.testing.assert_close(by_window, by_record / rms)
    torch.testing.assert_close(by_window.pow(2).mean(-1), torch.ones(len(by_window), 1))  # every beat at RMS 1
    assert float(rms.max() / rms.min()) > 1.05  # ... which the record's own scale did not give
