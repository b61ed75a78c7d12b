"""convgen: one ConvNet toolkit for 1D signals, 2D images and 3D volumes.

The core registers dimension-agnostic components; everything domain-specific comes from
plugins (see `convgen.hookspecs`).
"""

import pluggy


def __getattr__(name: str):
    """``convgen.__version__``, read from the installed metadata when first asked for
    (importlib.metadata costs start-up time that most commands do not need)."""
    if name != "__version__":
        raise AttributeError(f"module 'convgen' has no attribute {name!r}")
    from importlib.metadata import PackageNotFoundError, version

    global __version__
    try:
        __version__ = version("convgen")
    except PackageNotFoundError:  # running from a source tree that was never installed
        __version__ = "0.0.0+unknown"
    return __version__


#: Decorate a plugin's hook functions with this marker (``@convgen.hookimpl``).
hookimpl = pluggy.HookimplMarker("convgen")

__all__ = ["__version__", "hookimpl"]
