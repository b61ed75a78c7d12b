"""Recordings in and out: WAV, FLAC and OGG through soundfile, checked, resampled, trimmed.

Every recording is checked once, where it is read, so that nothing downstream meets a
broken signal: a file cut short (its header promises more audio than it holds), NaN or
infinite samples, a flat line (every sample the same: a dead microphone or digital
silence) and an empty file are each a one-line `DataError`. Resampling is librosa's.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch

from convgen.plugin_api import DataError, PathError, atomic_path

SUFFIXES = [".wav", ".flac", ".ogg"]
WRITE_RATE = 16000
"""The sample rate of a WAV written through ``convgen.io.write`` when the tensor does not carry one."""

# libsndfile opens a WAV cut short and reports "data : 16000 (should be 7978)".
_SHORT_DATA = re.compile(r"^data\s*:\s*(\d+)\s*\(should be (\d+)\)", re.MULTILINE)
_STREAMING = {0, 0xFFFFFFFF}  # data sizes a streaming writer leaves in the header on purpose


def _reason(exc: Exception) -> str:
    return str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__


def _check_complete(path: Path, info) -> None:
    """A WAV whose header promises more audio than the file holds was cut short (a failed copy)."""
    found = _SHORT_DATA.search(getattr(info, "extra_info", "") or "")
    if found and int(found.group(1)) not in _STREAMING and int(found.group(1)) > int(found.group(2)):
        declared, present = int(found.group(1)), int(found.group(2))
        raise DataError(f"{path} is truncated: its header declares {declared} bytes of audio but the file holds {present}; copy it again")


def _load(path: Path) -> tuple[np.ndarray, int]:
    """``(channels, frames)`` float32 and the file's sample rate; soundfile first, then librosa's other backends."""
    import soundfile as sf

    try:
        info = sf.info(str(path))
        _check_complete(path, info)
        data, rate = sf.read(str(path), dtype="float32", always_2d=True)
        return data.T, int(rate)
    except DataError:
        raise
    except Exception as exc:  # libsndfile's errors, or a format it does not know
        known = path.suffix.lstrip(".").upper() in sf.available_formats()
        if known:
            raise DataError(f"{path} is not a readable audio file ({_reason(exc)}); re-export it as WAV or FLAC") from None
        first = exc
    try:  # a format libsndfile lacks (e.g. .m4a): librosa's audioread backends, if any are installed
        import librosa

        data, rate = librosa.load(str(path), sr=None, mono=False)
        return np.atleast_2d(data).astype(np.float32), int(rate)
    except Exception:
        raise DataError(f"{path} is not a readable audio file ({_reason(first)}); re-export it as WAV or FLAC") from None


def check_signal(y: np.ndarray, source: str) -> np.ndarray:
    """``y`` if it is a usable signal; a `DataError` naming the problem otherwise."""
    if y.size == 0:
        raise DataError(f"{source} holds no audio samples; record or export it again")
    if not np.isfinite(y).all():
        bad = int((~np.isfinite(y)).sum())
        raise DataError(f"{source} holds {bad} NaN or infinite samples; re-export the recording")
    if float(y.max()) == float(y.min()):
        raise DataError(f"{source} is a flat line (every sample is {float(y.flat[0]):g}): there is no sound to use")
    return y


def read_audio(path, sample_rate: int | None = None, mono: bool = True, resample: bool = True) -> tuple[np.ndarray, int]:
    """A recording as float32 samples and its rate: ``(frames,)`` when ``mono``, else ``(channels, frames)``.

    ``sample_rate`` (None: the file's own) is reached by resampling; with ``resample=False``
    a file at another rate is an error rather than features on a different time/frequency scale.
    """
    path = Path(path)
    if not path.is_file():
        raise PathError(f"audio file not found: {path}; check the path" if not path.exists() else f"{path} is a folder; expected an audio file")
    y, rate = _load(path)
    if not 0 < rate <= 10_000_000:  # a forged header (2^31 - 1 Hz): resampling would leave no samples
        raise DataError(f"{path} claims a sampling rate of {rate} Hz; re-export it at a real rate (8000 to 192000 Hz)")
    if mono:
        y = y.mean(0)
    check_signal(y, str(path))
    if sample_rate and rate != sample_rate:
        if not resample:
            raise DataError(
                f"{path} is sampled at {rate} Hz but sample_rate is {sample_rate} Hz and resample is false; "
                f"set resample=true or sample_rate={rate}"
            )
        import librosa

        y = librosa.resample(y, orig_sr=rate, target_sr=sample_rate).astype(np.float32)
        rate = sample_rate
    return y, rate


def trim(y: np.ndarray, sample_rate: int, top_db: float | None) -> np.ndarray:
    """``y`` without its leading and trailing silence (frames ``top_db`` below the loudest); None keeps all."""
    if top_db is None:
        return y
    import librosa

    frame = max(64, int(0.032 * sample_rate))  # 32 ms frames: librosa's 2048 default is 256 ms at 8 kHz
    trimmed, _ = librosa.effects.trim(y, top_db=float(top_db), frame_length=frame, hop_length=frame // 4)
    return trimmed


def write_wav(path, samples, sample_rate: int, subtype: str = "PCM_16") -> Path:
    """``(frames,)`` or ``(channels, frames)`` samples in [-1, 1] as a WAV, written atomically.

    ``PCM_16`` clips to [-1, 1] (what a player would do); ``FLOAT`` keeps the values.
    """
    import soundfile as sf

    y = samples.detach().cpu().numpy() if isinstance(samples, torch.Tensor) else np.asarray(samples)
    if y.ndim not in (1, 2) or y.size == 0:
        raise DataError(f"a WAV holds (frames,) or (channels, frames) samples, got shape {tuple(y.shape)}")
    if not np.isfinite(y).all():
        raise DataError(f"refusing to write {path}: the signal holds NaN or infinite samples")
    if not isinstance(sample_rate, int) or sample_rate < 1:
        raise DataError(f"sample_rate must be a positive integer number of Hz, got {sample_rate!r}")
    y = y.astype(np.float32)
    if subtype != "FLOAT":
        y = np.clip(y, -1.0, 1.0)
    path = Path(path)
    with atomic_path(path) as tmp:
        sf.write(str(tmp), y.T, sample_rate, subtype=subtype, format="WAV")
    return path


def read_waveform(path) -> torch.Tensor:
    """The reader registered for ``.wav``, ``.flac`` and ``.ogg``: ``(channels, frames)`` floats.

    The tensor is a ``MetaTensor`` carrying ``sample_rate``, so that `write_waveform` writes
    what was read at the rate it was read.
    """
    from monai.data import MetaTensor

    y, rate = read_audio(path, mono=False)
    return MetaTensor(torch.from_numpy(np.ascontiguousarray(y)), meta={"sample_rate": rate})


def write_waveform(path, sample: torch.Tensor) -> None:
    """The ``.wav`` writer: at the tensor's ``sample_rate`` (from `read_waveform`), else `WRITE_RATE`."""
    if sample.ndim != 2:
        raise DataError(f"a WAV holds a (channels, frames) waveform, got shape {tuple(sample.shape)}")
    meta = getattr(sample, "meta", None) or {}
    rate = meta.get("sample_rate", WRITE_RATE)
    write_wav(path, torch.as_tensor(sample).as_subclass(torch.Tensor), int(rate))
