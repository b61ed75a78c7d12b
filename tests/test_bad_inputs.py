"""The catalogue of bad inputs (docs/reliability.md), one CLI run per row.

Every row runs ``convgen run ...`` or ``convgen gallery ...`` in a folder of its own and
checks the promise the docs make: a non-zero exit code that is the row's code (the error's
class: 3 config, 4 model mismatch, 5 bad data, 6 wrong path), one line on stderr that
starts with ``error: `` and says what is wrong, no traceback, and nothing written: every
file in the folder is byte-for-byte as before, and no output folder appears.
"""

from __future__ import annotations

import ast
import json
import re
import shutil
import sqlite3
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import assert_one_line_error, invoke, run_convgen
from convgen.data import SyntheticClusters
from convgen.weights import build_encoder, encoder_spec, save_encoder

ROOT = Path(__file__).resolve().parent.parent
PLUGINS = ROOT / "plugins"
DOC = ROOT / "docs" / "reliability.md"
PORTRAIT = PLUGINS / "faces/src/convgen_faces/samples/photos/astronaut.png"
MITDB = PLUGINS / "ecg/src/convgen_ecg/samples/mitdb"
ANATOMY = PLUGINS / "ct/src/convgen_ct/samples/anatomical.nii"
QUICK_STYLE = ["iterations=1", "device=cpu"]
SMALL_EMBED = ["dataset.identities=3", "dataset.samples_per_identity=3", "dataset.size=16", "encoder.channels=[4, 8]",
               "encoder.strides=[1, 2]", "batch_size=4", "device=cpu"]  # fmt: skip
SMALL_TRAIN = ["spatial_dims=1", "encoder.channels=[4, 8]", "encoder.strides=[1, 2]", "encoder.embedding_dim=16", "epochs=1",
               "device=cpu"]  # fmt: skip


@dataclass
class Case:
    name: str
    build: Callable  # build(t: Here) -> the CLI arguments; makes the row's files in t.dir
    code: int
    contains: str  # what the one-line message must say (the docs table quotes it)


CASES: dict[str, Case] = {}


def case(name: str, code: int, contains: str):
    def register(build):
        CASES[name] = Case(name, build, code, contains)
        return build

    return register


@dataclass
class Here:
    """The row's own folder, the shared assets, and where a run would write."""

    dir: Path
    assets: Path

    @property
    def out(self) -> Path:
        return self.dir / "out"

    def file(self, name: str, data: bytes) -> Path:
        path = self.dir / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return path

    def npy(self, name: str, array) -> Path:
        path = self.dir / name
        np.save(path, np.asarray(array))
        return path

    def gallery(self) -> Path:
        """A copy of a gallery holding one person, built with assets/enc.safetensors."""
        return Path(shutil.copy(self.assets / "people.db", self.dir / "people.db"))

    def truncated(self, source: Path, name: str, keep: float = 0.5) -> Path:
        data = Path(source).read_bytes()
        return self.file(name, data[: int(len(data) * keep)])


def safetensors_bytes(header: dict, data: bytes) -> bytes:
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw + data


def wav(path: Path, samples, subtype="PCM_16") -> Path:
    import soundfile as sf

    sf.write(path, np.asarray(samples, np.float32), 8000, subtype=subtype)
    return path


def tone(n=4000):
    return 0.3 * np.sin(np.arange(n) / 5)


# -- images (faces plugin) -------------------------------------------------------------


@case("image-corrupt", 5, "is not a readable image")
def _(t):
    return ["run", "faces-stylize", f"content={t.file('photo.png', b'this is not a png')}", *QUICK_STYLE, "-o", t.out]


@case("image-truncated", 5, "is not a readable image")
def _(t):
    return ["run", "faces-stylize", f"content={t.truncated(PORTRAIT, 'cut.png')}", *QUICK_STYLE, "-o", t.out]


@case("image-empty-file", 5, "is not a readable image")
def _(t):
    return ["run", "faces-stylize", f"style={t.file('empty.jpg', b'')}", *QUICK_STYLE, "-o", t.out]


# -- recordings (audio plugin) ---------------------------------------------------------


@case("wav-corrupt", 5, "is not a readable audio file")
def _(t):
    return ["run", "audio-stylize", f"content={t.file('junk.wav', b'RIFF0000WAVEjunk')}", *QUICK_STYLE, "-o", t.out]


@case("wav-truncated", 5, "is truncated")
def _(t):
    good = wav(t.dir / "good.wav", tone())
    cut = t.truncated(good, "cut.wav")
    good.unlink()
    return ["run", "audio-stylize", f"content={cut}", *QUICK_STYLE, "-o", t.out]


@case("wav-nan", 5, "NaN or infinite")
def _(t):
    y = tone()
    y[100] = np.nan
    return ["run", "audio-stylize", f"content={wav(t.dir / 'nan.wav', y, 'FLOAT')}", *QUICK_STYLE, "-o", t.out]


@case("wav-empty", 5, "holds no audio samples")
def _(t):
    return ["run", "audio-stylize", f"style={wav(t.dir / 'empty.wav', [])}", *QUICK_STYLE, "-o", t.out]


@case("wav-absurd-rate", 5, "claims a sampling rate of 2147483647 Hz")
def _(t):
    data = bytearray(wav(t.dir / "fast.wav", tone()).read_bytes())
    data[24:28] = (2**31 - 1).to_bytes(4, "little")  # resampled to 8 kHz it was 1 sample (and a numpy warning line)
    return ["run", "audio-stylize", f"content={t.file('fast.wav', bytes(data))}", *QUICK_STYLE, "-o", t.out]


# -- ECG records (WFDB, ecg plugin) ----------------------------------------------------


@case("wfdb-data-file-missing", 5, "data file 100.dat is missing")
def _(t):
    header = Path(shutil.copy(MITDB / "100.hea", t.dir / "100.hea"))
    return ["run", "ecg-peaks", f"record={header}", "-o", t.out]


@case("wfdb-truncated", 5, "truncated or corrupt")
def _(t):
    header = Path(shutil.copy(MITDB / "100.hea", t.dir / "100.hea"))
    t.file("100.dat", (MITDB / "100.dat").read_bytes()[:5000])
    return ["run", "ecg-peaks", f"record={header}", "-o", t.out]


@case("wfdb-corrupt-header", 5, "not a readable WFDB header")
def _(t):
    return ["run", "ecg-peaks", f"record={t.file('bad.hea', b'this is no header')}", "-o", t.out]


@case("csv-binary", 5, "not a text CSV file")
def _(t):
    return ["run", "ecg-peaks", f"record={t.file('r.csv', bytes(range(256)) * 10)}", "fs_csv=250", "-o", t.out]


@case("csv-negative-rate", 3, "fs_csv must be in (0, 10000000], got -250")
def _(t):
    record = t.file("r.csv", b"0.1\n0.2\n" * 100)
    return ["run", "ecg-peaks", f"record={record}", "fs_csv=-250", "-o", t.out]


# -- volumes (NIfTI and DICOM, ct plugin) ----------------------------------------------


@case("nifti-corrupt", 5, "is not a readable NIfTI file")
def _(t):
    return ["run", "ct-stylize", f"content={t.file('junk.nii', b'not a volume')}", *QUICK_STYLE, "-o", t.out]


@case("nifti-truncated", 5, "is not a readable NIfTI file")
def _(t):
    return ["run", "ct-stylize", f"content={t.truncated(ANATOMY, 'cut.nii', 0.3)}", *QUICK_STYLE, "-o", t.out]


@case("nifti-header-dims-huge", 5, "is not a readable NIfTI file")
def _(t):
    data = bytearray(ANATOMY.read_bytes())
    struct.pack_into("<8h", data, 40, 3, 30000, 30000, 30000, 1, 1, 1, 1)  # dim[]: 2.7e13 voxels (nibabel also logged a line)
    return ["run", "ct-stylize", f"content={t.file('big.nii', bytes(data))}", *QUICK_STYLE, "-o", t.out]


@case("nifti-constant-volume", 5, "the percentiles window leaves the volume constant")
def _(t):
    import nibabel as nib

    nib.save(nib.Nifti1Image(np.ones((16, 16, 16), np.float32), np.eye(4)), t.dir / "flat.nii")  # MONAI warned a second line
    return ["run", "ct-stylize", f"content={t.dir / 'flat.nii'}", *QUICK_STYLE, "-o", t.out]


@case("dicom-corrupt", 5, "holds no DICOM files")
def _(t):
    t.file("series/slice000.dcm", b"junk")
    t.file("series/slice001.dcm", b"more junk")
    return ["run", "ct-stylize", f"content={t.dir / 'series'}", *QUICK_STYLE, "-o", t.out]


@case("dicom-mixed-series", 5, "mixes 2 DICOM series")
def _(t):
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    folder = t.dir / "series"
    folder.mkdir()
    for i, uid in enumerate(["1.2.826.0.1.1", "1.2.826.0.1.1", "1.2.826.0.1.2"]):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = CTImageStorage, generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID, ds.SeriesInstanceUID = CTImageStorage, meta.MediaStorageSOPInstanceUID, uid
        ds.Modality, ds.InstanceNumber, ds.Rows, ds.Columns = "CT", i + 1, 4, 4
        ds.ImagePositionPatient, ds.ImageOrientationPatient, ds.PixelSpacing = [0, 0, float(i)], [1, 0, 0, 0, 1, 0], [1, 1]
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.PixelData = np.zeros((4, 4), np.uint16).tobytes()
        ds.save_as(folder / f"slice{i:03d}.dcm", enforce_file_format=True)
    return ["run", "ct-stylize", f"content={folder}", *QUICK_STYLE, "-o", t.out]


# -- shapes and values -----------------------------------------------------------------


@case("wrong-dims-2d-for-a-volume", 5, "is a 2D image")
def _(t):
    import nibabel as nib

    nib.save(nib.Nifti1Image(np.ones((16, 16), np.float32), np.eye(4)), t.dir / "slice.nii.gz")
    return ["run", "ct-stylize", f"content={t.dir / 'slice.nii.gz'}", *QUICK_STYLE, "-o", t.out]


@case("wrong-dims-for-the-encoder", 5, "does not fit the gallery's encoder")
def _(t):
    return ["gallery", "enrol", t.gallery(), "bob", t.npy("volume.npy", np.zeros((1, 8, 8, 8), np.float32))]


@case("too-many-dims", 5, "must be channel-first")
def _(t):
    return ["gallery", "enrol", t.gallery(), "bob", t.npy("five.npy", np.zeros((1, 2, 3, 4, 5), np.float32))]


@case("nan-values", 5, "NaN or infinite")
def _(t):
    return ["gallery", "enrol", t.gallery(), "bob", t.npy("nan.npy", np.full((1, 32), np.nan, np.float32))]


@case("infinite-values", 5, "NaN or infinite")
def _(t):
    x = np.zeros((1, 32), np.float32)
    x[0, 5] = np.inf
    return ["gallery", "identify", t.gallery(), t.npy("inf.npy", x), "-t", "1"]


@case("nan-voxels", 5, "NaN or infinite voxels")
def _(t):
    import nibabel as nib

    holes = np.ones((12, 12, 12), np.float32)
    holes[3, 4, 5] = np.nan
    nib.save(nib.Nifti1Image(holes, np.eye(4)), t.dir / "holes.nii")
    return ["run", "ct-stylize", f"content={t.dir / 'holes.nii'}", *QUICK_STYLE, "-o", t.out]


@case("npy-corrupt", 5, "is not a readable .npy array")
def _(t):
    return ["gallery", "enrol", t.gallery(), "bob", t.file("junk.npy", b"\x93NUMPY garbage")]


# -- datasets --------------------------------------------------------------------------


@case("empty-dataset", 5, "no readable samples")
def _(t):
    (t.dir / "data" / "ann").mkdir(parents=True)
    return ["run", "train", "dataset=folder", f"dataset.root={t.dir / 'data'}", *SMALL_TRAIN, "-o", t.out]


@case("one-sample-per-identity", 5, "0 with ≥ 2 samples")
def _(t):
    for i in range(8):
        (t.dir / "data" / f"p{i}").mkdir(parents=True)
        np.save(t.dir / "data" / f"p{i}" / "a.npy", np.random.default_rng(i).normal(size=(1, 32)).astype(np.float32))
    return ["run", "train", "dataset=folder", f"dataset.root={t.dir / 'data'}", *SMALL_TRAIN, "-o", t.out]


@case("one-identity", 5, "validation from 1 ")
def _(t):
    (t.dir / "data" / "ann").mkdir(parents=True)
    for i in range(6):
        np.save(t.dir / "data" / "ann" / f"{i}.npy", np.random.default_rng(i).normal(size=(1, 32)).astype(np.float32))
    return ["run", "train", "dataset=folder", f"dataset.root={t.dir / 'data'}", *SMALL_TRAIN, "-o", t.out]


@case("calibration-too-small", 5, "needs at least")
def _(t):
    folder = t.dir / "strangers" / "zed"
    folder.mkdir(parents=True)
    np.save(folder / "a.npy", np.random.default_rng(0).normal(size=(1, 32)).astype(np.float32))
    return ["gallery", "calibrate", t.gallery(), t.dir / "strangers", "--fpir", "0.01"]


# -- recipes ---------------------------------------------------------------------------


@case("unknown-recipe-key", 3, "unknown key 'encoder.widht'")
def _(t):
    return ["run", "embed", "encoder.widht=3", "-o", t.out]


@case("unknown-recipe", 3, "unknown recipe 'trian'")
def _(t):
    return ["run", "trian", "-o", t.out]


@case("wrong-value-type", 3, "expects an integer")
def _(t):
    return ["run", "train", "epochs=many", "-o", t.out]


@case("recipe-file-unknown-key", 3, "unknown key 'optimiser'")
def _(t):
    return ["run", t.file("mine.yaml", b"recipe: train\noptimiser: {lr: 0.1}\n"), "-o", t.out]


@case("recipe-with-python-tag", 3, "cannot parse recipe file")
def _(t):
    evil = f"recipe: train\nepochs: !!python/object/apply:os.system ['touch {t.dir / 'pwned'}']\n"
    return ["run", t.file("evil.yaml", evil.encode()), "-o", t.out]


@case("override-with-python-tag", 3, "cannot parse the value of override")
def _(t):
    return ["run", "train", f"epochs=!!python/object/apply:os.system ['touch {t.dir / 'pwned'}']", "-o", t.out]


@case("output-outside-the-run", 3, "leaves the run's folder")
def _(t):
    return ["run", "stylize", "output=../escaped.npy", *QUICK_STYLE, "-o", t.out]


@case("output-absolute", 3, "leaves the run's folder")
def _(t):
    return ["run", "faces-stylize", f"output={t.dir / 'elsewhere.png'}", *QUICK_STYLE, "-o", t.out]


# -- models and galleries --------------------------------------------------------------


@case("weights-for-another-architecture", 4, "holds weights for vgg(")
def _(t):
    return ["run", "embed", *SMALL_EMBED, f"weights={t.assets / 'vgg2d.safetensors'}", "-o", t.out]


@case("gallery-from-another-encoder", 4, "was built with encoder")
def _(t):
    return ["gallery", "enrol", t.gallery(), "bob", t.assets / "sample.npy", "--weights", t.assets / "other.safetensors"]


@case("export-from-another-encoder", 4, "another encoder")
def _(t):
    return ["gallery", "import", t.gallery(), t.assets / "other-export.safetensors"]


@case("not-a-gallery", 5, "is not a convgen gallery")
def _(t):
    return ["gallery", "list", t.file("notes.txt", b"hello")]


@case("not-a-convgen-gallery", 5, "is not a convgen gallery")
def _(t):
    db = sqlite3.connect(t.dir / "other.db")
    db.execute("CREATE TABLE t (x)")
    db.commit()
    db.close()
    return ["gallery", "enrol", t.dir / "other.db", "bob", t.assets / "sample.npy"]


@case("gallery-corrupt", 5, "is not a convgen gallery")
def _(t):
    data = bytearray(t.gallery().read_bytes())
    data[0:100] = b"\x00" * 100  # the SQLite header
    t.file("people.db", bytes(data))
    return ["gallery", "list", t.dir / "people.db"]


@case("weights-not-finite", 5, "holds NaN or infinite weights")
def _(t):
    spec = encoder_spec({"name": "resnet", "channels": [4, 8], "strides": [1, 2], "embedding_dim": 16}, spatial_dims=1, in_channels=1)
    encoder = build_encoder(spec)
    with torch.no_grad():
        next(encoder.parameters())[0] = float("inf")  # a diverged run: a gallery of it would hold NaN embeddings
    save_encoder(t.dir / "diverged.safetensors", encoder, spec)
    return ["gallery", "create", t.dir / "new.db", "--weights", t.dir / "diverged.safetensors"]


@case("weights-not-safetensors", 5, "is not a readable safetensors weights file")
def _(t):
    return ["gallery", "create", t.dir / "new.db", "--weights", t.file("w.safetensors", b"\x89PNG not weights at all")]


@case("checkpoint-corrupt", 5, "is not a readable training checkpoint")
def _(t):
    first = invoke("run", "train", "dataset.identities=8", "dataset.samples_per_identity=4", "dataset.size=16", *SMALL_TRAIN, "-o", t.out)
    assert first.exit_code == 0, first.stderr
    checkpoint = t.out / "checkpoint.safetensors"
    checkpoint.write_bytes(checkpoint.read_bytes()[:1000])
    return ["run", t.out, "--resume"]


# -- safetensors headers that lie (refused before the library reads the file) ---------

FLOATS = np.arange(4, dtype=np.float32).tobytes()


@case("safetensors-size-mismatch", 5, "needs 64 bytes but the header gives it 16")
def _(t):
    forged = safetensors_bytes({"w": {"dtype": "F32", "shape": [4, 4], "data_offsets": [0, 16]}}, FLOATS)
    return ["gallery", "create", t.dir / "new.db", "-w", t.file("forged.safetensors", forged)]


@case("safetensors-huge-shape", 5, "ends at byte")
def _(t):
    huge = 2**62
    forged = safetensors_bytes({"w": {"dtype": "F32", "shape": [huge // 4], "data_offsets": [0, huge]}}, FLOATS)
    return ["run", "embed", *SMALL_EMBED, f"weights={t.file('huge.safetensors', forged)}", "-o", t.out]


@case("safetensors-unknown-dtype", 5, "unknown dtype 'F128'")
def _(t):
    forged = safetensors_bytes({"w": {"dtype": "F128", "shape": [1], "data_offsets": [0, 16]}}, FLOATS)
    return ["gallery", "create", t.dir / "new.db", "-w", t.file("dtype.safetensors", forged)]


@case("safetensors-header-past-the-end", 5, "the header claims")
def _(t):
    return ["gallery", "create", t.dir / "new.db", "-w", t.file("long.safetensors", struct.pack("<Q", 10**12) + b"{}")]


@case("safetensors-overlapping-tensors", 5, "two tensors overlap")
def _(t):
    header = {"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}, "b": {"dtype": "F32", "shape": [2], "data_offsets": [8, 16]}}
    return ["gallery", "import", t.gallery(), t.file("overlap.safetensors", safetensors_bytes(header, FLOATS))]


# -- missing files and folders where files belong -------------------------------------


@case("missing-sample", 6, "file not found")
def _(t):
    return ["gallery", "enrol", t.gallery(), "bob", t.dir / "missing.npy"]


@case("missing-image", 6, "file not found")
def _(t):  # without -o: not even the default runs/ folder may appear
    return ["run", "faces-stylize", f"content={t.dir / 'missing.png'}", *QUICK_STYLE]


@case("missing-recording", 6, "audio file not found")
def _(t):
    return ["run", "audio-stylize", f"content={t.dir / 'missing.wav'}", *QUICK_STYLE, "-o", t.out]


@case("missing-volume", 6, "volume not found")
def _(t):
    return ["run", "ct-stylize", f"content={t.dir / 'missing.nii.gz'}", *QUICK_STYLE, "-o", t.out]


@case("missing-weights", 6, "weights file not found")
def _(t):
    return ["gallery", "create", t.dir / "new.db", "--weights", t.dir / "missing.safetensors"]


@case("missing-gallery", 6, "gallery not found")
def _(t):
    return ["gallery", "identify", t.dir / "missing.db", t.assets / "sample.npy", "-t", "1"]


@case("missing-gallery-in-a-recipe", 6, "gallery not found")
def _(t):
    return ["run", "faces-identify", f"gallery={t.dir / 'missing.db'}", f"photos=[{PORTRAIT}]", "-o", t.out]


@case("missing-recipe-file", 6, "recipe file not found")
def _(t):
    return ["run", t.dir / "missing.yaml", "-o", t.out]


@case("missing-dataset-folder", 6, "dataset folder not found")
def _(t):
    return ["run", "train", "dataset=folder", f"dataset.root={t.dir / 'missing'}", *SMALL_TRAIN, "-o", t.out]


@case("directory-as-sample", 5, "no readable samples under")  # a folder among a person's files gives its samples
def _(t):
    (t.dir / "photos").mkdir()
    return ["gallery", "enrol", t.gallery(), "bob", t.dir / "photos"]


@case("directory-as-gallery", 6, "is a directory, not a gallery file")
def _(t):
    (t.dir / "people.db").mkdir()
    return ["gallery", "list", t.dir / "people.db"]


@case("directory-as-weights", 6, "is not a file")
def _(t):
    (t.dir / "weights").mkdir()
    return ["run", "embed", *SMALL_EMBED, f"weights={t.dir / 'weights'}", "-o", t.out]


@case("directory-as-recording", 6, "is a folder")
def _(t):
    (t.dir / "take.wav").mkdir()
    return ["run", "audio-stylize", f"content={t.dir / 'take.wav'}", *QUICK_STYLE, "-o", t.out]


@case("file-as-dataset-folder", 6, "is a file, not a folder")
def _(t):
    return ["run", "train", "dataset=folder", f"dataset.root={t.file('data.txt', b'x')}", *SMALL_TRAIN, "-o", t.out]


# -- recipe values: every key typed and ranged before anything runs (issue 17) ---------


@case("value-null-for-a-number", 3, "expects an integer (like 10), got null")
def _(t):
    return ["run", "train", "epochs=null", "-o", t.out]


@case("value-number-for-a-list", 3, "expects a list")
def _(t):
    return ["run", "train", "encoder.channels=5", "-o", t.out]


@case("value-list-of-words", 3, "expects a list of integers")
def _(t):
    return ["run", "train", "encoder.channels=[a, b]", "-o", t.out]


@case("value-negative-channels", 3, "each item of channels must be in [1, 16384]")
def _(t):
    return ["run", "train", "encoder.channels=[-4, 8]", "-o", t.out]


@case("value-batch-size-zero", 3, "batch_size must be in [1, 10000000]")
def _(t):
    return ["run", "train", "batch_size=0", "-o", t.out]


@case("value-batch-size-negative", 3, "batch_size must be in [1, 10000000]")
def _(t):
    return ["run", "embed", "batch_size=-3", "-o", t.out]


@case("value-embedding-dim-zero", 3, "embedding_dim must be in [1, 65536]")
def _(t):
    return ["run", "train", "encoder.embedding_dim=0", "-o", t.out]


@case("value-embedding-dim-negative", 3, "embedding_dim must be in [1, 65536]")
def _(t):
    return ["run", "train", "encoder.embedding_dim=-3", "-o", t.out]


@case("value-lr-negative", 3, "lr must be in (0, inf)")
def _(t):
    return ["run", "train", "optimizer.lr=-1", "-o", t.out]


@case("value-lr-nan", 3, "must be a finite number")
def _(t):
    return ["run", "train", "optimizer.lr=.nan", "-o", t.out]


@case("value-spatial-dims-4", 3, "spatial_dims must be in [1, 3]")
def _(t):
    return ["run", "train", "spatial_dims=4", "-o", t.out]


@case("value-spatial-dims-0", 3, "spatial_dims must be in [1, 3]")
def _(t):
    return ["run", "stylize", "spatial_dims=0", "-o", t.out]


@case("value-spatial-dims-negative", 3, "spatial_dims must be in [1, 3]")
def _(t):
    return ["run", "inspect", "spatial_dims=-1", "-o", t.out]


@case("value-size-asking-for-terabytes", 3, "asks for samples of")
def _(t):
    return ["run", "train", "spatial_dims=3", "dataset.size=4096", "-o", t.out]


@case("value-device-cuda-without-cuda", 3, "has no usable CUDA GPU")
def _(t):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    return ["run", "train", "device=cuda", "-o", t.out]


@case("recipe-file-nested-thousands-deep", 3, "nested too deeply")
def _(t):
    return ["run", t.file("deep.yaml", b"recipe: train\nepochs: " + b"[" * 5000 + b"]" * 5000 + b"\n"), "-o", t.out]


@case("override-nested-thousands-deep", 3, "nested too deeply")
def _(t):
    return ["run", "train", "epochs=" + "{a: " * 5000 + "1" + "}" * 5000, "-o", t.out]


@case("value-words-for-numbers", 3, "expects numbers in [0, 1000000], got ['a']")
def _(t):
    return ["run", "train", "scheduler.milestones=[a]", "-o", t.out]


@case("value-augment-flip-axis", 3, "augment.flip lists spatial axes 1, 2 or 3, got [7]")
def _(t):
    return ["run", "train", *SMALL_TRAIN, "augment.flip=[7]", "-o", t.out]  # refused before split.json is written


@case("value-unknown-scheduler", 3, "unknown scheduler 'nope'; use cosine, step or constant")
def _(t):
    return ["run", "train", *SMALL_TRAIN, "scheduler.name=nope", "-o", t.out]


@case("value-open-set-fraction-above-1", 3, "open_set_fraction must be in [0, 1], got 1.5")
def _(t):
    return ["run", "evaluate", "weights=" + str(t.assets / "enc.safetensors"), "spatial_dims=1", "device=cpu", "open_set_fraction=1.5", "-o", t.out]


@case("value-no-style-layers", 3, "style_layers is empty: there is no style to transfer")
def _(t):
    return ["run", "stylize", "style_layers=[]", "iterations=1", "device=cpu", "-o", t.out]


@case("value-ecg-seconds-negative", 3, "seconds must be in (0, 1000000000], got -5")
def _(t):
    return ["run", "ecg-peaks", "seconds=-5", "-o", t.out]


@case("pipeline-option-not-a-size", 3, "spatial_size must be a positive int or a list of them, got nan")
def _(t):
    return ["gallery", "enrol", t.gallery(), "bob", t.assets / "sample.npy", "-p", "spatial_size=.nan"]


@case("value-unsupported-by-the-encoder", 3, "cannot be built with these arguments (Unsupported option 'BANANA'")
def _(t):
    return ["run", "train", *SMALL_TRAIN, "encoder.norm=banana", "-o", t.out]


@case("value-input-too-small-for-the-encoder", 3, "the input is too small for this encoder")
def _(t):
    return ["run", "inspect", "spatial_dims=1", "input_size=1", "-o", t.out]


def test_scientific_notation_is_a_number_where_a_number_belongs():
    """YAML 1.1 reads 1e-3 (no dot) as text; for a number key it is the number a user meant."""
    from convgen import config

    _, resolved = config.resolve("train", ["optimizer.lr=1e-3", "encoder.dropout=5e-1"])
    assert resolved["optimizer"]["lr"] == 0.001 and resolved["encoder"]["dropout"] == 0.5
    _, resolved = config.resolve("stylize", ["output=1e3.npy"])
    assert resolved["output"] == "1e3.npy"  # text stays text where text belongs


# -- output folders: a run never overwrites another's ---------------------------------


@case("output-folder-is-a-file", 6, "is a file; give a folder")
def _(t):
    t.file("out", b"my notes")
    return ["run", "stylize", *QUICK_STYLE, "-o", t.out]


@case("output-folder-holds-another-run", 6, "is not empty: it holds another run's outputs")
def _(t):
    t.file("out/config.yaml", b"recipe: train\nepochs: 3\n")
    t.file("out/summary.json", b"{}\n")
    return ["run", "stylize", *QUICK_STYLE, "-o", t.out]


@case("output-folder-holds-other-files", 6, "is not empty: it holds 1 entry (notes.txt)")
def _(t):
    t.file("out/notes.txt", b"mine\n")
    return ["run", "stylize", *QUICK_STYLE, "-o", t.out]


@case("output-folder-holds-this-run", 6, "already holds this run")
def _(t):
    printed = invoke("run", "stylize", *QUICK_STYLE, "--print-config")
    t.file("out/config.yaml", printed.stdout.encode())
    return ["run", "stylize", *QUICK_STYLE, "-o", t.out]


@case("output-through-a-symlinked-folder", 6, "is a symlink")
def _(t):
    (t.dir / "elsewhere").mkdir()
    t.out.mkdir()
    (t.out / "sub").symlink_to(t.dir / "elsewhere")
    return ["run", "stylize", *QUICK_STYLE, "output=sub/x.npy", "--force", "-o", t.out]


# -- files whose library would raise, or cast silently --------------------------------


@case("npy-strings", 5, "holds <U1 values, not real numbers")
def _(t):
    return ["gallery", "enrol", t.gallery(), "bob", t.npy("words.npy", np.full((1, 32), "a"))]


@case("npy-structured", 5, "not real numbers")
def _(t):
    return ["gallery", "enrol", t.gallery(), "bob", t.npy("records.npy", np.zeros((1, 32), dtype=[("a", "f4"), ("b", "i4")]))]


@case("npy-datetime", 5, "holds datetime64[s] values")
def _(t):
    return ["gallery", "enrol", t.gallery(), "bob", t.npy("dates.npy", np.zeros((1, 32), dtype="datetime64[s]"))]


@case("npy-complex", 5, "holds complex64 values")
def _(t):
    return ["gallery", "identify", t.gallery(), t.npy("complex.npy", np.zeros((1, 32), np.complex64)), "-t", "1"]


@case("npy-header-claims-a-trillion-elements", 5, "its header claims shape (1, 1000000000000)")
def _(t):
    header = b"{'descr': '<f4', 'fortran_order': False, 'shape': (1, 1000000000000), }"
    header += b" " * (117 - len(header)) + b"\n"
    return ["gallery", "enrol", t.gallery(), "bob", t.file("huge.npy", b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header + b"\0" * 128)]


def _png_claiming(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width × height`` grey pixels (and holds none)."""
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)) + chunk(b"IEND", b"")


@case("image-decompression-bomb", 5, "is refused")
def _(t):
    return ["run", "faces-stylize", f"content={t.file('bomb.png', _png_claiming(20000, 20000))}", *QUICK_STYLE, "-o", t.out]


def _record_with_rate(t, rate: str) -> Path:
    text = (MITDB / "100.hea").read_text(encoding="latin-1").splitlines()
    fields = text[0].split()
    fields[2] = rate
    shutil.copy(MITDB / "100.dat", t.dir / "100.dat")
    return t.file("100.hea", ("\n".join([" ".join(fields), *text[1:]]) + "\n").encode("latin-1"))


@case("wfdb-negative-sampling-rate", 5, "its sampling rate '-360' is not a positive number")
def _(t):
    return ["run", "ecg-peaks", f"record={_record_with_rate(t, '-360')}", "-o", t.out]


@case("wfdb-zero-sampling-rate", 5, "its sampling rate '0' is not a positive number")
def _(t):
    return ["run", "ecg-peaks", f"record={_record_with_rate(t, '0')}", "-o", t.out]


# -- weights whose metadata lies (checked against the tensors before anything is built) -


def forged_weights(t, name: str, change) -> Path:
    """assets/enc.safetensors with its header changed by ``change(header)``; the tensor bytes kept."""
    raw = (t.assets / "enc.safetensors").read_bytes()
    length = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8 : 8 + length])
    change(header)
    return t.file(name, safetensors_bytes(header, raw[8 + length :]))


def _set_spec(**changes):
    def change(header):
        spec = json.loads(header["__metadata__"]["spec"])
        header["__metadata__"]["spec"] = json.dumps({**spec, **changes})

    return change


@case("weights-spec-asks-for-gigabytes", 4, "does not fit encoder")
def _(t):
    bomb = forged_weights(t, "bomb.safetensors", _set_spec(channels=[16384, 16384], embedding_dim=65536))
    return ["gallery", "create", t.dir / "new.db", "-w", bomb]


def _relabel(header):
    name = next(k for k, v in header.items() if k != "__metadata__" and v["dtype"] == "F32")
    header[name]["dtype"] = "I32"


@case("weights-float-relabelled-int", 4, "is int32, expected float32")
def _(t):
    return ["gallery", "create", t.dir / "new.db", "-w", forged_weights(t, "relabelled.safetensors", _relabel)]


@case("weights-spec-of-the-wrong-type", 5, "has a damaged convgen header")
def _(t):
    def change(header):
        header["__metadata__"]["spec"] = json.dumps(["resnet", 16])

    return ["run", "embed", *SMALL_EMBED, f"weights={forged_weights(t, 'list.safetensors', change)}", "-o", t.out]


@case("weights-spec-nested-200000-deep", 5, "nested too deeply")
def _(t):
    def change(header):
        header["__metadata__"]["spec"] = "[" * 200_000 + "]" * 200_000

    return ["gallery", "create", t.dir / "new.db", "-w", forged_weights(t, "deep.safetensors", change)]


@case("safetensors-header-nested-200000-deep", 5, "nested too deeply")
def _(t):
    header = b'{"w": ' + b"[" * 200_000 + b"]" * 200_000 + b"}"
    return ["gallery", "create", t.dir / "new.db", "-w", t.file("deep.safetensors", struct.pack("<Q", len(header)) + header)]


# -- gallery exports (untrusted: validated before anything is enrolled) ----------------


def forged_export(t, name: str, embeddings=None, person=None, **metadata) -> Path:
    """assets/people-export.safetensors with tensors and metadata replaced (a key set to None is removed)."""
    from safetensors import safe_open
    from safetensors.numpy import save_file

    with safe_open(str(t.assets / "people-export.safetensors"), framework="np") as handle:
        meta = dict(handle.metadata())
        tensors = {"embeddings": handle.get_tensor("embeddings"), "person": handle.get_tensor("person")}
    if embeddings is not None:
        tensors["embeddings"] = np.asarray(embeddings, np.float32)
    if person is not None:
        tensors["person"] = np.asarray(person, np.int64)
    meta.update({k: v for k, v in metadata.items() if v is not None})
    for key in [k for k, v in metadata.items() if v is None]:
        meta.pop(key)
    save_file(tensors, str(t.dir / name), metadata=meta)
    return t.dir / name


def _two(t):
    e = np.load(t.assets / "ann.npy")
    return np.concatenate([e, e])


@case("export-without-fingerprint", 5, "records no encoder fingerprint")
def _(t):
    return ["gallery", "import", t.gallery(), forged_export(t, "x.safetensors", fingerprint=None, names='["zed"]')]


@case("export-names-of-the-wrong-type", 5, "its names are dict, not a list")
def _(t):
    return ["gallery", "import", t.gallery(), forged_export(t, "x.safetensors", names='{"zed": 0}')]


@case("export-empty-name", 5, "a person needs a non-empty name")
def _(t):
    return ["gallery", "import", t.gallery(), forged_export(t, "x.safetensors", names='[""]')]


@case("export-duplicate-names", 5, "appears twice")
def _(t):
    return ["gallery", "import", t.gallery(), forged_export(t, "x.safetensors", _two(t), [0, 1], names='["zed", "zed"]')]


@case("export-name-with-a-newline", 5, "holds a newline or control character")
def _(t):
    return ["gallery", "import", t.gallery(), forged_export(t, "x.safetensors", names='["zed\\nann"]')]


@case("export-vectors-of-norm-1000", 5, "unit-length")
def _(t):
    return ["gallery", "import", t.gallery(), forged_export(t, "x.safetensors", np.load(t.assets / "ann.npy") * 1000, names='["zed"]')]


# -- tampered or damaged galleries ------------------------------------------------------


def tampered(t, sql: str) -> Path:
    db = t.gallery()
    connection = sqlite3.connect(db)
    connection.execute(sql)
    connection.commit()
    connection.close()
    return db


@case("gallery-tampered-dim", 5, "is damaged: its 'dim' record is '-3'")
def _(t):
    return ["gallery", "list", tampered(t, "UPDATE meta SET value = '-3' WHERE key = 'dim'")]


@case("gallery-tampered-threshold", 5, "is damaged: its 'threshold' record is 'nan'")
def _(t):
    return ["gallery", "identify", tampered(t, "UPDATE meta SET value = 'nan' WHERE key = 'threshold'"), t.assets / "sample.npy"]


@case("gallery-tampered-spatial-size", 5, "is damaged: its 'spatial_size' record is '[-5]'")
def _(t):
    return ["gallery", "enrol", tampered(t, "UPDATE meta SET value = '[-5]' WHERE key = 'spatial_size'"), "bob", t.assets / "sample.npy"]


@case("gallery-one-byte-embedding", 5, "an embedding holds 1 bytes, not 64")
def _(t):
    return ["gallery", "identify", tampered(t, "UPDATE samples SET embedding = x'00'"), t.assets / "sample.npy", "-t", "1"]


@case("gallery-page-of-random-bytes", 5, "it is damaged; restore it from a backup")
def _(t):
    db = t.gallery()
    data = bytearray(db.read_bytes())
    data[3 * 4096 : 4 * 4096] = np.random.default_rng(1).bytes(4096)  # a page of the samples table
    db.write_bytes(bytes(data))
    return ["gallery", "identify", db, t.assets / "sample.npy", "-t", "1"]


@case("export-over-an-existing-file", 6, "already exists; choose a new file, or pass --force")
def _(t):
    return ["gallery", "export", t.gallery(), t.file("people.safetensors", b"last week's export")]


# -- gallery arguments ------------------------------------------------------------------


@case("name-with-a-newline", 5, "holds a newline or control character")
def _(t):
    return ["gallery", "enrol", t.gallery(), "bob\nann", t.assets / "sample.npy"]


@case("threshold-nan", 3, "must be a finite distance ≥ 0, got nan")
def _(t):
    return ["gallery", "identify", t.gallery(), t.assets / "sample.npy", "-t", "nan"]


@case("threshold-negative", 3, "must be a finite distance ≥ 0, got -1.0")
def _(t):
    return ["gallery", "verify", t.gallery(), "ann", t.assets / "sample.npy", "-t", "-1"]


@case("top-k-zero", 3, "must be a whole number ≥ 1, got 0")
def _(t):
    return ["gallery", "identify", t.gallery(), t.assets / "sample.npy", "-t", "1", "--top-k", "0"]


@case("spatial-size-negative", 3, "spatial_size must be a positive int")
def _(t):
    return ["gallery", "create", t.dir / "new.db", "-w", t.assets / "enc.safetensors", "--spatial-size", "-5"]


@case("spatial-size-zero", 3, "spatial_size must be a positive int")
def _(t):
    return ["gallery", "create", t.dir / "new.db", "-w", t.assets / "enc.safetensors", "--spatial-size", "0"]


@case("spatial-size-wrong-axes", 3, "has 2 axes but the encoder takes 1")
def _(t):
    return ["gallery", "create", t.dir / "new.db", "-w", t.assets / "enc.safetensors", "--spatial-size", "8", "--spatial-size", "8"]


# -- the test ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    """Weights (1D resnet; 1D vgg; 2D vgg), one sample, a gallery of one person, a foreign export."""
    from convgen.gallery import api
    from convgen.gallery.store import Gallery

    root = tmp_path_factory.mktemp("bad-input-assets")
    torch.manual_seed(0)
    for name, block, dims in (("enc", {"name": "resnet", "channels": [4, 8], "strides": [1, 2], "embedding_dim": 16}, 1),
                              ("other", {"name": "vgg", "channels": [4], "convs": [1], "embedding_dim": 16}, 1),
                              ("vgg2d", {"name": "vgg", "channels": [4], "convs": [1]}, 2)):  # fmt: skip
        spec = encoder_spec(block, spatial_dims=dims, in_channels=1)
        save_encoder(root / f"{name}.safetensors", build_encoder(spec), spec)
    sample, _ = SyntheticClusters(spatial_dims=1, size=32, identities=2, samples_per_identity=1, seed=0)[0]
    np.save(root / "sample.npy", sample.numpy())
    for db, weights in (("people.db", "enc"), ("other.db", "other")):
        encoder = api.Encoder(root / f"{weights}.safetensors")
        with Gallery.create(root / db, fingerprint=encoder.fingerprint, encoder=encoder.spec, dim=16, weights=encoder.weights) as g:
            g.enrol("ann", encoder.embed_files([root / "sample.npy"]))
    with Gallery.open(root / "other.db") as g:
        api.export(g, root / "other-export.safetensors")
    with Gallery.open(root / "people.db") as g:
        api.export(g, root / "people-export.safetensors")
        np.save(root / "ann.npy", g.embeddings_of("ann"))
    return root


def snapshot(folder: Path) -> dict[str, bytes | None]:
    """Every path under ``folder`` with its bytes (None for a folder)."""
    return {str(p.relative_to(folder)): (None if p.is_dir() else p.read_bytes()) for p in sorted(folder.rglob("*"))}


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input(name, tmp_path, assets, monkeypatch):
    row = CASES[name]
    here = Here(tmp_path, assets)
    args = row.build(here)
    monkeypatch.chdir(tmp_path)  # a stray write to the working folder (runs/, people.db) would show too
    before = snapshot(tmp_path)
    result = invoke(*args)
    assert_one_line_error(result, row.code, [row.contains])
    assert snapshot(tmp_path) == before, "nothing is written"


def test_debug_shows_the_traceback_instead(tmp_path):
    """--debug trades the one-line message for the full traceback, and keeps the exit status non-zero."""
    plain = run_convgen("gallery", "list", tmp_path / "missing.db", cwd=tmp_path)
    assert_one_line_error(plain, 6, ["gallery not found"])
    debug = run_convgen("--debug", "gallery", "list", tmp_path / "missing.db", cwd=tmp_path)
    assert debug.returncode == 1
    assert "Traceback (most recent call last)" in debug.stderr
    assert "convgen.errors.PathError: gallery not found" in debug.stderr


# -- the docs cannot rot ------------------------------------------------------------------


def _cells(line: str) -> list[str]:
    return [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", line.strip().strip("|"))]


def test_the_docs_table_matches_the_tests():
    """docs/reliability.md lists every row tested here, with its exit code and message."""
    rows = {}
    for line in DOC.read_text(encoding="utf-8").splitlines():
        found = re.search(r"`test_bad_input\[([\w-]+)\]`", line)
        if found:
            assert found.group(1) not in rows, f"{found.group(1)} is listed twice"
            rows[found.group(1)] = _cells(line)
    assert sorted(rows) == sorted(CASES), "rows in the docs but not tested, or tested but not in the docs"
    for name, (_, _, message, code, _) in rows.items():
        assert int(code) == CASES[name].code, name
        assert CASES[name].contains in message, f"{name}: the docs' message lacks {CASES[name].contains!r}"


def _names(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names = {node.name for node in tree.body if isinstance(node, (ast.FunctionDef, ast.ClassDef))}
    names |= {t.id for node in tree.body if isinstance(node, ast.Assign) for t in node.targets if isinstance(t, ast.Name)}
    return names


def test_every_test_the_docs_name_exists():
    """A renamed or deleted test fails here until the docs follow."""
    text = DOC.read_text(encoding="utf-8")
    named = re.findall(r"`(?:(tests/\w+\.py)::)?((?:test_|Test)\w+)", text)
    assert len(named) > len(CASES)
    everywhere = set().union(*(_names(p) for p in (ROOT / "tests").glob("test_*.py")))
    for file, name in named:
        if file:
            assert (ROOT / file).is_file(), file
            assert name in _names(ROOT / file), f"{file}::{name} named in {DOC.name} does not exist"
        else:
            assert name in everywhere, f"{name} named in {DOC.name} does not exist"


# -- file-system faults: a read-only mount, a full disk (issue 17) ----------------------
# A private mount namespace (``unshare -rm``) gives an unprivileged test a real read-only
# bind mount and a real full tmpfs, so the errors are the kernel's, not a simulation.


def _namespaces() -> bool:
    import subprocess

    try:
        return subprocess.run(["unshare", "-rm", "true"], capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


needs_namespaces = pytest.mark.skipif(not _namespaces(), reason="needs unshare -rm (user and mount namespaces)")


def _in_namespace(folder: Path, setup: str, *commands: list) -> list[tuple[int, str]]:
    """Run ``setup`` then each convgen command (in one process, through the CLI entry point)
    in a private mount namespace; returns (exit code, stderr) per command."""
    import subprocess
    import sys

    program = (
        "import json, sys\n"
        "from convgen import plugins\n"
        "from convgen.testing import invoke\n"
        "results = []\n"
        "for args in json.loads(sys.argv[1]):\n"
        "    plugins.reset()\n"
        "    r = invoke(*args)\n"
        "    results.append([r.exit_code, r.stderr + ('Traceback' if r.exception and not isinstance(r.exception, SystemExit) else '')])\n"
        "open('results.json', 'w').write(json.dumps(results))\n"
    )  # fmt: skip
    listed = json.dumps([[str(a) for a in args] for args in commands])
    script = f'{setup} && exec "$0" -c "$1" "$2"'
    subprocess.run(["unshare", "-rm", "sh", "-c", script, sys.executable, program, listed], cwd=folder, check=True, timeout=600,
                   capture_output=True)  # fmt: skip
    return [tuple(r) for r in json.loads((folder / "results.json").read_text())]


@needs_namespaces
def test_a_read_only_gallery_serves_the_reading_commands_and_names_the_cause_for_the_others(tmp_path, assets):
    """On a read-only mount: list, identify, verify, export and backup work; enrol, an export into it and
    a run's output folder in it are one line saying read-only."""
    shared = tmp_path / "shared"
    shared.mkdir()
    shutil.copy(assets / "people.db", shared / "people.db")
    before = (shared / "people.db").read_bytes()
    sample = assets / "sample.npy"
    results = _in_namespace(
        tmp_path, "mount --bind shared shared && mount -o remount,ro,bind shared",
        ["gallery", "list", "shared/people.db"],
        ["gallery", "identify", "shared/people.db", sample, "-t", "1"],
        ["gallery", "verify", "shared/people.db", "ann", sample, "-t", "1"],
        ["gallery", "export", "shared/people.db", "people.safetensors"],
        ["gallery", "backup", "shared/people.db", "copy.db"],
        ["gallery", "enrol", "shared/people.db", "bob", sample],
        ["gallery", "export", "shared/people.db", "shared/people.safetensors"],
        ["run", "stylize", *QUICK_STYLE, "-o", "shared/run"],
    )  # fmt: skip
    for code, stderr in results[:5]:
        assert code == 0, stderr
    assert results[5][0] == 5 and "it is read-only" in results[5][1] and "Traceback" not in results[5][1]
    for code, stderr in results[6:]:
        assert code == 5 and "the file system is read-only" in stderr and "Traceback" not in stderr, stderr
    assert (shared / "people.db").read_bytes() == before and sorted(p.name for p in shared.iterdir()) == ["people.db"]
    from convgen.gallery.store import Gallery

    with Gallery.open(tmp_path / "copy.db") as copy:
        assert [p.name for p in copy.people()] == ["ann"]


@needs_namespaces
def test_a_full_disk_is_named_as_such(tmp_path, assets):
    """On a full tmpfs: enrolling, exporting and a run's outputs are one line that says the disk is full."""
    (tmp_path / "full").mkdir()
    results = _in_namespace(
        tmp_path, "mount -t tmpfs -o size=64k tmpfs full && cp " + str(assets / "people.db") + " full/ && "
        "head -c 65536 /dev/zero > full/padding; true",
        ["gallery", "enrol", "full/people.db", "bob", assets / "sample.npy"],
        ["gallery", "export", assets / "people.db", "full/people.safetensors"],
        ["run", "stylize", *QUICK_STYLE, "-o", "full/run"],
    )  # fmt: skip
    for code, stderr in results:
        lines = [line for line in stderr.splitlines() if line.strip()]
        assert code == 5 and len(lines) == 1 and "the disk is full" in lines[0], stderr
