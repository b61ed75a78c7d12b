"""Encoder weights as safetensors files that say which encoder they belong to.

The header's metadata records the encoder's registry name, its full config (every
keyword argument, defaults filled in) and a fingerprint: a SHA-256 over that config and
every tensor. Galleries and embeddings store the fingerprint, so a mismatched model is
caught before it silently produces meaningless distances. The metadata also records the
input pipeline (`convgen.pipelines`): how one file becomes the encoder's input, so that
every command reads files the way the encoder was trained (`load_model`).

Every safetensors file a user hands over (weights, checkpoints, gallery exports) is
checked by `check_safetensors` before the library reads it: the header must fit in the
file, be JSON, name known dtypes, and give each tensor exactly ``prod(shape) × itemsize``
bytes inside the file, so a forged or truncated header is refused before any allocation.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from convgen.errors import ConfigError, DataError, ModelMismatchError, PathError
from convgen.io import atomic_path, loads_json
from convgen.signatures import jsonable

FORMAT = "convgen.encoder/1"

# Bytes per element of every safetensors dtype; anything else is refused.
DTYPE_BYTES = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
               "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8}  # fmt: skip
MAX_HEADER_BYTES = 100_000_000  # the safetensors format's own limit


def check_safetensors(path, what: str = "safetensors file") -> dict:
    """The parsed header of a safetensors file, after checking it against the file's size.

    Reads only the 8-byte length and the header (bounded by the file size), so a header
    that lies (sizes that do not add up, huge shapes, unknown dtypes, offsets past the
    end) is a one-line `DataError` before any tensor is allocated.
    """
    path = Path(path)

    def refuse(reason: str):
        raise DataError(f"{path} is not a readable {what} ({reason}); re-export or re-download it")

    if not path.is_file():
        raise PathError(f"{what} not found: {path}; check the path" if not path.exists() else f"{path} is not a file; give a .safetensors {what}")
    size = path.stat().st_size
    with open(path, "rb") as handle:
        head = handle.read(8)
        if len(head) < 8:
            refuse(f"{size} bytes, too short for a safetensors header")
        length = int.from_bytes(head, "little")
        if length > min(MAX_HEADER_BYTES, size - 8):
            refuse(f"the header claims {length} bytes but the file holds {size - 8} after the length field")
        raw = handle.read(length)
    try:
        header = loads_json(raw.decode("utf-8"), "header")
    except UnicodeDecodeError:
        refuse("the header is not UTF-8 JSON")
    except DataError as exc:
        refuse(str(exc).partition(";")[0])
    if not isinstance(header, dict):
        refuse("the header is not a JSON object")
    data_bytes = size - 8 - length
    spans = []
    for name, entry in header.items():
        if name == "__metadata__":
            if entry is not None and not (isinstance(entry, dict) and all(isinstance(v, str) for v in entry.values())):
                refuse("its __metadata__ is not a mapping of strings")
            continue
        if not isinstance(entry, dict):
            refuse(f"tensor {name!r} has no dtype, shape and offsets")
        dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
        if dtype not in DTYPE_BYTES:
            refuse(f"tensor {name!r} has unknown dtype {dtype!r}")
        if not isinstance(shape, list) or not all(type(d) is int and d >= 0 for d in shape):
            refuse(f"tensor {name!r} has an invalid shape {shape!r}")
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(type(o) is int and o >= 0 for o in offsets)
                and offsets[0] <= offsets[1]):  # fmt: skip
            refuse(f"tensor {name!r} has invalid data offsets {offsets!r}")
        if offsets[1] > data_bytes:
            refuse(f"tensor {name!r} ends at byte {offsets[1]} but the file holds {data_bytes} bytes of data")
        needed = math.prod(shape) * DTYPE_BYTES[dtype]
        if offsets[1] - offsets[0] != needed:
            refuse(f"tensor {name!r} of shape {shape} {dtype} needs {needed} bytes but the header gives it {offsets[1] - offsets[0]}")
        spans.append(offsets)
    spans.sort()
    if any(later[0] < earlier[1] for earlier, later in itertools.pairwise(spans)):
        refuse("two tensors overlap")
    return header


def encoder_spec(spec: dict, **context) -> dict:
    """The full spec of an encoder block: ``name`` plus every argument, defaults filled in.

    ``context`` (e.g. ``spatial_dims``, ``in_channels`` inferred from the data) fills
    arguments the block leaves unset.
    """
    from convgen.config import check_component_types, check_values
    from convgen.registry import get
    from convgen.signatures import check_component_kwargs, fill_context, full_spec

    if not isinstance(spec, dict) or not isinstance(spec.get("name"), str) or not all(isinstance(k, str) for k in spec):
        raise ConfigError(f"an encoder spec is a mapping with a 'name' (like {{'name': 'resnet', ...}}), got {str(spec)[:80]!r}")
    spec = dict(spec)
    name = spec.pop("name", None)
    factory = get("encoder", name)
    check_component_kwargs("encoder", name, factory, spec, where="encoder")
    check_component_types("encoder", factory, spec, "encoder")
    check_values("encoder", spec)
    spec = fill_context(factory, spec, context)  # the registry's rule (registry.build)
    return full_spec("encoder", name, factory, spec)


def build_encoder(spec: dict, **context) -> torch.nn.Module:
    """Build an encoder from a recipe block (``{"name": "resnet", ...}``)."""
    from convgen.registry import get

    full = encoder_spec(spec, **context)
    kwargs = {k: v for k, v in full.items() if k != "name"}
    factory = get("encoder", full["name"])
    skeleton = _skeleton(factory, kwargs)
    if skeleton is not None:
        _check_memory(full, skeleton)
    try:
        return factory(**kwargs)
    except (ValueError, TypeError, NotImplementedError, AssertionError, IndexError, KeyError) as exc:
        # e.g. MONAI: "Unsupported option 'BANANA'" (norm, act), "Same padding not available for kernel_size=[64]"
        raise ConfigError(f"encoder {_describe(full)} cannot be built with these arguments ({str(exc).splitlines()[0][:200]}); "
                          "check the encoder's settings") from None  # fmt: skip


def ships_weights(spec: dict, network: torch.nn.Module | None = None) -> bool:
    """Whether the encoder of ``spec`` brings its own weights (dlib's, read from its model
    file) rather than starting random: built again under another seed, every tensor is the
    same. ``network``: one already built from ``spec`` to compare with (else one is built).
    The caller's random state is left as it was."""
    with torch.random.fork_rng():
        if network is None:
            network = build_encoder(spec)
        torch.manual_seed(torch.initial_seed() + 1)
        other = build_encoder(spec).state_dict()
    return all(torch.equal(value, other[key]) for key, value in network.state_dict().items())


def _skeleton(factory, kwargs) -> torch.nn.Module | None:
    """The encoder built on the meta device: its parameters' shapes and dtypes, no memory.
    None when a factory cannot build there (it reads a file, say); user errors still raise."""
    from convgen.errors import ConvgenError

    import warnings

    try:
        with torch.device("meta"), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # an encoder loading its shipped weights into meta tensors warns of a no-op
            return factory(**kwargs)
    except ConvgenError:
        raise
    except Exception:  # noqa: BLE001 - the real build below raises it again, or works
        return None


def _physical_memory() -> int:
    import os

    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 1 << 40


def _check_memory(spec: dict, skeleton: torch.nn.Module) -> None:
    """Refuse an encoder whose weights, gradients and two optimiser states would not fit in memory."""
    nbytes = sum(t.numel() * t.element_size() for t in skeleton.state_dict().values())
    if 4 * nbytes > _physical_memory():
        raise ConfigError(
            f"encoder {_describe(spec)} has {nbytes / 2**30:.3g} GiB of weights, more than this machine can train "
            f"({_physical_memory() / 2**30:.3g} GiB of memory); choose fewer or narrower layers"
        )


def fingerprint(spec: dict, state: dict[str, torch.Tensor]) -> str:
    """SHA-256 over the encoder spec and every tensor (name, dtype, shape, bytes)."""
    digest = hashlib.sha256(json.dumps(spec, sort_keys=True).encode())
    for key in sorted(state):
        tensor = state[key].detach().cpu().contiguous()
        digest.update(f"{key}|{tensor.dtype}|{tuple(tensor.shape)}".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def save_encoder(path, encoder: torch.nn.Module, spec: dict, pipeline: dict | None = None) -> str:
    """Write ``encoder``'s weights with its spec and input pipeline; returns the fingerprint. Atomic.

    ``pipeline`` (``{"name": ..., **options}``, see `convgen.pipelines`) is how one file
    becomes the encoder's input; it is checked, completed with its defaults and stored
    as JSON in the header's ``pipeline`` entry. The fingerprint stays over the spec and
    the tensors only: it names the network, so galleries built before a pipeline was
    recorded still accept the same weights (a gallery records its own pipeline).
    """
    state = {k: v.detach().cpu().contiguous() for k, v in encoder.state_dict().items()}
    fp = fingerprint(spec, state)
    metadata = {"format": FORMAT, "encoder": spec["name"], "spec": json.dumps(spec, sort_keys=True), "fingerprint": fp}
    if pipeline is not None:
        from convgen.pipelines import pipeline_spec

        metadata["pipeline"] = json.dumps(pipeline_spec(pipeline), sort_keys=True)
    with atomic_path(Path(path)) as tmp:
        save_file(state, str(tmp), metadata=metadata)
    return fp


def read_weights(path) -> tuple[dict[str, torch.Tensor], dict | None]:
    """Tensors and the convgen spec (None for a plain safetensors file) of a weights file."""
    path = Path(path)
    if not path.is_file():
        raise PathError(f"weights file not found: {path}; check the path" if not path.exists() else f"{path} is not a file; give a .safetensors weights file")
    check_safetensors(path, "safetensors weights file")
    try:
        state = load_file(str(path))
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
    except (SafetensorError, OSError, ValueError) as exc:
        raise DataError(f"{path} is not a readable safetensors weights file ({str(exc).splitlines()[0]})") from None
    bad = [name for name, tensor in state.items() if tensor.is_floating_point() and not torch.isfinite(tensor).all()]
    if bad:  # a diverged run or a damaged file: every embedding would be NaN
        more = f" and {len(bad) - 1} more" if len(bad) > 1 else ""
        raise DataError(f"{path} holds NaN or infinite weights (in {bad[0]}{more}); use a checkpoint from before training diverged")
    spec = None
    if metadata.get("format") == FORMAT:
        if not isinstance(metadata.get("spec"), str):
            raise DataError(f"{path} has a damaged convgen header (no encoder spec); re-save the weights")
        spec = loads_json(metadata["spec"], f"{path}: the encoder spec in the header")
        if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
            raise DataError(f"{path} has a damaged convgen header (the encoder spec is {type(spec).__name__}, not a mapping with a name); re-save the weights")
    return state, spec


def _describe(spec: dict) -> str:
    args = ", ".join(f"{k}={v}" for k, v in spec.items() if k != "name")
    return f"{spec['name']}({args})"


def load_encoder(path, expected: dict | None = None) -> tuple[torch.nn.Module, dict, str]:
    """Build the encoder a weights file describes and load it: ``(encoder, spec, fingerprint)``.

    ``expected`` holds what the recipe asks for (``name`` and any arguments, possibly a
    partial spec); a file whose spec disagrees on any of those keys was made for another
    architecture, and is a `ModelMismatchError` that names both.
    """
    state, spec = read_weights(path)
    if spec is None:
        if expected is None:
            raise ModelMismatchError(f"{path} has no convgen encoder header; name the encoder in the recipe (encoder.name=...)")
        spec = encoder_spec(expected)
    elif expected is not None:
        wanted = jsonable(expected)
        differ = [f"{k}: {spec.get(k)!r} in the file, {v!r} in the recipe" for k, v in wanted.items() if spec.get(k) != v]
        if differ:
            raise ModelMismatchError(
                f"{path} holds weights for {_describe(spec)} but the recipe builds {_describe(wanted)} "
                f"({'; '.join(differ)}); set the recipe's encoder to match, or encoder=null to use the file's"
            )
    # The spec is untrusted: check it, and build on the meta device first, so that it is
    # checked against the stored tensors' shapes and dtypes before any memory is allocated.
    from convgen.registry import get

    try:
        full = encoder_spec(spec)
    except ConfigError as exc:
        raise DataError(f"{path} has an encoder spec that cannot be built ({exc}); re-save the weights") from None
    kwargs = {k: v for k, v in full.items() if k != "name"}
    skeleton = _skeleton(get("encoder", full["name"]), kwargs)
    if skeleton is not None:
        _refuse_mismatch(path, spec, skeleton.state_dict(), state)
    encoder = build_encoder(spec)
    _refuse_mismatch(path, spec, encoder.state_dict(), state)
    encoder.load_state_dict(state)
    return encoder, spec, fingerprint(spec, state)


def read_pipeline(path) -> dict | None:
    """The input pipeline a weights file records (``{"name": ..., **options}``), or None.

    Reads only the header. None for weights saved before pipelines were recorded and for
    plain safetensors files; a damaged entry is a one-line `DataError`.
    """
    header = check_safetensors(path, "safetensors weights file")
    metadata = header.get("__metadata__") or {}
    if metadata.get("format") != FORMAT or "pipeline" not in metadata:
        return None
    try:
        pipeline = loads_json(metadata["pipeline"], "pipeline")
    except DataError:
        pipeline = None
    if not isinstance(pipeline, dict) or not isinstance(pipeline.get("name"), str):
        raise DataError(f"{path} has a damaged input pipeline in its header; re-save the weights")
    return pipeline


@dataclass
class Model:
    """A loaded weights file: the encoder, its spec and fingerprint, and its input pipeline (None: not recorded)."""

    encoder: torch.nn.Module
    spec: dict
    fingerprint: str
    pipeline: dict | None
    path: str | None = None


def weights_path(config: dict) -> str | None:
    """The absolute path of a recipe's ``weights`` file, or None when it builds its encoder."""
    return str(Path(config["weights"]).resolve()) if config.get("weights") else None


def load_model(path, expected: dict | None = None) -> Model:
    """`load_encoder` plus the recorded input pipeline, as one `Model`."""
    encoder, spec, fp = load_encoder(path, expected)
    return Model(encoder, spec, fp, read_pipeline(path), str(Path(path).resolve()))


def _refuse_mismatch(path, spec: dict, expected: dict, got: dict) -> None:
    missing, unexpected = _compare(expected, got)
    problems = missing + unexpected
    if problems:
        more = f" (and {len(problems) - 2} more)" if len(problems) > 2 else ""
        raise ModelMismatchError(f"{path} does not fit encoder {_describe(spec)}: {'; '.join(problems[:2])}{more}")


def _compare(expected: dict, got: dict) -> tuple[list[str], list[str]]:
    missing = [f"missing {k}" for k in expected if k not in got]
    wrong = [
        f"{k} has shape {tuple(got[k].shape)}, expected {tuple(expected[k].shape)}"
        for k in expected
        if k in got and got[k].shape != expected[k].shape
    ]
    wrong += [
        f"{k} is {str(got[k].dtype).removeprefix('torch.')}, expected {str(expected[k].dtype).removeprefix('torch.')}"
        for k in expected
        if k in got and got[k].shape == expected[k].shape and got[k].dtype != expected[k].dtype
    ]
    unexpected = [f"unexpected {k}" for k in got if k not in expected]
    return missing + wrong, unexpected
