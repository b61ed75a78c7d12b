"""The ``ecg`` input pipeline: a record becomes its heartbeat windows ``(n, 1, length)``.

Its options are `convgen_ecg.preprocess.EcgPipeline`'s (sampling rate, lead, band-pass,
beat or fixed windows) plus ``fs_csv`` (the rate of CSV files without a time column):
the same code cuts the training beats of the ``ecg`` dataset.
"""

from __future__ import annotations

import dataclasses
import inspect

from convgen_ecg.preprocess import EcgPipeline
from convgen_ecg.signals import read_record


class EcgInputs:
    """A record's windows through an `EcgPipeline`; ``preview`` is the cleaned trace (its first 4 s)."""

    def __init__(self, pipeline: EcgPipeline, fs_csv: float | None):
        self.pipeline, self.fs_csv = pipeline, fs_csv

    def __call__(self, path):
        return self.pipeline(read_record(path, fs=self.fs_csv)).windows

    def preview(self, path):
        import torch

        trace = self.pipeline.clean(read_record(path, fs=self.fs_csv))[: int(4 * self.pipeline.fs)]
        return torch.as_tensor(trace[None].copy(), dtype=torch.float32)  # (1, L): a 1D trace


def ecg(**options) -> EcgInputs:
    fs_csv = options.pop("fs_csv", None)
    return EcgInputs(EcgPipeline.of(**options), fs_csv)


_FIELDS = [inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=list(f.default) if isinstance(f.default, tuple) else f.default)
           for f in dataclasses.fields(EcgPipeline)]  # fmt: skip
ecg.__signature__ = inspect.Signature([*_FIELDS, inspect.Parameter("fs_csv", inspect.Parameter.KEYWORD_ONLY, default=None)])
ecg.__doc__ = "One window per heartbeat of a record; options: EcgPipeline's, and fs_csv (the rate of CSV files without a time column)."
