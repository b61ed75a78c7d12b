"""``feature-statistics``: the classic speaker baseline that a learned encoder must beat.

Each utterance becomes the mean and standard deviation of every coefficient over its
frames (the long-term average spectrum and its variability), z-scored over the evaluated
set; ``evaluate`` L2-normalises and compares them like embeddings (cosine nearest
neighbour). Computed from the files as stored, before the representation's per-utterance
normalisation (which removes the very means it needs).
"""

from __future__ import annotations

import numpy as np

from convgen.plugin_api import DataError


def feature_statistics(dataset, **context) -> np.ndarray:
    """MFCC statistics: each coefficient's mean and std over the utterance, z-scored, cosine nearest neighbour."""
    from convgen_audio.features import FeatureSequence

    while not hasattr(dataset, "representation") and hasattr(dataset, "dataset"):  # a Subset
        dataset = dataset.dataset
    representation = getattr(dataset, "representation", None)
    if not isinstance(representation, FeatureSequence):
        raise DataError("feature-statistics needs a dataset of feature files (representation.name=features)")
    stats = np.stack([statistics(representation.read(f)) for f in dataset.files])
    return (stats - stats.mean(0)) / (stats.std(0) + 1e-8)


def statistics(frames: np.ndarray) -> np.ndarray:
    """``(frames, C)`` -> ``(2C,)``: every coefficient's mean, then its standard deviation."""
    return np.concatenate([frames.mean(0), frames.std(0)])
