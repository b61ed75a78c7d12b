"""The ``faces`` input pipeline: a photo becomes one face crop ``(1, C, H, W)``.

Its options are `convgen_faces.preprocess.FacePipeline`'s (size, channels, detect,
margin, align, if_no_face, ...): the same code makes the training samples of the
``faces`` dataset, so an encoder's recorded pipeline is exactly how it saw faces.
``DLIB`` is the pipeline of dlib's pretrained encoder: aligned 150 × 150 RGB chips.
"""

from __future__ import annotations

import inspect

from convgen_faces.preprocess import FacePipeline, not_counted

#: dlib's ``dlib-resnet`` encoder was trained on aligned 150 × 150 RGB chips.
DLIB = {"name": "faces", "size": [150, 150], "channels": 3, "detect": True, "margin": 0.2, "align": "dlib", "if_no_face": "whole"}


class FaceInputs:
    """A photo through a `FacePipeline`, as a batch of one crop; ``preview`` is the crop itself."""

    def __init__(self, pipeline: FacePipeline):
        self.pipeline = pipeline

    def __call__(self, path):
        return self.pipeline(path)[None]

    def preview(self, path):
        with not_counted():
            return self.pipeline(path)

    def input_summary(self) -> str | None:
        """How many photos had no face found and what was done with them (None before any photo)."""
        return self.pipeline.input_summary() if self.pipeline.tally.photos else None

    def input_report(self) -> dict | None:
        """The same as numbers, for a run's summary: photos, no face found, detector (None before any photo)."""
        return self.pipeline.input_report() if self.pipeline.tally.photos else None


def faces(**options) -> FaceInputs:
    return FaceInputs(FacePipeline.of(**options))


faces.__signature__ = inspect.signature(FacePipeline.of)  # the options are FacePipeline.of's, whatever they become
faces.__doc__ = "One face crop per photo; options: " + (FacePipeline.__doc__ or "").split("Args:")[-1].strip()
