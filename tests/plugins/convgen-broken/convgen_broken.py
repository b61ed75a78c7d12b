"""A plugin whose import fails, as one whose dependency is missing would."""

import convgen_dependency_that_is_not_installed  # noqa: F401
