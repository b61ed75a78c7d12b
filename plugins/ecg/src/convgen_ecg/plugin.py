"""The ECG plugin's registrations, loaded through the ``convgen`` entry point like any plugin."""

import convgen

#: The recipes `convgen_ecg.recipes.register` registers, by name and description: declared here so
#: that `convgen recipes list` and `convgen plugins` import none of the plugin's heavy modules.
RECIPES = {
    "ecg-train": "Train a heartbeat encoder with the triplet loss (default: the bundled ECG-ID sample).",
    "ecg-evaluate": "Enrol each person from ONE record, identify them from their others, reject strangers.",
    "ecg-enrol": "Enrol people into an SQLite gallery from ECG records: name=PERSON records=[...], or folder=PATH (a sub-folder per person).",
    "ecg-verify": "1:1: is this record the claimed person? (gallery of ECG records)",
    "ecg-identify": "Who is in each of these ECG records (or folders of them), or 'unknown'?",
    "ecg-calibrate": "Choose the gallery's threshold from ECG records of people who are NOT enrolled (folder=PATH, a sub-folder each).",
    "ecg-peaks": "Plot a record's cleaned trace with its detected R peaks.",
    "ecg-stylize": "1D Gram style transfer between two ECG traces (CSV out, with plots).",
    "ecg-visualize": "The heartbeat segments that most excite each unit of an ECG encoder.",
}


@convgen.hookimpl
def register_readers(register):
    register(".hea", "convgen_ecg.signals:read_sample")  # references: imported when first used


@convgen.hookimpl
def register_datasets(register):
    register("ecg", "convgen_ecg.datasets:EcgRecords")


@convgen.hookimpl
def register_recipes(register):
    register.lazy("convgen_ecg.recipes:register", RECIPES)


@convgen.hookimpl
def register_pipelines(register):
    register("ecg", "convgen_ecg.pipelines:ecg")


@convgen.hookimpl
def register_encoders(register):
    register("ecg-resnet-ecgid", "convgen_ecg.pretrained:shipped_encoder")  # the shipped heartbeat encoder, weights included
