"""What an encoder sees of a recording: log-mel or log-magnitude STFT frames, 1D or 2D.

A `Representation` turns a file into an encoder input: read (resampled, or refused at
another rate), silence trimmed, cut or looped to a fixed duration (so that a batch
stacks), transformed, normalised per utterance, and laid out either as frequency bins
as channels over time (``1d``: a 1D signal with ``n_mels`` channels, the layout speaker
models use) or as a one-channel image (``2d``: frequency × time).

The style-transfer pair `log_magnitude` / `to_waveform` is separate on purpose: it uses
``log(1 + |STFT| / FLOOR)``, which is non-negative and exactly invertible back to a
magnitude for Griffin-Lim, where the representation's decibels are floored and normalised.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

import numpy as np
import torch

from convgen.plugin_api import ConfigError, DataError
from convgen_audio.audio import read_audio, trim

KINDS = ("log-mel", "log-stft")
LAYOUTS = ("1d", "2d")
NORMALIZE = ("utterance", "bins", "none")


@dataclass(frozen=True)
class Representation:
    """How one recording becomes a ``(C, T)`` (``1d``) or ``(1, F, T)`` (``2d``) tensor.

    Args:
        kind: ``log-mel`` (``n_mels`` mel bands, dB) or ``log-stft`` (``n_fft // 2 + 1`` bins, dB).
        sample_rate: every file is brought to this rate (FSDD is 8 kHz).
        resample: False makes a file at another rate an error instead.
        trim_db: cut leading and trailing audio this many dB below the peak (None: keep).
        seconds: cut (centred) or loop each recording to this duration, so that samples
            stack into batches; None keeps each file's own length.
        n_fft, hop: STFT window and hop, in samples.
        n_mels, fmin, fmax: the mel filterbank (``fmax`` None: half the sample rate).
        normalize: ``utterance`` (zero mean, unit variance over the whole utterance: loudness
            goes, spectral shape stays), ``bins`` (per frequency bin, cepstral mean and
            variance normalisation) or ``none``.
        layout: ``1d`` (bins as channels over time) or ``2d`` (a one-channel image).
    """

    kind: str = "log-mel"
    sample_rate: int = 8000
    resample: bool = True
    trim_db: float | None = 40.0
    seconds: float | None = 1.0
    n_fft: int = 256
    hop: int = 80
    n_mels: int = 40
    fmin: float = 0.0
    fmax: float | None = None
    normalize: str = "utterance"
    layout: str = "1d"

    def __post_init__(self):
        for name, value, allowed in (("kind", self.kind, KINDS), ("layout", self.layout, LAYOUTS), ("normalize", self.normalize, NORMALIZE)):
            if value not in allowed:
                raise ConfigError(f"representation.{name} must be one of {', '.join(allowed)}, got {value!r}")
        for name in ("sample_rate", "n_fft", "hop", "n_mels"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"representation.{name} must be a positive integer, got {value!r}")
        if self.seconds is not None and not self.seconds > 0:
            raise ConfigError(f"representation.seconds must be positive or null, got {self.seconds!r}")
        if self.hop > self.n_fft:
            raise ConfigError(f"representation.hop ({self.hop}) must not exceed n_fft ({self.n_fft}): samples would be skipped")

    @classmethod
    def of(cls, config: dict | None) -> Representation:
        """A representation from a recipe block, naming any key it does not know."""
        config = dict(config or {})
        known = [f.name for f in fields(cls)]
        unknown = [k for k in config if k not in known]
        if unknown:
            raise ConfigError(f"unknown representation key {unknown[0]!r} (known: {', '.join(known)})")
        return cls(**config)

    def as_dict(self) -> dict:
        return asdict(self)

    def pipeline_spec(self) -> dict:
        """The ``audio`` input pipeline that makes inputs as this does (recorded with trained weights)."""
        return {"name": "audio", **self.as_dict()}

    @property
    def bins(self) -> int:
        return self.n_mels if self.kind == "log-mel" else self.n_fft // 2 + 1

    def load(self, path) -> np.ndarray:
        """The waveform of ``path`` at ``sample_rate``, silence trimmed."""
        y, _ = read_audio(path, self.sample_rate, resample=self.resample)
        y = trim(y, self.sample_rate, self.trim_db)
        if y.size < 2:
            raise DataError(f"{path}: nothing is left after trimming silence at trim_db={self.trim_db}; raise trim_db or set it to null")
        return y

    def fit(self, y: np.ndarray) -> np.ndarray:
        """``y`` at ``seconds``: the centre of a longer recording, a shorter one looped (no silent padding to learn)."""
        if self.seconds is None:
            return y
        n = int(round(self.seconds * self.sample_rate))
        if len(y) >= n:
            start = (len(y) - n) // 2
            return y[start : start + n]
        return np.pad(y, (0, n - len(y)), mode="wrap")

    def features(self, y: np.ndarray) -> np.ndarray:
        """``(bins, frames)`` float32: the chosen spectrogram in dB, normalised."""
        import librosa

        if self.kind == "log-mel":
            power = librosa.feature.melspectrogram(y=y, sr=self.sample_rate, n_fft=self.n_fft, hop_length=self.hop,
                                                   n_mels=self.n_mels, fmin=self.fmin, fmax=self.fmax)  # fmt: skip
        else:
            power = np.abs(librosa.stft(y, n_fft=self.n_fft, hop_length=self.hop)) ** 2
        x = librosa.power_to_db(power, ref=1.0, amin=1e-10, top_db=80.0)
        if self.normalize == "utterance":
            x = (x - x.mean()) / (x.std() + 1e-5)
        elif self.normalize == "bins":
            x = (x - x.mean(1, keepdims=True)) / (x.std(1, keepdims=True) + 1e-5)
        return np.ascontiguousarray(x, dtype=np.float32)

    def tensor(self, y: np.ndarray) -> torch.Tensor:
        """A waveform (already at ``sample_rate``) as the encoder's input, in ``layout``."""
        x = torch.from_numpy(self.features(self.fit(y)))
        return x if self.layout == "1d" else x[None]

    def __call__(self, path) -> torch.Tensor:
        """One file as one encoder input."""
        return self.tensor(self.load(path))

    def windows(self, path, overlap: float = 0.5) -> torch.Tensor:
        """One file as ``(n, C, *spatial)`` inputs: windows of ``seconds`` across a long recording (one for a short one)."""
        y = self.load(path)
        if self.seconds is None:
            return self.tensor(y)[None]
        n = int(round(self.seconds * self.sample_rate))
        step = max(1, int(n * (1 - overlap)))
        starts = range(0, max(1, len(y) - n + step), step) if len(y) > n else [0]
        return torch.stack([self.tensor(y[s : s + n]) for s in starts])


FLOOR = 0.1
"""Where `log_magnitude` turns from linear to logarithmic, in STFT magnitude of a waveform in [-1, 1].

A full-scale tone reaches about ``n_fft / 4`` (64 at ``n_fft=256``), so 0.1 is some 55 dB
down: a quiet recording's noise floor stays near 0, speech and events are on a log scale.
"""


def log_magnitude(y: np.ndarray, n_fft: int, hop: int) -> np.ndarray:
    """``log(1 + |STFT| / FLOOR)``, ``(n_fft // 2 + 1, frames)``: the style-transfer representation.

    Logarithmic above `FLOOR` (like decibels), 0 for silence and never negative. The
    floor is a trade-off found by trying: a plain ``log(1 + |STFT|)`` of a waveform in
    [-1, 1] is nearly linear, the engine's clamp at 0 then binds on every quiet bin and
    L-BFGS (clamped between chunks) stalls; a floor far lower (0.001) makes the noise
    floor dominate the Gram statistics and the style's events fade.
    """
    import librosa

    # C order: librosa returns Fortran-ordered arrays, and L-BFGS needs contiguous gradients
    return np.ascontiguousarray(np.log1p(np.abs(librosa.stft(y, n_fft=n_fft, hop_length=hop)) / FLOOR), dtype=np.float32)


def magnitude(log_mag) -> np.ndarray:
    """The STFT magnitude that `log_magnitude` gave ``log_mag`` (negative values count as silence)."""
    log_mag = log_mag.detach().cpu().numpy() if isinstance(log_mag, torch.Tensor) else np.asarray(log_mag)
    return FLOOR * np.expm1(np.clip(log_mag.astype(np.float64), 0, None))


def frames(samples: int, hop: int) -> int:
    """STFT frames (centred windows) of a signal of ``samples``: what `to_waveform` needs to give it back."""
    return 1 + samples // hop


def to_waveform(log_mag, n_fft: int, hop: int, samples: int, iterations: int = 100, momentum: float = 0.99, seed: int = 0) -> np.ndarray:
    """A waveform of exactly ``samples`` whose STFT magnitude approaches `magnitude` (``log_mag``), by Griffin-Lim."""
    import librosa

    target = magnitude(log_mag)
    if target.shape[0] != n_fft // 2 + 1:
        raise DataError(f"a magnitude for n_fft={n_fft} has {n_fft // 2 + 1} bins, got {target.shape[0]}")
    y = librosa.griffinlim(target, n_iter=iterations, hop_length=hop, n_fft=n_fft, length=samples,
                           momentum=momentum, init="random", random_state=seed)  # fmt: skip
    return y.astype(np.float32)


def spectral_convergence(y: np.ndarray, magnitude: np.ndarray, n_fft: int, hop: int) -> float:
    """``|| |STFT(y)| - magnitude ||_F / ||magnitude||_F``: 0 when ``y`` has exactly that magnitude."""
    import librosa

    got = np.abs(librosa.stft(y, n_fft=n_fft, hop_length=hop))
    t = min(got.shape[1], magnitude.shape[1])
    return float(np.linalg.norm(got[:, :t] - magnitude[:, :t]) / np.linalg.norm(magnitude[:, :t]))



FEATURE_SUFFIX = ".npy"
FEATURE_NORMALIZE = ("none", "mean", "bins")


@dataclass(frozen=True)
class FeatureSequence:
    """Precomputed frame features (MFCCs, filterbanks: ``.npy`` arrays ``(frames, coefficients)``) as a ``(C, T)`` input.

    For speech sets that ship features and no audio (CMU AN4's Sphinx cepstra): the frames
    become a 1D signal with the coefficients as channels, the layout of ``1d`` spectrograms.

    Args:
        name: ``features`` (``spectrogram`` is `Representation`).
        coefficients: the number of coefficients every file must have (None: any, the
            encoder then fixes it from the first file).
        normalize: ``none`` keeps the values (the default: a speaker's average cepstrum
            is much of what tells voices apart, and on AN4 removing it cost 14 points of
            rank-1); ``mean`` subtracts each coefficient's mean over the utterance
            (cepstral mean normalisation: a fixed channel or microphone colouring goes,
            with it part of the voice); ``bins`` also divides by its standard deviation (CMVN).
        min_frames: shorter files are an error (an encoder needs a few frames to pool over).
    """

    name: str = "features"
    coefficients: int | None = None
    normalize: str = "none"
    min_frames: int = 10

    def __post_init__(self):
        if self.name != "features":
            raise ConfigError(f"representation.name must be features here, got {self.name!r}")
        if self.normalize not in FEATURE_NORMALIZE:
            raise ConfigError(f"representation.normalize must be one of {', '.join(FEATURE_NORMALIZE)}, got {self.normalize!r}")
        for key in ("coefficients", "min_frames"):
            value = getattr(self, key)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
                raise ConfigError(f"representation.{key} must be a positive integer{' or null' if key == 'coefficients' else ''}, got {value!r}")

    def as_dict(self) -> dict:
        return asdict(self)

    def pipeline_spec(self) -> dict:
        """The ``audio-features`` input pipeline that reads files as this does (recorded with trained weights)."""
        return {"name": "audio-features", **{k: v for k, v in self.as_dict().items() if k != "name"}}

    def read(self, path) -> np.ndarray:
        """The checked ``(frames, coefficients)`` float32 array of one ``.npy`` file (never unpickled)."""
        from pathlib import Path

        from convgen.plugin_api import PathError, load_npy

        if not Path(path).is_file():
            raise PathError(f"feature file not found: {path}")
        x = load_npy(path)  # header checked before allocating; strings, complex... refused
        if x.ndim != 2:
            raise DataError(f"{path} holds an array of shape {x.shape}; features must be 2D (frames, coefficients)")
        if not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)) or x.dtype == np.bool_:
            raise DataError(f"{path} holds {x.dtype} values; features must be real numbers (float32)")
        frames, coefficients = x.shape
        if self.coefficients is not None and coefficients != self.coefficients:
            hint = " (is it stored as (coefficients, frames)? save its transpose)" if frames == self.coefficients else ""
            raise DataError(f"{path} has {coefficients} coefficients per frame but representation.coefficients is {self.coefficients}{hint}")
        if frames < self.min_frames:
            raise DataError(f"{path} has {frames} frames, fewer than representation.min_frames={self.min_frames}")
        x = x.astype(np.float32)
        if not np.isfinite(x).all():
            raise DataError(f"{path} holds {int((~np.isfinite(x)).sum())} NaN or infinite values; recompute its features")
        return x

    def features(self, x: np.ndarray) -> np.ndarray:
        """``(coefficients, frames)`` float32, normalised per utterance."""
        if self.normalize != "none":
            x = x - x.mean(0)
        if self.normalize == "bins":
            x = x / (x.std(0) + 1e-5)
        return np.ascontiguousarray(x.T, dtype=np.float32)

    def __call__(self, path) -> torch.Tensor:
        """One file as one encoder input ``(coefficients, frames)``, its whole length."""
        return torch.from_numpy(self.features(self.read(path)))

    def windows(self, path, overlap: float = 0.5) -> torch.Tensor:
        """The whole utterance as a batch of one: the encoder pools over any length."""
        return self(path)[None]


def representation_of(config: dict | None) -> Representation | FeatureSequence:
    """The representation a recipe block names: ``name: features`` (precomputed frames) or a spectrogram (the default)."""
    config = dict(config or {})
    name = config.pop("name", "spectrogram")
    if name == "features":
        known = [f.name for f in fields(FeatureSequence)]
        unknown = [k for k in config if k not in known]
        if unknown:
            raise ConfigError(f"unknown representation key {unknown[0]!r} for name=features (known: {', '.join(known)})")
        return FeatureSequence(**config)
    if name != "spectrogram":
        raise ConfigError(f"representation.name must be spectrogram or features, got {name!r}")
    return Representation.of(config)


def crop(x: torch.Tensor, frames: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """A random ``frames``-long window of ``x`` ``(C, T)`` (a shorter ``x`` is looped first: no padding to learn)."""
    length = x.shape[-1]
    if length < frames:
        x = x.repeat(1, -(-frames // length))
        length = x.shape[-1]
    start = int(torch.randint(0, length - frames + 1, (), generator=generator))
    return x[:, start : start + frames]
