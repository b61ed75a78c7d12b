"""The CT plugin's registrations, loaded through the ``convgen`` entry point like any plugin."""

import convgen


@convgen.hookimpl
def register_readers(register):
    from convgen_ct.volumes import read_nifti

    register([".nii", ".nii.gz"], read_nifti)


@convgen.hookimpl
def register_writers(register):
    from convgen_ct.volumes import write_nifti

    register([".nii", ".nii.gz"], write_nifti)


@convgen.hookimpl
def register_datasets(register):
    from convgen_ct.datasets import CtVolumes, MedMNIST3D

    register("medmnist3d", MedMNIST3D)
    register("ct-volumes", CtVolumes)


@convgen.hookimpl
def register_recipes(register):
    from convgen_ct import recipes

    recipes.register(register)


@convgen.hookimpl
def register_pipelines(register):
    from convgen_ct.pipelines import ct

    register("ct", ct)
