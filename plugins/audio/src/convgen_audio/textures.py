"""A generated sound texture for the style-transfer demo: rising chirps over a hum and hiss.

The bundled ``samples/sounds/chirps.wav`` is ``chirps()`` written at 8 kHz
(``python -m convgen_audio.textures PATH``): generated here, so free of any licence.
It is a texture in the sense Gram statistics capture: the same events (short upward
sweeps) recur at random times, over a steady harmonic hum and a faint noise floor.
"""

from __future__ import annotations

import sys

import numpy as np


def chirps(seconds: float = 2.0, sample_rate: int = 8000, rate: float = 7.0, seed: int = 0) -> np.ndarray:
    """``seconds`` of chirps (about ``rate`` per second) as float32 samples in [-1, 1]."""
    rng = np.random.default_rng(seed)
    n = int(round(seconds * sample_rate))
    t = np.arange(n) / sample_rate
    y = 0.05 * sum(np.sin(2 * np.pi * 110 * k * t) / k for k in range(1, 6))  # a hum at 110 Hz and harmonics
    y += 0.01 * rng.standard_normal(n)
    for onset in np.sort(rng.uniform(0, seconds, int(rate * seconds))):
        length = rng.uniform(0.06, 0.12)
        f0 = rng.uniform(700, 1300)
        tau = np.arange(int(length * sample_rate)) / sample_rate
        phase = 2 * np.pi * f0 * length / np.log(2.5) * (2.5 ** (tau / length) - 1)  # f0 → 2.5 f0, exponentially
        start = int(onset * sample_rate)
        piece = (0.3 * np.sin(phase) * np.hanning(len(tau)))[: n - start]
        y[start : start + len(piece)] += piece
    return (0.9 * y / np.abs(y).max()).astype(np.float32)


if __name__ == "__main__":
    from convgen_audio.audio import write_wav

    write_wav(sys.argv[1], chirps(), 8000)
