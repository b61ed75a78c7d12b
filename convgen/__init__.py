"""convgen: one ConvNet toolkit for 1D signals, 2D images and 3D volumes.

The core registers dimension-agnostic components; everything domain-specific comes from
plugins (see `convgen.hookspecs`).
"""

from importlib.metadata import PackageNotFoundError, version

import pluggy

try:
    __version__ = version("convgen")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"

#: Decorate a plugin's hook functions with this marker (``@convgen.hookimpl``).
hookimpl = pluggy.HookimplMarker("convgen")

__all__ = ["__version__", "hookimpl"]
