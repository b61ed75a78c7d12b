"""The audio plugin's registrations, loaded through the ``convgen`` entry point like any plugin."""

import convgen

#: `convgen_audio.audio.SUFFIXES`, the recordings the reader accepts (a test keeps the two equal).
AUDIO_SUFFIXES = [".wav", ".flac", ".ogg"]

#: The recipes `convgen_audio.recipes.register` registers, by name and description: declared here so
#: that `convgen recipes list` and `convgen plugins` import none of the plugin's heavy modules.
RECIPES = {
    "audio-train": "Train a speaker encoder (1D ResNet over log-mel frames) with the triplet loss (bundled FSDD sample).",
    "audio-evaluate": "Speaker verification EER and one-shot identification on utterances unseen in training (FSDD takes 0-4).",
    "audio-enrol": "Enrol people into an SQLite gallery from recordings: name=PERSON recordings=[...], or folder=PATH (a sub-folder per person).",
    "audio-verify": "1:1: is this recording the claimed person? (gallery of recordings)",
    "audio-identify": "Who is in each of these recordings (or folders of them), or 'unknown'?",
    "audio-calibrate": "Choose the gallery's threshold from recordings of people who are NOT enrolled (folder=PATH, a sub-folder each).",
    "audio-train-features": "Train a speaker encoder (x-vector TDNN) on precomputed features, .npy (frames, coefficients) per utterance (bundled AN4 sample).",
    "audio-evaluate-features": "Speaker verification EER and one-shot identification on precomputed features (whole utterances).",
    "audio-stylize": "Sound texture synthesis (no content) or audio style transfer: Gram costs on the log-magnitude STFT, WAV out.",
}


@convgen.hookimpl
def register_readers(register):
    register(AUDIO_SUFFIXES, "convgen_audio.audio:read_waveform")  # references: imported when first used


@convgen.hookimpl
def register_writers(register):
    register(".wav", "convgen_audio.audio:write_waveform")


@convgen.hookimpl
def register_encoders(register):
    register("tdnn", "convgen_audio.encoders:TDNN")
    register("wide-conv", "convgen_audio.encoders:WideConv")


@convgen.hookimpl
def register_datasets(register):
    register("speakers", "convgen_audio.datasets:SpeakerRecordings")


@convgen.hookimpl
def register_recipes(register):
    register.lazy("convgen_audio.recipes:register", RECIPES)


@convgen.hookimpl
def register_pipelines(register):
    register("audio", "convgen_audio.pipelines:audio")
    register("audio-features", "convgen_audio.pipelines:audio_features")


@convgen.hookimpl
def register_baselines(register):
    register("feature-statistics", "convgen_audio.baselines:feature_statistics")
