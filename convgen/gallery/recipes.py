"""Gallery recipes for a domain plugin: enrol, verify, identify and calibrate from the plugin's own files.

They are the ``convgen gallery`` commands as recipes, on the same code (`convgen.gallery.api`):
a file goes through the gallery's input pipeline (`convgen.pipelines`: a photo becomes a
face crop, an ECG record its heartbeats, a recording windows of its spectrogram), and its
embedding is the normalised mean over the inputs it gives. So a gallery enrolled with
``ecg-enrol`` is searched or calibrated with ``convgen gallery identify`` / ``calibrate``
with the same embeddings, and the other way round.

Which pipeline: the gallery's recorded one; for a new gallery the one the weights record;
for weights that record none, the domain's default (``pipeline`` of
`register_gallery_recipes`). ``pipeline.name=... pipeline.KEY=VALUE`` changes it
explicitly; the change is written in the run's summary and, for a new gallery, in the gallery
(enrol and calibrate refuse to change an existing gallery's).
"""

from __future__ import annotations

import copy
from pathlib import Path

from rich.console import Console

from convgen.errors import ConfigError
from convgen.gallery import api

GALLERY = {"gallery": "people.db", "weights": None, "pipeline": None, "threshold": None, "top_k": 5}
NEW_GALLERY = {"scoring": "closest", "backend": "exact"}


def _list(value) -> list:
    return [value] if isinstance(value, (str, Path)) else list(value or [])


def _overrides(config: dict) -> dict | None:
    return dict(config["pipeline"]) if config.get("pipeline") else None


def register_gallery_recipes(register, prefix: str, pipeline: dict, noun: str, what: str, encoder: dict | None = None) -> None:
    """Register ``PREFIX-enrol``, ``PREFIX-verify``, ``PREFIX-identify`` and ``PREFIX-calibrate``.

    Args:
        register: the ``register_recipes`` hook's callback.
        prefix: the plugin's recipe prefix, e.g. ``ecg``.
        pipeline: the domain's input pipeline (``{"name": ..., **options}``), used for
            weights that record none.
        noun: what a file is called in recipe keys: ``record`` gives ``records=[...]``
            (enrol, identify) and ``record=PATH`` (verify).
        what: the plural shown in descriptions, e.g. ``ECG records``.
        encoder: the encoder spec of a new gallery when no ``weights`` are given (an
            encoder whose weights ship with its code); None: weights are required.
    """
    many = noun + "s"
    base = copy.deepcopy(GALLERY)
    components = {"pipeline": "pipeline"}
    fallback = dict(pipeline)

    def files(config: dict, key: str) -> list:
        found = _list(config[key])
        if not found:
            raise ConfigError(f"no {many} given: set {many}=[a, b] (or {noun}=PATH)")
        return found

    def open_existing(config: dict):
        return api.open_gallery(config["gallery"], config["weights"], _overrides(config), fallback)

    def enrol(config: dict, out_dir: Path) -> dict:
        if config["folder"]:
            if config["name"] or _list(config[many]):
                raise ConfigError(f"give either folder=PATH (one sub-folder per person) or name=PERSON with {many}=[...], not both")
        elif not config["name"]:
            raise ConfigError(f"name=PERSON is missing: whose {many} are these? (or folder=PATH: one sub-folder per person)")
        else:
            files(config, many)  # none given: said before the encoder loads
        gallery, enc = api.open_gallery(config["gallery"], config["weights"], _overrides(config), fallback, create=True, encoder=encoder)
        options = {k: config[k] for k in NEW_GALLERY}
        try:
            if config["folder"]:  # the pipeline says which folders are one sample (a DICOM series)
                people = api.people_in(config["folder"], config["nested"], enc.is_sample)
            else:
                people = {config["name"]: api.query_files(files(config, many), enc.is_sample)}
            gallery = api.enrol_people(config["gallery"], gallery, enc, people, config["append"], show_progress=True, **options)
            count = len(gallery)
        finally:
            if gallery is not None:
                gallery.close()
        samples = sum(len(f) for f in people.values())
        Console().print(f"enrolled {', '.join(list(people)[:5])}{' …' if len(people) > 5 else ''} from {samples} {noun}(s); "
                        f"{config['gallery']} holds {count} people", highlight=False)  # fmt: skip
        enc.print_notices()
        return {"enrolled": list(people), many: samples, "people": count, **enc.record()}

    def verify(config: dict, out_dir: Path) -> dict:
        if not config["name"]:
            raise ConfigError("name=PERSON is missing: who is claimed?")
        path = files(config, noun)[0]
        gallery, enc = open_existing(config)
        with gallery:
            result = api.verify(gallery, enc.embed_files([path])[0], config["name"], config["threshold"])
        word = "MATCH" if result["match"] else "no match"
        Console().print(f"{word}: {path} vs {config['name']} (distance {result['distance']:.4f}, threshold {result['threshold']:.4f})")
        enc.print_notices()
        return {**result, "match": bool(result["match"]), **enc.record()}

    def identify(config: dict, out_dir: Path) -> dict:
        listed = files(config, many)
        gallery, enc = open_existing(config)
        with gallery:
            paths = api.query_files(listed, enc.is_sample)
            results = api.identify_files(gallery, enc, paths, config["top_k"], config["threshold"], show_progress=True)
            api.write_results(out_dir, gallery, enc, results)  # results.json, sheet.png, sheet.html
        Console().print(api.identify_table(results, f"identify against {config['gallery']}"))
        enc.print_notices()
        return {"results": [{noun: r["file"], **r} for r in results], **enc.record()}

    def calibrate(config: dict, out_dir: Path) -> dict:
        if not config["folder"]:
            raise ConfigError("folder=PATH is missing: people who are NOT enrolled, one sub-folder each")
        if config["far"] is not None and config["fpir"] is not None:
            raise ConfigError("give either fpir (1:N search) or far (1:1 verification), not both")
        mode, target = ("1:1", config["far"]) if config["far"] is not None else ("1:N", config["fpir"] or 0.01)
        gallery, enc = open_existing(config)
        with gallery:
            report = api.calibrate_folder(gallery, enc, config["folder"], mode, target, config["nested"], show_progress=True)
        reached = f"FAR {report['far']:.4g}" if mode == "1:1" else f"FPIR {report['fpir']:.4g} over {report['non_mated_searches']} searches"
        Console().print(f"threshold {report['threshold']:.4f} for {mode} at target {target:g}: {reached}", highlight=False)
        if report.get("warning"):
            Console(stderr=True).print(f"warning: {report['warning']}", highlight=False, soft_wrap=True)
        enc.print_notices()
        return {**report, **enc.record()}

    register(f"{prefix}-enrol", enrol, components=components,
             defaults={**copy.deepcopy(base), "name": None, many: [], "folder": None, "nested": False, "append": False, **NEW_GALLERY},
             description=f"Enrol people into an SQLite gallery from {what}: name=PERSON {many}=[...], or folder=PATH (a sub-folder per person).")  # fmt: skip
    register(f"{prefix}-verify", verify, defaults={**copy.deepcopy(base), "name": None, noun: None}, components=components,
             description=f"1:1: is this {noun} the claimed person? (gallery of {what})")  # fmt: skip
    register(f"{prefix}-identify", identify, defaults={**copy.deepcopy(base), many: []}, components=components,
             description=f"Who is in each of these {what} (or folders of them), or 'unknown'?")  # fmt: skip
    register(f"{prefix}-calibrate", calibrate, components=components,
             defaults={**copy.deepcopy(base), "folder": None, "nested": False, "fpir": None, "far": None},
             description=f"Choose the gallery's threshold from {what} of people who are NOT enrolled (folder=PATH, a sub-folder each).")  # fmt: skip
