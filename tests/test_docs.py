"""Docs that cannot rot: every hook is documented with an example and exercised by a test."""

import inspect
from pathlib import Path

import pytest

from convgen import hookspecs

HOOKS = [name for name, fn in inspect.getmembers(hookspecs, inspect.isfunction) if hasattr(fn, "convgen_spec")]
TESTS = Path(__file__).parent
TEST_SOURCES = "\n".join(p.read_text() for p in TESTS.rglob("*.py"))


def test_hooks_exist():
    assert len(HOOKS) >= 8


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_is_documented_with_an_example(hook):
    doc = inspect.getdoc(getattr(hookspecs, hook)) or ""
    assert len(doc.splitlines()[0]) > 20, f"{hook} needs a one-line summary"
    assert "Example:" in doc and "@convgen.hookimpl" in doc, f"{hook} needs an example"


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_is_implemented_by_the_test_plugin(hook):
    assert f"def {hook}(" in (TESTS / "plugins" / "convgen-hello" / "convgen_hello.py").read_text()
    assert hook in TEST_SOURCES
