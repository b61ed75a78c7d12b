"""The faces plugin's registrations, loaded through the ``convgen`` entry point like any plugin."""

import convgen

#: `convgen_faces.images.SUFFIXES`, the photo files the reader accepts (a test keeps the two equal).
IMAGE_SUFFIXES = [".jpg", ".jpeg", ".png", ".pgm", ".ppm", ".pnm", ".bmp", ".tif", ".tiff", ".gif"]

#: The recipes `convgen_faces.recipes.register` registers, by name and description: declared here so
#: that `convgen recipes list` and `convgen plugins` import none of the plugin's heavy modules.
RECIPES = {
    "faces-train": "Train a face encoder with the ArcFace loss over the training people (default: the bundled ORL sample).",
    "faces-train-dlib": "Fine-tune dlib's pretrained face encoder with the triplet loss (needs convgen-faces[dlib]).",
    "faces-train-pairs": "Train a Siamese face verifier with the pair-classifier head.",
    "faces-evaluate": "Face verification ROC/EER and one-shot identification on people unseen in training.",
    "faces-evaluate-dlib": "The same evaluation with dlib's pretrained face encoder (needs convgen-faces[dlib]).",
    "faces-enrol": "Enrol people into an SQLite gallery from face photos: name=PERSON photos=[...], or folder=PATH (a sub-folder per person).",
    "faces-verify": "1:1: is this photo the claimed person? (gallery of face photos)",
    "faces-identify": "Who is in each of these face photos (or folders of them), or 'unknown'?",
    "faces-calibrate": "Choose the gallery's threshold from face photos of people who are NOT enrolled (folder=PATH, a sub-folder each).",
    "faces-stylize": "Style transfer on photos (default: the bundled portrait styled with a brick texture), PNG out.",
    "faces-visualize": "The face patches that most excite each unit of a face encoder.",
    "faces-demo": "End to end: train, enrol one photo per person, calibrate, identify (bundled ORL sample).",
}


@convgen.hookimpl
def register_readers(register):
    register(IMAGE_SUFFIXES, "convgen_faces.images:read_image")  # references: imported when first used


@convgen.hookimpl
def register_writers(register):
    register(".png", "convgen_faces.images:write_png")


@convgen.hookimpl
def register_encoders(register):
    register("dlib-resnet", "convgen_faces.dlib_model:DlibResNet")
    register("dlib-early", "convgen_faces.dlib_model:DlibEarly")  # its first stages, for style transfer


@convgen.hookimpl
def register_datasets(register):
    register("faces", "convgen_faces.datasets:FaceFolder")
    register("lfw-pairs", "convgen_faces.datasets:LFWPairs")


@convgen.hookimpl
def register_recipes(register):
    register.lazy("convgen_faces.recipes:register", RECIPES)


@convgen.hookimpl
def register_pipelines(register):
    register("faces", "convgen_faces.pipelines:faces")
