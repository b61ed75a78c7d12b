"""The audio plugin through convgen's public surface: readers, representations, datasets, recipes."""

import json

import librosa
import numpy as np
import pytest
import soundfile as sf
import torch
from convgen_audio.audio import read_audio, trim, write_wav
from convgen_audio.datasets import sample_dir
from convgen_audio.features import (
    Representation,
    log_magnitude,
    magnitude,
    spectral_convergence,
    to_waveform,
)
from convgen_audio.textures import chirps

from convgen import io, registry
from convgen.errors import ConfigError, DataError
from convgen.testing import invoke, one_line_error

FSDD = sample_dir("fsdd")
RATE = 8000


def tone(seconds=0.5, frequency=440.0, rate=RATE, amplitude=0.5):
    t = np.arange(int(seconds * rate)) / rate
    return (amplitude * np.sin(2 * np.pi * frequency * t)).astype(np.float32)


def peak_hz(y, rate):
    return np.fft.rfftfreq(len(y), 1 / rate)[np.argmax(np.abs(np.fft.rfft(y)))]


@pytest.mark.parametrize("suffix", [".wav", ".flac", ".ogg"])
def test_the_reader_handles_each_format(tmp_path, suffix):
    y = tone()
    sf.write(tmp_path / f"x{suffix}", y, RATE)
    sample = io.read(tmp_path / f"x{suffix}")
    assert sample.shape == (1, len(y)) and sample.dtype == torch.float32 and sample.meta["sample_rate"] == RATE
    if suffix == ".ogg":  # lossy: the same tone, not the same samples
        assert abs(peak_hz(sample[0].numpy(), RATE) - 440) < 5 and np.corrcoef(sample[0].numpy(), y)[0, 1] > 0.9
    else:
        assert np.abs(sample[0].numpy() - y).max() <= 1 / 32768 + 1e-6
    stereo = np.stack([y, 0.5 * y], 1)
    sf.write(tmp_path / f"stereo{suffix}", stereo, RATE)
    assert io.read(tmp_path / f"stereo{suffix}").shape == (2, len(y))
    mono, _ = read_audio(tmp_path / f"stereo{suffix}")
    tolerance = 0.1 if suffix == ".ogg" else 1e-4
    assert mono.shape == (len(y),) and np.abs(mono - 0.75 * y).max() < tolerance  # the mean of the channels


def test_the_wav_writer_keeps_the_rate_it_read(tmp_path):
    sf.write(tmp_path / "in.wav", tone(), RATE)
    io.write(tmp_path / "out.wav", io.read(tmp_path / "in.wav"))
    assert sf.info(tmp_path / "out.wav").samplerate == RATE
    assert np.array_equal(sf.read(tmp_path / "out.wav", dtype="int16")[0], sf.read(tmp_path / "in.wav", dtype="int16")[0])
    io.write(tmp_path / "plain.wav", torch.from_numpy(tone())[None] * 4)  # no rate carried, and beyond [-1, 1]
    info = sf.info(tmp_path / "plain.wav")
    assert info.samplerate == 16000 and info.subtype == "PCM_16" and np.abs(sf.read(tmp_path / "plain.wav")[0]).max() <= 1.0
    write_wav(tmp_path / "float.wav", tone() * 2, RATE, subtype="FLOAT")
    assert np.abs(sf.read(tmp_path / "float.wav")[0]).max() == pytest.approx(1.0, abs=1e-6)  # FLOAT keeps values > 1


def test_resampling_keeps_the_pitch_and_scales_the_length(tmp_path):
    sf.write(tmp_path / "x.wav", tone(0.5, 440.0), RATE)
    y, rate = read_audio(tmp_path / "x.wav", sample_rate=16000)
    assert rate == 16000 and len(y) == 8000 and abs(peak_hz(y, rate) - 440) < 3
    y, rate = read_audio(tmp_path / "x.wav", sample_rate=4000)
    assert rate == 4000 and len(y) == 2000 and abs(peak_hz(y, rate) - 440) < 3


def test_trim_cuts_leading_and_trailing_silence():
    rng = np.random.default_rng(0)
    quiet = lambda s: 1e-4 * rng.standard_normal(int(s * RATE)).astype(np.float32)
    y = np.concatenate([quiet(0.5), tone(0.3), quiet(0.4)])
    trimmed = trim(y, RATE, top_db=30)
    assert abs(len(trimmed) / RATE - 0.3) < 0.05
    assert len(trim(y, RATE, None)) == len(y)


def test_broken_recordings_are_one_line_errors(tmp_path):
    sf.write(tmp_path / "good.wav", tone(), RATE, subtype="PCM_16")
    data = (tmp_path / "good.wav").read_bytes()
    (tmp_path / "cut.wav").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=r"cut.wav is truncated: its header declares 8000 bytes of audio but the file holds 3978"):
        io.read(tmp_path / "cut.wav")
    sf.write(tmp_path / "zeros.wav", np.zeros(4000, np.float32), RATE)
    sf.write(tmp_path / "dc.wav", np.full(4000, 0.25, np.float32), RATE)
    for name in ("zeros.wav", "dc.wav"):
        with pytest.raises(DataError, match=f"{name} is a flat line"):
            read_audio(tmp_path / name)
    bad = tone()
    bad[100] = np.nan
    sf.write(tmp_path / "nan.wav", bad, RATE, subtype="FLOAT")
    with pytest.raises(DataError, match="nan.wav holds 1 NaN or infinite samples"):
        read_audio(tmp_path / "nan.wav")
    sf.write(tmp_path / "empty.wav", np.zeros(0, np.float32), RATE)
    with pytest.raises(DataError, match="empty.wav holds no audio samples"):
        io.read(tmp_path / "empty.wav")
    (tmp_path / "junk.flac").write_bytes(b"not audio at all")
    with pytest.raises(DataError, match="junk.flac is not a readable audio file"):
        io.read(tmp_path / "junk.flac")

    # the same through the command line: one line, no traceback
    one_line_error(invoke("run", "audio-stylize", f"content={tmp_path / 'cut.wav'}", "-o", tmp_path / "r1"), "is truncated")
    one_line_error(invoke("run", "audio-stylize", f"style={tmp_path / 'zeros.wav'}", "-o", tmp_path / "r2"), "is a flat line")
    one_line_error(invoke("run", "audio-stylize", f"content={tmp_path / 'nan.wav'}", "-o", tmp_path / "r3"), "NaN or infinite")


def test_a_sample_rate_mismatch_is_an_error_unless_resampling(tmp_path):
    sf.write(tmp_path / "wide.wav", tone(rate=16000), 16000)
    with pytest.raises(DataError, match="sampled at 16000 Hz but sample_rate is 8000 Hz and resample is false"):
        Representation(resample=False)(tmp_path / "wide.wav")
    assert Representation(resample=True)(tmp_path / "wide.wav").shape == (40, 101)
    one_line_error(invoke("run", "audio-stylize", f"content={tmp_path / 'wide.wav'}", "resample=false", "-o", tmp_path / "r1"),
                   "sampled at 16000 Hz but sample_rate is 8000 Hz")  # fmt: skip
    # a dataset of the bundled 8 kHz recordings, configured for 16 kHz without resampling
    one_line_error(invoke("run", "audio-evaluate", "dataset.representation.sample_rate=16000", "dataset.representation.resample=false",
                          "-o", tmp_path / "r2"), "sampled at 8000 Hz but sample_rate is 16000 Hz")  # fmt: skip


def test_representations_shapes_normalisation_and_windows(tmp_path):
    path = FSDD / "6_jackson_3.flac"
    mel = Representation()(path)
    assert mel.shape == (40, 101) and abs(float(mel.mean())) < 1e-4 and abs(float(mel.std()) - 1) < 1e-2
    assert Representation(layout="2d")(path).shape == (1, 40, 101)
    assert Representation(kind="log-stft", seconds=0.5)(path).shape == (129, 51)
    bins = Representation(normalize="bins")(path)
    assert torch.allclose(bins.mean(1), torch.zeros(40), atol=1e-4)
    y = Representation().load(path)
    looped = Representation(seconds=2.0).fit(y)
    assert len(looped) == 16000 and np.array_equal(looped[: len(y)], y) and np.array_equal(looped[len(y) : 2 * len(y)], y)
    write_wav(tmp_path / "long.wav", tone(4.0), RATE)
    windows = Representation().windows(tmp_path / "long.wav")
    assert windows.shape == (7, 40, 101)  # 1 s windows every 0.5 s: starting at 0, 0.5, ..., 3 s
    assert Representation().windows(path).shape == (1, 40, 101)
    with pytest.raises(ConfigError, match="unknown representation key 'n_mel'"):
        Representation.of({"n_mel": 40})
    with pytest.raises(ConfigError, match="layout must be one of 1d, 2d"):
        Representation(layout="3d")


def test_stft_griffin_lim_stft_round_trip():
    y = chirps(1.0)
    log_mag = log_magnitude(y, 256, 64)
    expected = np.abs(librosa.stft(y, n_fft=256, hop_length=64))
    assert np.allclose(magnitude(log_mag), expected, rtol=1e-4, atol=1e-6)
    back = to_waveform(log_mag, 256, 64, len(y), iterations=100)
    assert len(back) == len(y)
    converged = spectral_convergence(back, expected, 256, 64)
    one_step = spectral_convergence(to_waveform(log_mag, 256, 64, len(y), iterations=1), expected, 256, 64)
    assert converged < 0.05 and one_step > 0.3, (converged, one_step)


def test_the_speakers_dataset_filters_by_take_speaker_and_folder(tmp_path):
    everyone = registry.build("dataset", {"name": "speakers"})
    assert everyone.classes == ["george", "jackson", "lucas", "nicolas", "theo", "yweweler"] and len(everyone) == 90
    test = registry.build("dataset", {"name": "speakers", "takes": "0-4"})
    train = registry.build("dataset", {"name": "speakers", "takes": "5-49"})
    assert len(test) == 30 and len(train) == 60 and not set(test.files) & set(train.files)
    some = registry.build("dataset", {"name": "speakers", "speakers": ["theo", "lucas"], "takes": [0, "1-2"], "max_per_speaker": 2})
    assert some.classes == ["lucas", "theo"] and [f.name for f in some.files] == ["0_lucas_0.flac", "2_lucas_1.flac", "0_theo_0.flac", "2_theo_1.flac"]
    x, label = some[3]
    assert x.shape == (40, 101) and some.classes[label] == "theo"
    digit_3 = registry.build("dataset", {"name": "speakers", "match": "^3_"})
    assert len(digit_3) == 6 and all(f.name.startswith("3_") for f in digit_3.files)
    for person in ("ann", "bob"):
        (tmp_path / person).mkdir()
        for i in range(2):
            write_wav(tmp_path / person / f"{i}.wav", tone(0.3, 300 + 200 * i + (person == "bob") * 50), RATE)
    folders = registry.build("dataset", {"name": "speakers", "root": str(tmp_path), "pattern": None})
    assert folders.classes == ["ann", "bob"] and len(folders) == 4
    with pytest.raises(DataError, match="for one sub-folder per speaker set pattern=null"):
        registry.build("dataset", {"name": "speakers", "root": str(tmp_path)})
    with pytest.raises(DataError, match="no recordings of nobody"):
        registry.build("dataset", {"name": "speakers", "speakers": ["nobody"]})
    with pytest.raises(ConfigError, match="needs a pattern with a"):
        registry.build("dataset", {"name": "speakers", "pattern": r"(?P<speaker>\w+)", "takes": "0-4"})
    with pytest.raises(ConfigError, match="takes lists numbers or ranges"):
        registry.build("dataset", {"name": "speakers", "takes": "first"})


def test_the_wide_conv_encoder():
    encoder = registry.build("encoder", {"name": "wide-conv", "filters": 8, "kernel_sizes": [3, 11]}, spatial_dims=1, in_channels=129)
    taps = encoder.taps(torch.randn(2, 129, 50), ["conv", "relu"])
    assert taps["conv"].shape == (2, 16, 50) and taps["relu"].min() >= 0
    assert encoder.receptive_fields()["relu"].size == (11,)
    assert encoder(torch.randn(2, 129, 50)).shape == (2, 128)
    with pytest.raises(ConfigError, match="odd positive integers"):
        registry.build("encoder", {"name": "wide-conv", "kernel_sizes": [4]}, spatial_dims=1, in_channels=3)


SMALL_STYLE = ["n_fft=128", "hop=32", "encoder.filters=48", "encoder.kernel_sizes=[3,9]", "griffin_lim.iterations=30"]


def test_texture_synthesis_matches_the_style_and_writes_the_asked_length(tmp_path):
    out = tmp_path / "texture"
    result = invoke("run", "audio-stylize", "content=null", "seconds=0.75", "iterations=40", *SMALL_STYLE, "-o", out)
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    # >= 90% lower than at the start (noise), and a small fraction of a silent output's distance (1.0)
    assert summary["mode"] == "texture synthesis" and summary["style_reduction"] >= 0.9 and summary["final"]["style"] < 0.05, summary
    y, rate = sf.read(out / "result.wav")
    assert rate == 8000 and len(y) == 6000 and np.abs(y).max() > 0.01 and np.isfinite(y).all()
    for name in ("spectrograms.png", "costs.png", "history.json"):
        assert (out / name).stat().st_size > 0, name


def test_style_transfer_keeps_the_content_length_and_matches_the_style(tmp_path):
    out = tmp_path / "transfer"
    content = FSDD / "6_jackson_3.flac"
    result = invoke("run", "audio-stylize", f"content={content}", "iterations=40", *SMALL_STYLE, "-o", out)
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["mode"] == "style transfer" and summary["style_reduction"] >= 0.9 and summary["final"]["style"] < 0.05, summary
    assert summary["start"]["content"] == 0 and summary["final"]["content"] < 1  # starts from the content; nearer it than a blank output
    # the WAV itself, re-analysed, is much nearer the style than the content recording was
    assert summary["heard"]["style"] < 0.5 * summary["content_as_is"]["style"], summary
    y, rate = sf.read(out / "result.wav")
    assert rate == 8000 and len(y) == sf.info(content).frames
    out = tmp_path / "longer"
    result = invoke("run", "audio-stylize", f"content={content}", "seconds=1.25", "iterations=2", *SMALL_STYLE, "-o", out)
    assert result.exit_code == 0, result.output
    assert len(sf.read(out / "result.wav")[0]) == 10000


def test_train_evaluate_enrol_verify_identify_round_trip(tmp_path):
    train_dir = tmp_path / "train"
    result = invoke("run", "audio-train", "epochs=2", "encoder.channels=[16,16,16]", "-o", train_dir)
    assert result.exit_code == 0, result.output
    weights = train_dir / "encoder.safetensors"
    split = json.loads((train_dir / "split.json").read_text())
    assert len(split["train"]) == 4 and len(split["val"]) == 2 and not set(split["train"]) & set(split["val"])

    result = invoke("run", "audio-evaluate", f"weights={weights}", "-o", tmp_path / "eval")
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "eval" / "report.json").read_text())
    assert report["samples"] == 30 and report["identities"] == 6  # the test takes 0-4 only
    assert 0 <= report["verification"]["eer"] <= 1 and report["verification"]["same_pairs"] == 6 * 10

    db = tmp_path / "voices.db"
    theo, lucas = [FSDD / "5_theo_10.flac", FSDD / "7_theo_12.flac"], [FSDD / "5_lucas_10.flac"]
    for name, files in (("theo", theo), ("lucas", lucas)):
        result = invoke("run", "audio-enrol", f"gallery={db}", f"weights={weights}", f"name={name}",
                        f"recordings=[{','.join(map(str, files))}]", "-o", tmp_path / f"enrol-{name}")  # fmt: skip
        assert result.exit_code == 0, result.output
    result = invoke("run", "audio-verify", f"gallery={db}", "name=lucas", f"recording={lucas[0]}", "threshold=0.01", "-o", tmp_path / "v")
    assert result.exit_code == 0 and json.loads((tmp_path / "v" / "summary.json").read_text())["match"] is True
    result = invoke("run", "audio-identify", f"gallery={db}", f"recordings=[{lucas[0]},{FSDD / '0_george_0.flac'}]", "threshold=0.01",
                    "-o", tmp_path / "i")  # fmt: skip
    assert result.exit_code == 0, result.output
    answers = json.loads((tmp_path / "i" / "summary.json").read_text())["results"]
    assert answers[0]["name"] == "lucas" and answers[0]["distance"] < 1e-6 and answers[1]["name"] is None
    one_line_error(invoke("run", "audio-identify", f"gallery={tmp_path / 'none.db'}", f"recordings=[{lucas[0]}]", "-o", tmp_path / "x"),
                   "gallery not found")  # fmt: skip


def test_the_plugin_is_loaded_through_its_entry_point():
    result = invoke("plugins", "--json")
    audio = next(item for item in json.loads(result.stdout) if item["name"] == "audio")
    assert audio["distribution"] == "convgen-audio"
    assert {"audio-train", "audio-evaluate", "audio-stylize", "audio-enrol"} <= set(audio["components"]["recipe"])
    assert {".wav", ".flac", ".ogg"} <= set(audio["components"]["reader"]) and "wide-conv" in audio["components"]["encoder"]
