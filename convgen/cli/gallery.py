"""``convgen gallery ...``: enrol people from files, verify, identify, calibrate, manage."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer

from convgen.cli.root import app

gallery_app = typer.Typer(help="One-shot galleries: enrol, verify, identify (open set), calibrate, list, export.", no_args_is_help=True)
app.add_typer(gallery_app, name="gallery")

DB = typer.Argument(..., help="The gallery file (SQLite).")
JSON = typer.Option(False, "--json", help="Print JSON instead of text.")
WEIGHTS = typer.Option(None, "--weights", "-w", help="Encoder weights [default: the file recorded at creation].")
THRESHOLD = typer.Option(None, "--threshold", "-t", help="Decision threshold τ [default: the calibrated one].")


def _open(db: Path, readonly: bool = False):
    """The gallery; ``readonly`` for commands that only read it (they work on a read-only file, folder or mount)."""
    from convgen.gallery.store import Gallery

    return Gallery.open(db, readonly=readonly)


def _print(data, as_json: bool, text: str) -> None:
    if as_json:
        typer.echo(json.dumps(data, indent=2))
    else:
        from rich.console import Console  # here, not at the top: --help needs no rich

        Console().print(text, highlight=False, soft_wrap=True)


PIPELINE_OPTION = typer.Option(
    None, "--pipeline-option", "-p",
    help="Change a setting of the input pipeline the encoder recorded, KEY=VALUE (repeatable; name=NAME for another "
         "pipeline). Written in the output and, at creation, in the gallery; enrol and calibrate refuse a change to an "
         "existing gallery's.",
)  # fmt: skip
NESTED = typer.Option(False, "--nested", help="A person is any folder below that holds files, named by its relative path (alphabet/character).")


def _encoder(gallery, weights, options):
    from convgen.gallery.api import Encoder
    from convgen.pipelines import parse_options

    return Encoder(weights, gallery, parse_options(options) or None)


@gallery_app.command()
def create(
    db: Path = DB,
    weights: Optional[Path] = typer.Option(None, "--weights", "-w", help="The encoder weights (.safetensors) every sample is embedded with."),
    encoder: Optional[str] = typer.Option(None, "--encoder", help="Instead of --weights: an encoder whose weights ship with its plugin (e.g. dlib-resnet)."),
    scoring: str = typer.Option("closest", help="A person's distance: 'closest' sample or 'mean' embedding."),
    backend: str = typer.Option("exact", help="Search backend: 'exact', 'faiss' (ANN, large galleries), 'milvus', or one a plugin registers (see convgen plugins)."),
    milvus_uri: Optional[str] = typer.Option(None, help="Milvus server (http://host:19530) [default: a milvus-lite file beside DB]."),
    option: Optional[List[str]] = typer.Option(None, "--backend-option", help="Backend setting KEY=VALUE, e.g. ef_search=256 for faiss (repeatable)."),
    spatial_size: Optional[List[int]] = typer.Option(None, help="Resize every sample to this size (repeat per axis, or once for all): the 'array' pipeline's spatial_size."),
    pipeline_option: Optional[List[str]] = PIPELINE_OPTION,
    as_json: bool = JSON,
):
    """Create an empty gallery bound to one encoder and its input pipeline (both recorded)."""
    from convgen.config import parse_override
    from convgen.errors import ConfigError
    from convgen.gallery import api
    from convgen.pipelines import describe, parse_options

    if bool(weights) == bool(encoder):
        raise ConfigError("give --weights PATH (a trained encoder.safetensors) or --encoder NAME (weights shipped with a plugin)")
    overrides = parse_options(pipeline_option)
    if spatial_size:
        overrides["spatial_size"] = list(spatial_size)
    spec = None
    if encoder:
        from convgen.registry import get_registry
        from convgen.weights import encoder_spec

        try:
            spec = encoder_spec({"name": encoder})
        except ConfigError as exc:
            if encoder not in get_registry("encoder"):
                raise
            raise ConfigError(f"--encoder {encoder} cannot be built alone ({exc}): --encoder is for an encoder whose weights "
                              "ship with its plugin (e.g. dlib-resnet); for one you trained, give --weights PATH") from None  # fmt: skip
    model = api.Encoder(weights, None, overrides or None, encoder=spec)
    options = {"uri": milvus_uri} if milvus_uri else {}
    for text in option or []:
        (key, *rest), value = parse_override(text)
        options[key] = value
    with api.create(db, model, scoring=scoring, backend=backend, backend_options=options) as gallery:
        info = {"gallery": str(db), "encoder": model.spec["name"], "fingerprint": gallery.fingerprint,
                "dim": gallery.dim, "scoring": scoring, "backend": backend, **model.record()}  # fmt: skip
    _print(info, as_json, f"created {db}: {model.spec['name']} embeddings ({info['dim']}-d), {scoring} scoring, {backend} search; "
                          f"files go through {describe(model.pipeline)}")  # fmt: skip
    model.print_notices()


@gallery_app.command()
def enrol(
    db: Path = DB,
    target: str = typer.Argument(..., help="The person's name, or a FOLDER with one sub-folder of samples per person."),
    files: Optional[List[Path]] = typer.Argument(None, help="One or more samples of this person, or folders of them (with NAME)."),
    append: bool = typer.Option(False, "--append", help="Add samples to a person already enrolled."),
    nested: bool = NESTED,
    weights: Optional[Path] = WEIGHTS,
    pipeline_option: Optional[List[str]] = PIPELINE_OPTION,
    as_json: bool = JSON,
):
    """Enrol one person (NAME FILE...) or everyone in FOLDER (a sub-folder per person), batched, in one transaction per person."""
    from convgen.errors import ConfigError
    from convgen.gallery import api

    if not files and not Path(target).is_dir():
        raise ConfigError(f"give NAME FILE... (samples of one person) or a FOLDER with one sub-folder per person; {target} is not a folder")
    with _open(db) as gallery:
        encoder = _encoder(gallery, weights, pipeline_option)
        if files:  # folders among them: their samples (or the folder itself, where the pipeline reads it as one)
            people = {target: api.query_files(files, encoder.is_sample)}
        else:
            people = api.people_in(target, nested, encoder.is_sample)
        api.enrol_people(db, gallery, encoder, people, append, show_progress=True)
        count = len(gallery)
    samples = sum(len(f) for f in people.values())
    data = {"enrolled": list(people), "samples": samples, "people": count, **encoder.record()}
    if len(people) == 1:
        data["name"] = next(iter(people))
    who = next(iter(people)) if len(people) == 1 else f"{len(people)} people"
    _print(data, as_json, f"enrolled {who} ({samples} sample(s)); {count} people in {db}")
    encoder.print_notices()


@gallery_app.command()
def verify(
    db: Path = DB,
    name: str = typer.Argument(..., help="The claimed identity."),
    file: Path = typer.Argument(..., help="The sample to check."),
    threshold: Optional[float] = THRESHOLD,
    weights: Optional[Path] = WEIGHTS,
    pipeline_option: Optional[List[str]] = PIPELINE_OPTION,
    as_json: bool = JSON,
):
    """1:1 — is FILE the person NAME? Exit code 0 when it matches, 10 when it does not."""
    from convgen.gallery import api

    with _open(db, readonly=True) as gallery:
        encoder = _encoder(gallery, weights, pipeline_option)
        result = api.verify(gallery, encoder.embed_files([file]), name, threshold)
    result = {**result, "match": bool(result["match"]), **encoder.record()}
    verdict = "match" if result["match"] else "no match"
    head = ""
    if "probability" in result:  # the trained pair head's opinion, beside the distance's
        head = f"; pair head: probability {result['probability']:.4f}"
        if "head_match" in result:
            head += f" ({'match' if result['head_match'] else 'no match'} at ≥ {result['head_threshold']:.4f})"
    _print(result, as_json, f"{verdict}: {file} vs {name}, distance {result['distance']:.4f} (τ = {result['threshold']:.4f}){head}")
    encoder.print_notices()
    if not result["match"]:
        raise typer.Exit(10)


@gallery_app.command()
def identify(
    db: Path = DB,
    files: List[Path] = typer.Argument(..., help="Samples to identify, or folders of them (searched recursively)."),
    top_k: int = typer.Option(5, "--top-k", "-k", help="Candidates to list per sample."),
    threshold: Optional[float] = THRESHOLD,
    weights: Optional[Path] = WEIGHTS,
    pipeline_option: Optional[List[str]] = PIPELINE_OPTION,
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Also write results.json and a contact sheet (sheet.png, sheet.html) in this folder."),
    as_json: bool = JSON,
):
    """1:N, open set — who is in each file, or 'unknown' when nobody enrolled is within τ. Batched, with a progress bar.

    --json prints results.json's record: gallery, pipeline, pipeline_overrides and results (one entry per file)."""
    from convgen.gallery import api

    with _open(db, readonly=True) as gallery:
        encoder = _encoder(gallery, weights, pipeline_option)
        queries = api.query_files(files, encoder.is_sample)
        results = api.identify_files(gallery, encoder, queries, top_k, threshold, show_progress=not as_json)
        sheet = api.write_results(output, gallery, encoder, results) if output else None
        record = api.results_record(gallery, encoder, results)
    if as_json:
        typer.echo(json.dumps(record, indent=2))
    else:
        from rich.console import Console

        console = Console()
        console.print(api.identify_table(results, f"identify against {db}"))
        if sheet:
            console.print(f"wrote {output / 'results.json'}, {sheet} and {sheet.with_suffix('.html')}", highlight=False, soft_wrap=True)
    encoder.print_notices()


@gallery_app.command()
def calibrate(
    db: Path = DB,
    data: Path = typer.Argument(..., help="A folder of people who are NOT enrolled, one sub-folder per person."),
    fpir: Optional[float] = typer.Option(None, help="Target false positive identification rate for 1:N search [default: 0.01]."),
    far: Optional[float] = typer.Option(None, help="Calibrate for 1:1 verification at this false accept rate instead."),
    nested: bool = NESTED,
    weights: Optional[Path] = WEIGHTS,
    pipeline_option: Optional[List[str]] = PIPELINE_OPTION,
    as_json: bool = JSON,
):
    """Choose and store τ from people who are not enrolled, at this gallery's size (files through the gallery's pipeline)."""
    from convgen.errors import ConfigError
    from convgen.gallery import api

    if fpir is not None and far is not None:
        raise ConfigError("give either --fpir (1:N search) or --far (1:1 verification), not both")
    mode, target = ("1:1", far) if far is not None else ("1:N", fpir if fpir is not None else 0.01)
    with _open(db) as gallery:
        encoder = _encoder(gallery, weights, pipeline_option)
        report = api.calibrate_folder(gallery, encoder, data, mode, target, nested, show_progress=not as_json)
    if mode == "1:1":
        lo, hi = report["far_ci95"]
        rate = f"FAR {report['far']:.4g} (95% CI {lo:.3g}–{hi:.3g}, {report['people']} people; TAR {report['tar']:.4f})"
        if "head" in report:
            rate += f"; pair head: probability ≥ {report['head']['threshold_probability']:.4f} (TAR {report['head']['tar']:.4f})"
    else:
        lo, hi = report["fpir_ci95"]
        rate = (f"FPIR {report['fpir']:.4g} (95% CI {lo:.3g}–{hi:.3g}) over {report['non_mated_searches']} searches of "
                f"{report['non_mated_people']} people, at {report['gallery_people']} enrolled"
                + (f", DIR {report['dir']:.4f}" if report["dir"] is not None else ""))  # fmt: skip
    _print({**report, **encoder.record()}, as_json, f"τ = {report['threshold']:.4f} for {mode} at target {target:g}: {rate}")
    if report.get("warning"):
        typer.echo(f"warning: {report['warning']}", err=True)
    encoder.print_notices()


@gallery_app.command("list")
def list_people(db: Path = DB, as_json: bool = JSON):
    """The enrolled people and how many samples each has."""
    with _open(db, readonly=True) as gallery:
        people = gallery.people()
        tau = gallery.threshold
    if as_json:
        typer.echo(json.dumps([{"name": p.name, "samples": p.samples} for p in people], indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    console = Console()
    console.print(f"{db}: {len(people)} people, τ = {f'{tau:.4f}' if tau is not None else 'not calibrated'}", highlight=False)
    table = Table("name", "samples")
    for person in people:
        table.add_row(person.name, str(person.samples))
    console.print(table)


@gallery_app.command()
def rename(db: Path = DB, old: str = typer.Argument(...), new: str = typer.Argument(...), as_json: bool = JSON):
    """Rename an enrolled person."""
    with _open(db) as gallery:
        gallery.rename(old, new)
    _print({"renamed": old, "to": new}, as_json, f"renamed {old} to {new}")


@gallery_app.command()
def remove(db: Path = DB, name: str = typer.Argument(...), as_json: bool = JSON):
    """Remove a person and all their samples."""
    with _open(db) as gallery:
        gallery.remove(name)
        count = len(gallery)
    _print({"removed": name, "people": count}, as_json, f"removed {name}; {count} people in {db}")


@gallery_app.command("export")
def export_(
    db: Path = DB,
    out: Path = typer.Argument(..., help="The .safetensors file to write."),
    force: bool = typer.Option(False, "--force", help="Replace OUT if it exists."),
    as_json: bool = JSON,
):
    """Write every person's embeddings (not their samples) to one safetensors file (never over a file, unless --force)."""
    from convgen.errors import PathError
    from convgen.gallery import api

    if out.is_dir():
        raise PathError(f"{out} is a folder; give the .safetensors file to write")
    if out.exists() and not force:
        raise PathError(f"{out} already exists; choose a new file, or pass --force to replace it")
    with _open(db, readonly=True) as gallery:
        api.export(gallery, out)
        count = len(gallery)
    _print({"exported": count, "file": str(out)}, as_json, f"exported {count} people to {out}")


@gallery_app.command("import")
def import_(db: Path = DB, source: Path = typer.Argument(..., help="A file written by `convgen gallery export`."), as_json: bool = JSON):
    """Add the people of an export to this gallery (same encoder only; all or nothing)."""
    from convgen.gallery import api

    with _open(db) as gallery:
        count = api.import_(gallery, source)
    _print({"imported": count, "gallery": str(db)}, as_json, f"imported {count} people into {db}")


@gallery_app.command()
def backup(db: Path = DB, dest: Path = typer.Argument(..., help="The new file to write the copy to."), as_json: bool = JSON):
    """Copy a gallery consistently, even while other processes enrol (SQLite's online backup).

    Copying the file with cp can catch it between two writes (and misses its WAL file); this cannot.
    """
    with _open(db, readonly=True) as gallery:
        gallery.backup(dest)
        count = len(gallery)
    _print({"backup": str(dest), "people": count}, as_json, f"backed up {db} ({count} people) to {dest}")
