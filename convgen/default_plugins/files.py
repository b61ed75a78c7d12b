"""Built-in file types: NumPy ``.npy`` arrays, channel-first ``(C, *spatial)``; the ``array`` pipeline (one file, one input)."""

import convgen
from convgen.errors import DataError


def read_npy(path):
    from convgen.io import load_npy

    return load_npy(path)  # the header is checked first: no allocation bomb, no silent cast of strings or complex


def write_npy(path, sample):
    import numpy as np

    from convgen.io import atomic_path

    with atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:
            np.save(handle, sample.detach().cpu().numpy(), allow_pickle=False)


@convgen.hookimpl
def register_readers(register):
    register(".npy", read_npy)


@convgen.hookimpl
def register_writers(register):
    register(".npy", write_npy)


@convgen.hookimpl
def register_pipelines(register):
    from convgen.pipelines import ArrayPipeline

    register("array", ArrayPipeline)
