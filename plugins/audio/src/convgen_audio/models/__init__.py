"""Encoders trained by convgen that ship with the audio plugin (model cards in docs/audio.md).

``TDNN_AN4``: the ``audio-train-features`` recipe's ``tdnn`` trained on 78 speakers of CMU
AN4's MFCC features (all 84 but the 6 of the bundled sample, so that
``convgen run audio-evaluate-features weights=...`` on the sample scores people it never
heard). Its input pipeline (``audio-features``: 13 Sphinx cepstra per frame, as stored) is
recorded in the file.
"""

from pathlib import Path

TDNN_AN4 = Path(__file__).resolve().parent / "tdnn-an4-mfcc.safetensors"
