"""The ECG plugin's registrations, loaded through the ``convgen`` entry point like any plugin."""

import convgen


@convgen.hookimpl
def register_readers(register):
    from convgen_ecg.signals import read_sample

    register(".hea", read_sample)


@convgen.hookimpl
def register_datasets(register):
    from convgen_ecg.datasets import EcgRecords

    register("ecg", EcgRecords)


@convgen.hookimpl
def register_recipes(register):
    from convgen_ecg import recipes

    recipes.register(register)


@convgen.hookimpl
def register_pipelines(register):
    from convgen_ecg.pipelines import ecg

    register("ecg", ecg)
