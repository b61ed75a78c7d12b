"""``audio-stylize``: sound texture synthesis and audio style transfer, WAV out.

A recording becomes its log-magnitude STFT ``log(1 + |STFT| / FLOOR)`` laid out as a 1D signal:
frequency bins as channels over time. The core's style-transfer engine then matches the
Gram matrices of a wide random 1D convolution layer (``wide-conv``) to those of the style
(and, given a content recording, its activations too) with L-BFGS; Griffin-Lim turns the
optimised magnitude back into a waveform of exactly ``seconds``. Without ``content`` it is
texture synthesis: more of the style's sound, for as long as asked.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import torch
from rich.console import Console

from convgen.plugin_api import ConfigError, atomic_path, print_style_costs, recipe, run_style_transfer, write_style_report
from convgen_audio.audio import read_audio, trim, write_wav
from convgen_audio.datasets import sample_dir
from convgen_audio.features import FLOOR, frames, log_magnitude, magnitude, spectral_convergence, to_waveform

ENGINE_KEYS = ("seed", "encoder", "weights", "content_layers", "content_layer_weights", "style_layers",
               "style_layer_weights", "style_cost", "alpha", "beta", "tv", "normalize_layers", "noise_ratio", "optimizer", "lr",
               "iterations", "range", "memory_budget_gb", "device")  # fmt: skip

#: audio's own keys, and the engine defaults it changes
CHANGES = {
    "content": str(sample_dir("fsdd") / "6_jackson_3.flac"),
    "style": str(sample_dir("sounds") / "chirps.wav"),
    "seconds": None,
    "sample_rate": 8000,
    "resample": True,
    "trim_db": None,
    "n_fft": 256,
    "hop": 64,
    "griffin_lim": {"iterations": 100, "momentum": 0.99},
    "encoder": {"name": "wide-conv", "filters": 256, "kernel_sizes": [3, 9, 27], "embedding_dim": 128},
    "content_layers": ["relu"],
    "style_layers": ["relu"],
    "beta": 100.0,
    "init": None,
    "iterations": 100,
    "output": "result.wav",
}


def defaults() -> dict:
    """The recipe's defaults: the engine keys of the core ``stylize`` recipe (looked up by
    name), with audio's keys and changes."""
    engine = recipe("stylize").defaults
    return {**{key: copy.deepcopy(engine[key]) for key in ENGINE_KEYS}, **copy.deepcopy(CHANGES)}


def _load(path, config: dict) -> tuple[np.ndarray, int]:
    """A recording at the configured rate, trimmed, at a peak of 0.9: a quiet voice must not vanish beside a loud texture."""
    y, rate = read_audio(path, config["sample_rate"], resample=config["resample"])
    y = trim(y, rate, config["trim_db"])
    return 0.9 * y / np.abs(y).max(), rate


def _fit(y: np.ndarray, samples: int) -> np.ndarray:
    """The content at the requested length: its centre, or itself followed by silence."""
    if len(y) >= samples:
        start = (len(y) - samples) // 2
        return y[start : start + samples]
    return np.pad(y, (0, samples - len(y)))


def _inputs(config: dict) -> tuple[np.ndarray | None, np.ndarray, int, int]:
    """Content and style waveforms, their common rate and the output's length in samples."""
    if not config["style"]:
        raise ConfigError("style=PATH is missing: a recording whose sound to reproduce")
    if not str(config["output"]).lower().endswith(".wav"):
        raise ConfigError(f"output must be a .wav file name, got {config['output']!r}")
    n_fft, hop = config["n_fft"], config["hop"]
    if not (isinstance(n_fft, int) and isinstance(hop, int) and 0 < hop <= n_fft):
        raise ConfigError(f"n_fft and hop must be positive integers with hop <= n_fft, got n_fft={n_fft!r}, hop={hop!r}")
    style, rate = _load(config["style"], config)
    content, content_rate = _load(config["content"], config) if config["content"] else (None, rate)
    if content_rate != rate:  # only with sample_rate=null: files at different rates
        raise ConfigError(f"content is at {content_rate} Hz and style at {rate} Hz; set sample_rate=HZ")
    if config["seconds"] is not None:
        if not config["seconds"] > 0:
            raise ConfigError(f"seconds must be positive, got {config['seconds']!r}")
        samples = int(round(config["seconds"] * rate))
    else:
        samples = len(content) if content is not None else len(style)
    if samples < n_fft:
        raise ConfigError(f"{samples} samples is shorter than one STFT window (n_fft={n_fft}); ask for more seconds")
    return content, style, rate, samples


def run(config: dict, out_dir: Path) -> dict:
    content_wave, style_wave, rate, samples = _inputs(config)
    n_fft, hop = config["n_fft"], config["hop"]
    styles = [torch.from_numpy(log_magnitude(style_wave, n_fft, hop))]
    content = None if content_wave is None else torch.from_numpy(log_magnitude(_fit(content_wave, samples), n_fft, hop))
    engine_config = {**{k: config[k] for k in ENGINE_KEYS}, "style_weights": None,
                     "init": config["init"] or ("content" if content is not None else "noise")}  # fmt: skip
    result, summary, engine = run_style_transfer(engine_config, content, styles, shape=(n_fft // 2 + 1, frames(samples, hop)))

    gl = config["griffin_lim"]
    y = to_waveform(result.generated, n_fft, hop, samples, iterations=gl["iterations"], momentum=gl["momentum"], seed=config["seed"])
    convergence = spectral_convergence(y, magnitude(result.generated), n_fft, hop)  # how nearly Griffin-Lim reached it
    peak = float(np.abs(y).max())
    if peak > 0.99:  # keep the level Griffin-Lim gives, unless it would clip
        y = y * (0.99 / peak)
    output = out_dir / config["output"]
    write_wav(output, y, rate)
    heard = torch.from_numpy(log_magnitude(y, n_fft, hop))  # the result as written: after Griffin-Lim, re-analysed
    write_style_report(out_dir, content, styles, result, preview=False)
    plot_spectrograms(out_dir / "spectrograms.png", ({"content": content} if content is not None else {}) | {"style": styles[0], "result": heard}, rate, hop)

    def score(x: torch.Tensor) -> dict:
        with torch.no_grad():
            return engine.loss(x[None].to(next(engine.encoder.parameters()).device))[1]

    summary = {
        "output": str(output), "sample_rate": rate, "samples": len(y), "seconds": len(y) / rate,
        "mode": "style transfer" if content is not None else "texture synthesis",
        "griffin_lim_spectral_convergence": convergence,
        "heard": score(heard),
        **({"content_as_is": score(content)} if content is not None else {}),
        **summary,
    }  # fmt: skip
    summary["heard_style_reduction"] = 1 - summary["heard"]["style"] / result.start["style"] if result.start["style"] else None
    print_style_costs(result, f"audio-stylize ({summary['mode']}): {summary['encoder']} on {tuple(result.generated.shape)} (bins × frames)")
    Console().print(f"style cost {result.start['style']:.4g} → {result.final['style']:.4g} (optimised), {summary['heard']['style']:.4g} "
                    f"(the WAV, re-analysed); wrote {output} ({summary['seconds']:.3f} s at {rate} Hz)")  # fmt: skip
    return summary


def plot_spectrograms(path: Path, panels: dict[str, torch.Tensor], sample_rate: int, hop: int) -> Path:
    """Log-magnitude spectrograms side by side (same colour scale), time in seconds, frequency in Hz."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(3.2 * len(panels), 2.6), layout="constrained")
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    top = max(float(p.max()) for p in panels.values())
    for ax, (name, panel) in zip(axes, panels.items()):
        steps = panel.shape[1]
        extent = (0, steps * hop / sample_rate, 0, sample_rate / 2)
        image = ax.imshow(panel.numpy(), origin="lower", aspect="auto", extent=extent, cmap="magma", vmin=0, vmax=top)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("time (s)", fontsize=8)
        ax.tick_params(labelsize=7)
    axes[0].set_ylabel("frequency (Hz)", fontsize=8)
    fig.colorbar(image, ax=list(axes), shrink=0.8, label=f"log(1 + |STFT| / {FLOOR:g})")
    with atomic_path(Path(path)) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    return Path(path)
