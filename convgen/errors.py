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
