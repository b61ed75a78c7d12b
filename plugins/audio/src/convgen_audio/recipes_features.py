"""Speaker recipes on precomputed feature sequences (MFCCs as ``.npy``): ``audio-train-features``, ``audio-evaluate-features``.

For speech sets that ship features and no audio, such as CMU AN4's Sphinx cepstra
(84 speakers). The defaults are the ones the measurements on AN4 favoured
(``benchmarks/accuracy_audio.py``, docs/audio.md): a ``tdnn`` (x-vector) encoder over
the 13 cepstra, random crops of 3 s for training, the whole utterance for evaluation,
the triplet loss over P×K batches. The default root is the bundled 6-speaker AN4 sample,
so both recipes run on a fresh clone; point ``dataset.root`` at a folder of
``<speaker>/<utterance>.npy`` files for real use, and ``dataset.fold`` /
``dataset.exclude_fold`` at speaker-disjoint folds to measure.
"""

from __future__ import annotations

from convgen_audio.features import FeatureSequence

FEATURES = FeatureSequence().as_dict()  # name: features, any number of coefficients, values as stored
DATASET = {"name": "speakers", "root": None, "pattern": None, "speakers": None, "exclude_speakers": None, "takes": None,
           "folds": 5, "fold": None, "exclude_fold": False, "crop": 300, "representation": FEATURES}  # fmt: skip
# x-vector layers over 15 frames (half the x-vector's widths: 67 training speakers), mean and std
# pooled over the utterance, 128-d embeddings.
ENCODER = {"name": "tdnn", "channels": [64, 64, 64, 64, 192], "kernel_sizes": [5, 3, 3, 1, 1], "dilations": [1, 2, 3, 1, 1],
           "embedding_dim": 128}  # fmt: skip
# Tempo (time zoom up to ±10%, the feature-level cousin of speed perturbation) and noise of 10%
# of the crop's std: on AN4's 5 folds a wash (rank-1 0.730 with, 0.732 without; docs/audio.md).
AUGMENT = {"flip": [], "shift": 0.0, "rotate": 0.0, "scale": 0.1, "contrast": 0.0, "noise": 0.1}

# Each recipe below is the core recipe it is based on (register(..., based_on=...)) with these keys changed.
TRAIN = dict(
    spatial_dims=1, dataset=DATASET, encoder=ENCODER, augment=AUGMENT, epochs=30,
    # keep the last epoch (cosine decays to 0): 7 validation speakers picked epochs 6 points worse
    keep="last", split={"val_fraction": 0.1, "by": "identity"}, sampler={"p": 16, "k": 4}, batch_size=64,
    loss={"name": "triplet", "margin": 0.2, "mining": "all"},
    optimizer={"name": "adamw", "lr": 0.002, "weight_decay": 0.0005, "momentum": 0.9},
)  # fmt: skip
# Whole utterances of any length: one at a time (batch_size 1), the encoder pools over each;
# beside it, the MFCC-statistics baseline and the same network untrained.
EVALUATE = dict(
    spatial_dims=1, dataset={**DATASET, "crop": None}, encoder=None, batch_size=1,
    baselines=["feature-statistics", "untrained"],
    episodes={"n_way": 5, "k_shot": 1, "queries": 2, "episodes": 200},
)  # fmt: skip

DESCRIPTIONS = {
    "audio-train-features": "Train a speaker encoder (x-vector TDNN) on precomputed features, .npy (frames, coefficients) per utterance (bundled AN4 sample).",
    "audio-evaluate-features": "Speaker verification EER and one-shot identification on precomputed features (whole utterances).",
}


def register(register_recipe) -> None:
    register_recipe("audio-train-features", based_on="train", defaults=TRAIN,
                    description=DESCRIPTIONS["audio-train-features"])  # fmt: skip
    register_recipe("audio-evaluate-features", based_on="evaluate", defaults=EVALUATE,
                    description=DESCRIPTIONS["audio-evaluate-features"])  # fmt: skip
