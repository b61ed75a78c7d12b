"""The CT plugin's registrations, loaded through the ``convgen`` entry point like any plugin."""

import convgen

#: The recipes `convgen_ct.recipes.register` registers, by name and description: declared here so
#: that `convgen recipes list` and `convgen plugins` import none of the plugin's heavy modules.
RECIPES = {
    "ct-train": "Train a 3D encoder with the triplet loss (default: the bundled AdrenalMNIST3D subset).",
    "ct-evaluate": "Evaluate a 3D encoder on a test split: verification, identification and k-NN accuracy / AUC.",
    "ct-enrol": "Enrol people into an SQLite gallery from volumes (NIfTI, DICOM series folders, NumPy): name=PERSON volumes=[...], or folder=PATH (a sub-folder per person).",
    "ct-verify": "1:1: is this volume the claimed person? (gallery of volumes (NIfTI, DICOM series folders, NumPy))",
    "ct-identify": "Who is in each of these volumes (NIfTI, DICOM series folders, NumPy) (or folders of them), or 'unknown'?",
    "ct-calibrate": "Choose the gallery's threshold from volumes (NIfTI, DICOM series folders, NumPy) of people who are NOT enrolled (folder=PATH, a sub-folder each).",
    "ct-stylize": "3D style transfer between two volumes within a memory budget (NIfTI out; patch-wise for whole volumes).",
    "ct-visualize": "The sub-volumes that most excite each unit of a 3D encoder, as orthogonal slices.",
}


@convgen.hookimpl
def register_readers(register):
    register([".nii", ".nii.gz"], "convgen_ct.volumes:read_nifti")  # references: imported when first used


@convgen.hookimpl
def register_writers(register):
    register([".nii", ".nii.gz"], "convgen_ct.volumes:write_nifti")


@convgen.hookimpl
def register_datasets(register):
    register("medmnist3d", "convgen_ct.datasets:MedMNIST3D")
    register("ct-volumes", "convgen_ct.datasets:CtVolumes")


@convgen.hookimpl
def register_recipes(register):
    register.lazy("convgen_ct.recipes:register", RECIPES)


@convgen.hookimpl
def evaluation_readouts(evaluation):
    """k-NN accuracy against a reference split, for evaluations with a ``knn`` block (``ct-evaluate``)."""
    if not (evaluation.config.get("knn") or {}).get("reference"):
        return None  # not ours: keep the heavy module unloaded
    from convgen_ct.recipes import knn_readout

    return knn_readout(evaluation)


@convgen.hookimpl
def register_pipelines(register):
    register("ct", "convgen_ct.pipelines:ct")
