"""Built-in file types: NumPy ``.npy`` arrays, channel-first ``(C, *spatial)``; the ``array`` pipeline (one file, one input)."""

import convgen
from convgen.errors import DataError


def read_npy(path):
    import numpy as np

    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise DataError(f"{path} is not a readable .npy array ({str(exc).splitlines()[0]}); write it with numpy.save") from None


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
