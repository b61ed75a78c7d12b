"""``convgen gallery ...``: enrol people from files, verify, identify, calibrate, manage."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console
from rich.table import Table

from convgen.cli import app

gallery_app = typer.Typer(help="One-shot galleries: enrol, verify, identify (open set), calibrate, list, export.", no_args_is_help=True)
app.add_typer(gallery_app, name="gallery")

DB = typer.Argument(..., help="The gallery file (SQLite).")
JSON = typer.Option(False, "--json", help="Print JSON instead of text.")
WEIGHTS = typer.Option(None, "--weights", "-w", help="Encoder weights [default: the file recorded at creation].")
THRESHOLD = typer.Option(None, "--threshold", "-t", help="Decision threshold τ [default: the calibrated one].")


def _open(db: Path):
    from convgen.gallery.store import Gallery

    return Gallery.open(db)


def _print(data, as_json: bool, text: str) -> None:
    if as_json:
        typer.echo(json.dumps(data, indent=2))
    else:
        Console().print(text, highlight=False, soft_wrap=True)


@gallery_app.command()
def create(
    db: Path = DB,
    weights: Path = typer.Option(..., "--weights", "-w", help="The encoder weights (.safetensors) every sample is embedded with."),
    scoring: str = typer.Option("closest", help="A person's distance: 'closest' sample or 'mean' embedding."),
    backend: str = typer.Option("exact", help="Search: 'exact', 'faiss' (ANN, large galleries) or 'milvus'."),
    milvus_uri: Optional[str] = typer.Option(None, help="Milvus server (http://host:19530) [default: a milvus-lite file beside DB]."),
    option: Optional[List[str]] = typer.Option(None, "--backend-option", help="Backend setting KEY=VALUE, e.g. ef_search=256 for faiss (repeatable)."),
    spatial_size: Optional[List[int]] = typer.Option(None, help="Resize every sample to this size (repeat per axis, or once for all)."),
    as_json: bool = JSON,
):
    """Create an empty gallery bound to one encoder (its fingerprint is recorded)."""
    from convgen.gallery.api import Encoder
    from convgen.gallery.store import Gallery

    encoder = Encoder(weights)
    size = list(spatial_size) if spatial_size else None
    if size and len(size) == 1:
        size = size * encoder.spec["spatial_dims"]
    from convgen.config import parse_override

    options = {"uri": milvus_uri} if milvus_uri else {}
    for text in option or []:
        (key, *rest), value = parse_override(text)
        options[key] = value
    with Gallery.create(db, fingerprint=encoder.fingerprint, encoder=encoder.spec, dim=encoder.spec["embedding_dim"],
                        weights=encoder.weights, scoring=scoring, backend=backend, backend_options=options,
                        spatial_size=size) as gallery:  # fmt: skip
        info = {"gallery": str(db), "encoder": encoder.spec["name"], "fingerprint": gallery.fingerprint,
                "dim": gallery.dim, "scoring": scoring, "backend": backend}  # fmt: skip
    _print(info, as_json, f"created {db}: {encoder.spec['name']} embeddings ({info['dim']}-d), {scoring} scoring, {backend} search")


@gallery_app.command()
def enrol(
    db: Path = DB,
    name: str = typer.Argument(..., help="The person's name."),
    files: List[Path] = typer.Argument(..., help="One or more samples of this person."),
    append: bool = typer.Option(False, "--append", help="Add samples to a person already enrolled."),
    weights: Optional[Path] = WEIGHTS,
    as_json: bool = JSON,
):
    """Enrol a person from one or more samples: no retraining, one transaction."""
    from convgen.gallery.api import encoder_for

    with _open(db) as gallery:
        embeddings = encoder_for(gallery, weights).embed_files(files)
        gallery.enrol(name, embeddings, [str(f) for f in files], append=append)
        count = len(gallery)
    _print({"name": name, "samples": len(files), "people": count}, as_json, f"enrolled {name} ({len(files)} sample(s)); {count} people in {db}")


@gallery_app.command()
def verify(
    db: Path = DB,
    name: str = typer.Argument(..., help="The claimed identity."),
    file: Path = typer.Argument(..., help="The sample to check."),
    threshold: Optional[float] = THRESHOLD,
    weights: Optional[Path] = WEIGHTS,
    as_json: bool = JSON,
):
    """1:1 — is FILE the person NAME? Exit code 0 when it matches, 10 when it does not."""
    from convgen.gallery import api

    with _open(db) as gallery:
        result = api.verify(gallery, api.encoder_for(gallery, weights).embed_files([file]), name, threshold)
    verdict = "match" if result["match"] else "no match"
    _print(result, as_json, f"{verdict}: {file} vs {name}, distance {result['distance']:.4f} (τ = {result['threshold']:.4f})")
    if not result["match"]:
        raise typer.Exit(10)


@gallery_app.command()
def identify(
    db: Path = DB,
    files: List[Path] = typer.Argument(..., help="Samples to identify."),
    top_k: int = typer.Option(5, "--top-k", "-k", help="Candidates to list per sample."),
    threshold: Optional[float] = THRESHOLD,
    weights: Optional[Path] = WEIGHTS,
    as_json: bool = JSON,
):
    """1:N, open set — who is in each file, or 'unknown' when nobody enrolled is within τ."""
    from convgen.gallery import api

    with _open(db) as gallery:
        results = api.identify(gallery, api.encoder_for(gallery, weights).embed_files(files), top_k, threshold)
    for file, result in zip(files, results):
        result["file"] = str(file)
    lines = [
        f"{r['file']}: {r['name'] or 'unknown'} (distance {r['distance']:.4f}, τ = {r['threshold']:.4f}; "
        + ", ".join(f"{c['name']} {c['distance']:.3f}" for c in r["candidates"]) + ")"
        for r in results
    ]  # fmt: skip
    _print(results, as_json, "\n".join(lines))


@gallery_app.command()
def calibrate(
    db: Path = DB,
    data: Path = typer.Argument(..., help="A folder of people who are NOT enrolled, one sub-folder per person."),
    fpir: Optional[float] = typer.Option(None, help="Target false positive identification rate for 1:N search [default: 0.01]."),
    far: Optional[float] = typer.Option(None, help="Calibrate for 1:1 verification at this false accept rate instead."),
    weights: Optional[Path] = WEIGHTS,
    as_json: bool = JSON,
):
    """Choose and store τ from people who are not enrolled, at this gallery's size."""
    from convgen.data import FolderOfClasses
    from convgen.errors import ConfigError
    from convgen.gallery import api

    if fpir is not None and far is not None:
        raise ConfigError("give either --fpir (1:N search) or --far (1:1 verification), not both")
    mode, target = ("1:1", far) if far is not None else ("1:N", fpir if fpir is not None else 0.01)
    dataset = FolderOfClasses(data)
    with _open(db) as gallery:
        encoder = api.encoder_for(gallery, weights)
        embeddings = encoder.embed_files(dataset.files)
        report = api.calibrate(gallery, embeddings, dataset.labels, mode, target)
    rate = f"FAR {report['far']:.4g} (TAR {report['tar']:.4f})" if mode == "1:1" else (
        f"FPIR {report['fpir']:.4g} over {report['non_mated_searches']} searches at {report['gallery_people']} people"
        + (f", DIR {report['dir']:.4f}" if report["dir"] is not None else ""))  # fmt: skip
    _print(report, as_json, f"τ = {report['threshold']:.4f} for {mode} at target {target:g}: {rate}")


@gallery_app.command("list")
def list_people(db: Path = DB, as_json: bool = JSON):
    """The enrolled people and how many samples each has."""
    with _open(db) as gallery:
        people = gallery.people()
        tau = gallery.threshold
    if as_json:
        typer.echo(json.dumps([{"name": p.name, "samples": p.samples} for p in people], indent=2))
        return
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
def export_(db: Path = DB, out: Path = typer.Argument(..., help="The .safetensors file to write."), as_json: bool = JSON):
    """Write every person's embeddings (not their samples) to one safetensors file."""
    from convgen.gallery import api

    with _open(db) as gallery:
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
