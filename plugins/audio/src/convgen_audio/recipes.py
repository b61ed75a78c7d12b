"""Audio recipes: the core's training and evaluation on speakers, gallery recipes, style transfer.

``audio-train`` and ``audio-evaluate`` are the core recipes (``train``, ``evaluate``) with
defaults for the bundled FSDD sample: a 1D ResNet over log-mel frames (40 mel bands as
channels, 1 s), trained on FSDD's training takes (5–49), evaluated on its test takes
(0–4): utterances the encoder never heard. ``audio-enrol``, ``audio-verify`` and
``audio-identify`` embed whole recordings (the mean over 1 s windows) into an SQLite
gallery. ``audio-stylize`` is in `convgen_audio.style`.
"""

from __future__ import annotations

from convgen.plugin_api import register_gallery_recipes
from convgen_audio import recipes_features, style
from convgen_audio.datasets import FSDD_PATTERN
from convgen_audio.features import Representation

REPRESENTATION = Representation().as_dict()  # log-mel, 8 kHz, 40 bands, 1 s, per-utterance normalised, 1D
SPEAKERS = {"name": "speakers", "root": None, "pattern": FSDD_PATTERN, "speakers": None, "takes": "5-49",
            "representation": REPRESENTATION}  # fmt: skip
# Three residual stages over time (the stem halves the 100 frames per second), 64-d embeddings.
ENCODER = {"name": "resnet", "channels": [32, 64, 128], "strides": [1, 2, 2], "stem_kernel": 3, "stem_stride": 2,
           "embedding_dim": 64}  # fmt: skip
# Speaking a little earlier or later, faster or slower, with a little noise: the same voice.
AUGMENT = {"flip": [], "shift": 0.1, "rotate": 0.0, "scale": 0.1, "contrast": 0.0, "noise": 0.05}


# Each recipe below is the core recipe it is based on (register(..., based_on=...)) with these keys changed.
TRAIN = dict(
    spatial_dims=1, dataset=SPEAKERS, encoder=ENCODER, augment=AUGMENT, epochs=30,
    split={"val_fraction": 0.34, "by": "identity"}, sampler={"p": 4, "k": 8}, batch_size=64,
    optimizer={"name": "adamw", "lr": 0.002, "weight_decay": 0.0005, "momentum": 0.9},
)  # fmt: skip
EVALUATE = dict(
    spatial_dims=1, dataset={**SPEAKERS, "takes": "0-4"}, encoder=None,
    episodes={"n_way": 5, "k_shot": 1, "queries": 4, "episodes": 200},
)  # fmt: skip


def register(register_recipe) -> None:
    """Every audio recipe, registered through the plugin's ``register_recipes`` hook."""
    register_recipe("audio-train", based_on="train", defaults=TRAIN,
                    description="Train a speaker encoder (1D ResNet over log-mel frames) with the triplet loss (bundled FSDD sample).")
    register_recipe("audio-evaluate", based_on="evaluate", defaults=EVALUATE,
                    description="Speaker verification EER and one-shot identification on utterances unseen in training (FSDD takes 0-4).")
    register_gallery_recipes(register_recipe, "audio", {"name": "audio", **REPRESENTATION, "overlap": 0.5}, noun="recording", what="recordings")
    recipes_features.register(register_recipe)
    register_recipe("audio-stylize", style.run, defaults=style.defaults, components={"encoder": "encoder", "style_cost": "style_cost"},
                    description="Sound texture synthesis (no content) or audio style transfer: Gram costs on the log-magnitude STFT, WAV out.")
