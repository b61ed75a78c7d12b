"""The ``audio`` input pipeline: a recording becomes windows of its spectrogram ``(n, C, T)``.

Its options are `convgen_audio.features.Representation`'s (sample rate, kind, bands,
seconds, normalisation, layout; the ``speakers`` dataset makes its training samples with
the same code) plus ``overlap``: a recording longer than ``seconds`` is cut into windows
that overlap by this fraction, and its embedding is their mean.
"""

from __future__ import annotations

import dataclasses
import inspect

from convgen.errors import ConfigError
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
