"""User-facing errors.

Anything a user can cause (a bad recipe, a wrong file, a mismatched model) raises a
`ConvgenError`. The CLI prints its message as one line and exits with the class's
``exit_code``; anything else is a bug and keeps its traceback.
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
