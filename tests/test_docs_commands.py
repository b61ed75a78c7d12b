"""Docs that cannot rot: every command shown in the README and the docs still parses.

Each ``convgen run RECIPE key=value ...`` line of a ``bash`` block is resolved with
``--print-config`` (the recipe exists, every key is known, every value has the right
shape) without running; every other ``convgen ...`` line must name a real command
(``--help`` succeeds). In a ``console`` block, a command followed by an ``error: ...``
line must fail with exactly that message. Lines that run a config file or an output
folder are skipped, as are placeholders in angle brackets.
"""

import re
import shlex
from pathlib import Path

import pytest

from conftest import install_plugin, invoke, run_convgen

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), *sorted(ROOT.glob("plugins/*/README.md"))]
BLOCK = re.compile(r"```(?:bash|sh|console)\n(.*?)```", re.S)


def commands() -> list:
    found = []
    for page in PAGES:
        for block in BLOCK.findall(page.read_text(encoding="utf-8")):
            lines = block.replace("\\\n", " ").splitlines()
            for number, line in enumerate(lines):
                line = line.strip().removeprefix("$ ")
                if not line.startswith("convgen ") or "<" in line:
                    continue
                after = lines[number + 1].strip() if number + 1 < len(lines) else ""
                error = after if after.startswith("error: ") else None
                found.append(pytest.param(line.split(" #")[0].strip(), error, id=f"{page.name}: {line[:60]}"))
    return found


COMMANDS = commands()
# Pages whose commands use a plugin that is not installed by default: the test plugin the
# page documents, installed into a temporary folder for them.
NEEDS = {"writing-plugins.md": "convgen-hello"}


@pytest.fixture(scope="session")
def extra_plugins(tmp_path_factory) -> dict:
    folders = {}
    for name in set(NEEDS.values()):
        folders[name] = tmp_path_factory.mktemp(name)
        install_plugin(name, folders[name])
    return folders


def test_the_docs_show_commands():
    assert len(COMMANDS) > 40


@pytest.mark.parametrize("line, error", COMMANDS)
def test_every_documented_command_parses(line, error, request, monkeypatch, extra_plugins):
    page = request.node.callspec.id.split(":")[0]
    extra = extra_plugins[NEEDS[page]] if page in NEEDS else None
    if extra:
        monkeypatch.syspath_prepend(str(extra))
    args = shlex.split(line)[1:]
    if args[0] == "run":
        target = args[1]
        if target.endswith((".yaml", ".yml")) or "/" in target:
            pytest.skip("runs a config file or an output folder")
        kept, skip = [], False
        for arg in args:
            if skip:
                skip = False
                continue
            if arg in ("-o", "--out"):
                skip = True
                continue
            if arg in ("--resume", "--print-config"):
                continue
            kept.append(arg)
        result = invoke(*kept, "--print-config")
    else:
        words = [a for a in args if not a.startswith("-") and "=" not in a]
        words = words[:2] if words[:1] in (["gallery"], ["recipes"], ["plugins"]) else words[:1]
        if extra:  # plugin commands join the CLI when it starts: ask a fresh process
            done = run_convgen(*words, "--help", pythonpath=[extra])
            assert done.returncode == 0, f"{line}\n{done.stderr}"
            return
        result = invoke(*words, "--help")
    if error and result.exit_code == 0:
        pytest.skip("the documented error comes from the data, not from the command line")
    if error:
        assert result.exit_code != 0 and result.stderr.strip() == error, f"{line}\ndocumented: {error}\nactual:     {result.stderr}"
    else:
        assert result.exit_code == 0, f"{line}\n{result.stderr or result.output}"
