import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import settings

from convgen import plugins
from convgen.testing import invoke  # noqa: F401  (the tests import it from here)

ROOT = Path(__file__).resolve().parent.parent
TEST_PLUGINS = Path(__file__).resolve().parent / "plugins"

# CI replays the same examples on every run, so a red build can be reproduced; run with
# HYPOTHESIS_PROFILE=explore (or --hypothesis-seed=N) to search new examples while developing.
settings.register_profile("ci", derandomize=True, print_blob=True)
settings.register_profile("explore", print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture(autouse=True)
def fresh_registries():
    """Each test sees freshly loaded plugins and registries."""
    plugins.reset()
    yield
    plugins.reset()


def install_plugin(name: str, target: Path) -> None:
    """pip-install a test plugin package into ``target`` (loaded through its entry point)."""
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
         "--no-index", "--target", str(target), str(TEST_PLUGINS / name)],
        check=True, capture_output=True, text=True,
    )  # fmt: skip


def run_convgen(*args: str, pythonpath=(), env=None, cwd=None) -> subprocess.CompletedProcess:
    """Run the installed console script in a fresh process."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("CONVGEN_")}
    if pythonpath:
        environ["PYTHONPATH"] = os.pathsep.join(str(p) for p in pythonpath)
    environ.update(env or {})
    exe = Path(sys.executable).parent / "convgen"
    return subprocess.run([str(exe), *map(str, args)], capture_output=True, text=True, env=environ, cwd=cwd, timeout=300)


def assert_one_line_error(result, exit_code=None, contains=()):
    """A user error: non-zero exit, one line on stderr starting with 'error:', no traceback."""
    stderr = result.stderr if hasattr(result, "stderr") else ""
    assert result.exit_code != 0 if hasattr(result, "exit_code") else result.returncode != 0
    code = result.exit_code if hasattr(result, "exit_code") else result.returncode
    if exit_code is not None:
        assert code == exit_code, (code, stderr)
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert lines[0].startswith("error: "), stderr
    assert "Traceback" not in stderr and "Traceback" not in result.stdout
    for text in contains:
        assert text in lines[0], lines[0]
    return lines[0]
