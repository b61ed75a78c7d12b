"""The audio plugin's registrations, loaded through the ``convgen`` entry point like any plugin."""

import convgen


@convgen.hookimpl
def register_readers(register):
    from convgen_audio.audio import SUFFIXES, read_waveform

    register(SUFFIXES, read_waveform)


@convgen.hookimpl
def register_writers(register):
    from convgen_audio.audio import write_waveform

    register(".wav", write_waveform)


@convgen.hookimpl
def register_encoders(register):
    from convgen_audio.encoders import WideConv

    register("wide-conv", WideConv)


@convgen.hookimpl
def register_datasets(register):
    from convgen_audio.datasets import SpeakerRecordings

    register("speakers", SpeakerRecordings)


@convgen.hookimpl
def register_recipes(register):
    from convgen_audio import recipes

    recipes.register(register)


@convgen.hookimpl
def register_pipelines(register):
    from convgen_audio.pipelines import audio

    register("audio", audio)
