"""Reading a component factory's signature: which keyword arguments it takes, a one-line
error for one it does not, and the one rule by which a recipe's context (``spatial_dims``,
``in_channels`` read off the data, ``embedding_dim``) fills a component's arguments.

A leaf module (it imports only `convgen.errors`), so that the registry, the config
resolver and `convgen.weights` share these rules without importing each other.
"""

from __future__ import annotations

import difflib
import inspect
import json
from typing import Callable

from convgen.errors import ConfigError


def accepted_kwargs(factory: Callable) -> set[str] | None:
    """Keyword arguments a component factory takes (None: it takes ``**kwargs``)."""
    try:
        params = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):
        return None
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return None
    return {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}


def suggest(name: str, known) -> str:
    """``"; did you mean 'x'?"`` for the closest of ``known``, or nothing."""
    close = difflib.get_close_matches(name, sorted(known), n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


def check_component_kwargs(kind: str, name: str, factory: Callable, kwargs: dict, where: str | None = None) -> None:
    """Raise a ConfigError naming the first argument ``factory`` does not take."""
    accepted = accepted_kwargs(factory)
    if accepted is None:
        return
    for key in kwargs:
        if key not in accepted:
            path = f"{where}.{key}" if where else key
            raise ConfigError(
                f"unknown key {path!r} for {kind} {name!r}{suggest(key, accepted)} "
                f"({kind} {name!r} takes: {', '.join(sorted(accepted)) or 'nothing'})"
            )


def fill_context(factory: Callable, block: dict, context: dict) -> dict:
    """``block`` with each ``context`` value filled in where ``factory`` names that
    argument and the block leaves it unset (absent or null). A factory that takes
    ``**kwargs`` gets a context value only for an argument it names: context is a hint
    about the data, not an option every component must accept."""
    try:
        named = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return dict(block)
    filled = dict(block)
    for key, value in context.items():
        param = named.get(key)
        if param is not None and param.kind in (param.POSITIONAL_OR_KEYWORD, param.KEYWORD_ONLY) and filled.get(key) is None:
            filled[key] = value
    return filled


def jsonable(value):
    """``value`` as it reads back from JSON (tuples become lists): the form specs are stored and compared in."""
    return json.loads(json.dumps(value, default=list))


def full_spec(kind: str, name: str, factory: Callable, kwargs: dict) -> dict:
    """``name`` plus every argument ``factory`` takes for ``kwargs``, defaults filled in, as JSON
    values: the form in which a component's spec is recorded (weights, pipelines)."""
    try:
        bound = inspect.signature(factory).bind(**kwargs)
    except TypeError as exc:
        raise ConfigError(f"{kind} {name!r}: {exc}") from None
    bound.apply_defaults()
    return {"name": name, **jsonable(dict(bound.arguments))}
