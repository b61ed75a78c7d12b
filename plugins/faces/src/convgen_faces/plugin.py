"""The faces plugin's registrations, loaded through the ``convgen`` entry point like any plugin."""

import convgen


@convgen.hookimpl
def register_readers(register):
    from convgen_faces.images import SUFFIXES, read_image

    register(SUFFIXES, read_image)


@convgen.hookimpl
def register_writers(register):
    from convgen_faces.images import write_png

    register(".png", write_png)


@convgen.hookimpl
def register_encoders(register):
    from convgen_faces.dlib_model import DlibResNet

    register("dlib-resnet", DlibResNet)


@convgen.hookimpl
def register_datasets(register):
    from convgen_faces.datasets import FaceFolder, LFWPairs

    register("faces", FaceFolder)
    register("lfw-pairs", LFWPairs)


@convgen.hookimpl
def register_recipes(register):
    from convgen_faces import recipes

    recipes.register(register)


@convgen.hookimpl
def register_pipelines(register):
    from convgen_faces.pipelines import faces

    register("faces", faces)
