"""Reading and writing samples through the plugins' readers and writers, and atomic files.

Which function reads a file is decided by its suffix (the longest registered suffix
that matches, so ``.nii.gz`` beats ``.gz``). Every sample read is checked: a float tensor
``(C, *spatial)`` with finite values, or a one-line `DataError`.
"""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator

from convgen.errors import ConvgenError, DataError, PathError, describe_os_error

if TYPE_CHECKING:
    import torch


@contextlib.contextmanager
def atomic_path(path: Path, mode: int | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it over ``path`` only on success.

    An interrupted or failed write leaves the previous file (or none), never half a file.
    ``mode`` sets the file's permissions (e.g. ``0o600`` for files holding biometric
    data); by default the usual ``0666`` less the umask.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise os_error(exc, path) from None
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~_umask() if mode is None else mode)  # mkstemp makes 0600
        os.replace(tmp, path)
    except Exception as exc:  # a full disk, a read-only place: named for the file being written, not the temporary one
        code = exc.errno if isinstance(exc, OSError) else _os_error_code(exc)  # safetensors says "(os error 28)"
        if code in _FAULTS or (isinstance(exc, OSError) and _disk_full(path)):
            raise os_error(exc if isinstance(exc, OSError) else OSError(code, os.strerror(code)), path) from None
        raise
    finally:
        tmp.unlink(missing_ok=True)


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


MAX_JSON_DEPTH = 64  # nesting of any JSON a user hands over; convgen's own needs 3


def loads_json(text, what: str):
    """Parse JSON from an untrusted file: one-line `DataError` when it is not JSON or nested
    deeper than ``MAX_JSON_DEPTH`` (a header nested 200,000 deep would otherwise be a RecursionError)."""
    try:
        value = json.loads(text)
    except RecursionError:
        raise DataError(f"{what} is nested too deeply to be real; re-export the file") from None
    except (ValueError, TypeError) as exc:
        raise DataError(f"{what} is not valid JSON ({str(exc).splitlines()[0]}); re-export the file") from None
    stack = [(value, 0)]
    while stack:  # iterative: a deep value cannot blow the stack here either
        node, depth = stack.pop()
        if depth > MAX_JSON_DEPTH:
            raise DataError(f"{what} is nested more than {MAX_JSON_DEPTH} levels deep; re-export the file")
        children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else ()
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return value


def os_problem(exc: OSError) -> str:
    """The cause of a failed file operation in words a user acts on (disk full, read-only, permission)."""
    return describe_os_error(exc)


_FAULTS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EIO)


def _os_error_code(exc: Exception) -> int | None:
    import re

    found = re.search(r"os error (\d+)", str(exc))
    return int(found.group(1)) if found else None


def _disk_full(path) -> bool:
    """Is the disk under ``path`` (nearly) full? Some writers (numpy's) report a short write without an errno."""
    import shutil

    try:
        return shutil.disk_usage(Path(path).parent).free < 1 << 20
    except OSError:
        return False


def os_error(exc: OSError, path, action: str = "write") -> ConvgenError:
    """A `PathError` (missing, wrong kind) or `DataError` (anything else) that names the real cause."""
    kind = PathError if exc.errno in (errno.ENOENT, errno.ENOTDIR, errno.EISDIR) else DataError
    if exc.errno is None and _disk_full(path):
        return DataError(f"cannot {action} {path}: the disk is full; free some space")
    return kind(f"cannot {action} {path}: {os_problem(exc)}")


def load_npy(path, what: str = ".npy array"):
    """A ``.npy`` file as a native-endian numeric array, its header checked before anything is allocated.

    Refused with a one-line `DataError`: a header whose shape needs more bytes than the file
    holds (a 100-byte file claiming 10^12 elements), and values that are not real numbers
    (strings, records, dates, complex, objects), which a cast would silently turn into
    garbage. Big-endian numbers are read as what they are.
    """
    import numpy as np

    path = Path(path)

    def refuse(why: str):
        raise DataError(f"{path} is not a readable {what} ({why}); write it with numpy.save")

    try:
        size = path.stat().st_size
        with open(path, "rb") as handle:
            version = np.lib.format.read_magic(handle)
            read_header = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}.get(version)
            if read_header is None:
                refuse(f"unknown .npy format version {version}")
            shape, fortran, dtype = read_header(handle, max_header_size=10_000)
            offset = handle.tell()
    except OSError as exc:
        raise os_error(exc, path, "read") from None
    except Exception as exc:  # noqa: BLE001 - numpy parses the header with ast and tokenize: any of their errors
        refuse(f"a damaged header: {(str(exc).splitlines() or [type(exc).__name__])[0][:120]}")
    if dtype.hasobject or dtype.fields is not None or dtype.kind not in "biuf":
        refuse(f"it holds {dtype} values, not real numbers")
    needed = math.prod(shape) * dtype.itemsize
    if needed > size - offset:
        refuse(f"its header claims shape {shape} of {dtype}, {needed} bytes, but the file holds {size - offset}")
    try:
        array = np.load(path, allow_pickle=False)
    except (ValueError, EOFError) as exc:
        refuse(str(exc).splitlines()[0])
    except OSError as exc:
        raise os_error(exc, path, "read") from None
    return array.astype(array.dtype.newbyteorder("="), copy=False) if not array.dtype.isnative else array


def atomic_write_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def finite_json(value):
    """``value`` with every infinite or NaN float (nested in dicts, lists, tuples) made None:
    JSON has no infinities, so an unbounded threshold in a report is written as null."""
    if isinstance(value, dict):
        return {k: finite_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_json(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _lookup(kind: str, path: Path) -> Callable:
    from convgen.registry import get_registry

    registry = get_registry(kind)
    name = path.name.lower()
    matches = [suffix for suffix in registry if name.endswith(suffix)]
    if not matches:
        verb = "read" if kind == "reader" else "write"
        known = ", ".join(registry) or "none"
        raise DataError(
            f"no plugin can {verb} {path.name!r} (file type {path.suffix or 'unknown'!r}); "
            f"known file types: {known}. Install the plugin for this file type"
        )
    return registry.get(max(matches, key=len))


def check_sample(sample, source: str) -> torch.Tensor:
    """A reader's result as a float tensor ``(C, *spatial)``, or a DataError saying why not."""
    import torch  # here, not at the top: the gallery's commands read no samples

    if not isinstance(sample, torch.Tensor):
        sample = torch.as_tensor(sample)
    if sample.ndim < 2 or sample.ndim > 4:
        raise DataError(
            f"{source}: a sample must be channel-first (C, *spatial) with 1 to 3 spatial axes, got shape {tuple(sample.shape)}"
        )
    if sample.numel() == 0:
        raise DataError(f"{source}: the sample is empty (shape {tuple(sample.shape)})")
    if not sample.is_floating_point():
        sample = sample.float()
    if not torch.isfinite(sample).all():
        raise DataError(f"{source}: the sample holds NaN or infinite values; clean or re-export the file")
    return sample


def read(path) -> torch.Tensor:
    """Read one sample file through the reader registered for its suffix."""
    path = Path(path)
    if path.is_dir():
        raise PathError(f"{path} is a directory; expected a sample file")
    reader = _lookup("reader", path)
    if not path.exists():
        raise PathError(f"file not found: {path}; check the path (a relative one starts from the current folder)")
    return check_sample(reader(path), str(path))


def write(path, sample: torch.Tensor) -> Path:
    """Write one ``(C, *spatial)`` sample through the writer registered for the suffix."""
    path = Path(path)
    _lookup("writer", path)(path, check_sample(sample, str(path)))
    return path
