"""User-facing errors.

Anything a user can cause (a bad recipe, a wrong file, a mismatched model) raises a
`ConvgenError`. The CLI prints its message as one line and exits with the class's
``exit_code``; anything else is a bug and keeps its traceback.

Exit codes: 1 any other user error, 2 a command-line usage error (click's), 3 ConfigError,
4 ModelMismatchError, 5 DataError, 6 PathError; ``convgen gallery verify`` exits 10 for
"no match". docs/reliability.md has the table.
"""


class ConvgenError(Exception):
    """A mistake the user can fix; the message says what is wrong and how to fix it."""

    exit_code = 1

    def __init__(self, message: str):
        # One line, always: the CLI promises a single-line error.
        super().__init__(" ".join(str(message).split()))


class ConfigError(ConvgenError):
    """A recipe, override or registry name that cannot be resolved."""

    exit_code = 3


class ModelMismatchError(ConvgenError):
    """Weights, galleries or embeddings that belong to another model."""

    exit_code = 4


class DataError(ConvgenError):
    """An input file or tensor that cannot be used (unreadable, wrong shape, NaN)."""

    exit_code = 5


class PathError(DataError):
    """A path that does not exist, or is a folder where a file is expected (or the reverse).

    Its own exit code, so a script can tell "wrong path" from "bad file"; a DataError
    subclass, so code that handles bad input handles it too.
    """

    exit_code = 6


# Why a file operation failed, in words a user acts on, by errno.
_OS_CAUSES = {
    "ENOSPC": "the disk is full; free some space",
    "EDQUOT": "the disk quota is exceeded; free some space",
    "EROFS": "the file system is read-only; choose a writable place",
    "EACCES": "permission denied; check the file's and its folder's permissions",
    "EPERM": "operation not permitted; check the file's and its folder's permissions",
    "ENOTDIR": "a part of the path is a file, not a folder",
    "EISDIR": "it is a folder, not a file",
    "ENOENT": "no such file or folder",
    "ENAMETOOLONG": "the name is too long",
    "EIO": "input/output error (a failing disk or a lost network mount)",
    "EMFILE": "too many open files",
}
# SQLite's messages for the same faults (sqlite3 reports no errno).
_SQLITE_CAUSES = {
    "database or disk is full": "the disk is full; free some space",
    "attempt to write a readonly database": "it is read-only (file, folder or mount); make it writable or copy it",
    "unable to open database file": "cannot open it (a read-only or missing folder, or no permission)",
    "disk i/o error": "input/output error (a failing disk, a full disk or a lost network mount)",
    "database is locked": "another process holds it locked; try again when it has finished",
    "file is not a database": "it is damaged (not an SQLite database); restore it from a backup",
    "database disk image is malformed": "it is damaged; restore it from a backup (`convgen gallery backup` makes one)",
}


# PyTorch's words for a sample smaller than what a layer's kernel or pooling needs.
_TOO_SMALL = ("Output size is too small", "Invalid computed output size", "Kernel size can't be greater than actual input size",
              "Padding size should be less than the corresponding input dimension")  # fmt: skip


def describe_os_error(exc: OSError) -> str:
    """The cause of a failed file operation: disk full, read-only, permission..."""
    import errno

    name = errno.errorcode.get(exc.errno or 0, "")
    return _OS_CAUSES.get(name) or exc.strerror or (str(exc).splitlines() or [type(exc).__name__])[0]


def describe_sqlite_error(exc: Exception) -> str | None:
    """The cause behind an sqlite3 error message, or None when it is not a known fault."""
    text = str(exc).lower()
    return next((cause for message, cause in _SQLITE_CAUSES.items() if message in text), None)


def from_environment(exc: BaseException) -> ConvgenError | None:
    """A user error for a fault of the machine rather than of convgen (file system, SQLite,
    memory), so that the CLI reports its cause in one line; None for anything else (a bug)."""
    if isinstance(exc, OSError) and exc.errno is not None:
        import errno

        if errno.errorcode.get(exc.errno) not in _OS_CAUSES:
            return None
        where = f"{exc.filename}: " if exc.filename else ""
        kind = PathError if errno.errorcode[exc.errno] in ("ENOENT", "ENOTDIR", "EISDIR") else DataError
        return kind(f"{where}{describe_os_error(exc)}")
    if type(exc).__module__ == "sqlite3" and describe_sqlite_error(exc):
        return DataError(f"a gallery database: {describe_sqlite_error(exc)}")
    if isinstance(exc, RuntimeError) and any(m in str(exc) for m in _TOO_SMALL):
        return ConfigError(f"the input is too small for this encoder ({str(exc).splitlines()[0][:160]}); "
                           "use a larger size, or fewer or smaller downsampling stages (strides, pooling)")  # fmt: skip
    if isinstance(exc, MemoryError) or (isinstance(exc, RuntimeError) and any(
            m in str(exc) for m in ("can't allocate memory", "out of memory", "Out of memory"))):  # fmt: skip
        return ConfigError("not enough memory for this run; choose smaller sizes (batch_size, dataset.size, encoder.channels)")
    return None
