"""The ``audio`` input pipeline: a recording becomes windows of its spectrogram ``(n, C, T)``.

Its options are `convgen_audio.features.Representation`'s (sample rate, kind, bands,
seconds, normalisation, layout; the ``speakers`` dataset makes its training samples with
the same code) plus ``overlap``: a recording longer than ``seconds`` is cut into windows
that overlap by this fraction, and its embedding is their mean.
"""

from __future__ import annotations

import dataclasses
import inspect

from convgen.plugin_api import ConfigError
from convgen_audio.features import Representation


class AudioInputs:
    def __init__(self, representation: Representation, overlap: float):
        self.representation, self.overlap = representation, overlap

    def __call__(self, path):
        return self.representation.windows(path, overlap=self.overlap)

    def preview(self, path):
        x = self.representation(path)
        x = x if x.ndim == 3 else x[None]  # (1, F, T): the spectrogram as a picture
        return (x - x.min()) / (x.max() - x.min() + 1e-8)


def audio(**options) -> AudioInputs:
    overlap = options.pop("overlap", 0.5)
    if not 0 <= overlap < 1:
        raise ConfigError(f"overlap must be in [0, 1), got {overlap!r}")
    return AudioInputs(Representation.of(options), float(overlap))


_FIELDS = [inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=f.default) for f in dataclasses.fields(Representation)]
audio.__signature__ = inspect.Signature([*_FIELDS, inspect.Parameter("overlap", inspect.Parameter.KEYWORD_ONLY, default=0.5)])
audio.__doc__ = "Windows of a recording's spectrogram; options: Representation's, and overlap (between windows)."


class FeatureInputs:
    """A ``.npy`` feature file as one whole-utterance input ``(1, C, T)``: the encoder pools over any length."""

    def __init__(self, features):
        self.features = features

    def __call__(self, path):
        return self.features.windows(path)

    def preview(self, path):
        x = self.features(path)[None]  # (1, C, T): the coefficients over time as a picture
        return (x - x.min()) / (x.max() - x.min() + 1e-8)


def audio_features(**options) -> FeatureInputs:
    from convgen_audio.features import FeatureSequence

    return FeatureInputs(FeatureSequence(**options))


audio_features.__signature__ = inspect.Signature([
    inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default)
    for name, default in (("coefficients", None), ("normalize", "none"), ("min_frames", 10))])  # fmt: skip
audio_features.__doc__ = "A precomputed feature file (.npy, frames x coefficients) as one input; options: FeatureSequence's."
