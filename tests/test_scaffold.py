"""``convgen plugins new NAME``: the scaffolded package installs, is found through its entry
point, and passes its own test as generated; bad names and existing folders are one-line errors."""

import os
import subprocess
import sys

import pytest

from conftest import ROOT, assert_one_line_error, invoke
from convgen import scaffold


def test_a_scaffolded_plugin_installs_and_passes_its_own_test(tmp_path):
    result = invoke("plugins", "new", "light-sheet", "--dir", tmp_path / "work")
    assert result.exit_code == 0, result.stderr
    package = tmp_path / "work" / "convgen-light-sheet"
    assert sorted(str(p.relative_to(package)) for p in package.rglob("*") if p.is_file()) == [
        "README.md", "pyproject.toml", "src/convgen_light_sheet/__init__.py", "src/convgen_light_sheet/plugin.py",
        "tests/test_light_sheet.py",
    ]  # fmt: skip
    assert 'light-sheet = "convgen_light_sheet.plugin"' in (package / "pyproject.toml").read_text()
    assert [p.name for p in (tmp_path / "work").iterdir()] == ["convgen-light-sheet"], "no temporary folder is left"

    site = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--no-index",
         "--target", str(site), str(package)],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CONVGEN_", "PYTEST_"))}
    env["PYTHONPATH"] = str(site)
    tests = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"], cwd=package, env=env,
                           capture_output=True, text=True, timeout=600)  # fmt: skip
    assert tests.returncode == 0, tests.stdout + tests.stderr
    assert "2 passed" in tests.stdout


@pytest.mark.parametrize("name", ["zstack", "light-sheet", "ome2", "a1-b2"])
def test_valid_names(name):
    assert scaffold.check_name(name) == name
    assert f"src/convgen_{name.replace('-', '_')}/plugin.py" in scaffold.files(name)


@pytest.mark.parametrize(
    ("name", "message"),
    [("Zstack", "lowercase"), ("z_stack", "lowercase"), ("2d", "starting with a letter"), ("a--b", "single dashes"),
     ("a-", "single dashes"), ("", "invalid plugin name"), ("x" * 41, "at most 40"), ("convgen-zstack", "prefix"),
     ("../evil", "invalid plugin name")],
)  # fmt: skip
def test_bad_names_are_one_line_errors(tmp_path, name, message):
    assert_one_line_error(invoke("plugins", "new", name, "--dir", tmp_path), exit_code=3, contains=[message])
    assert list(tmp_path.iterdir()) == []


def test_an_existing_folder_is_never_overwritten(tmp_path):
    (tmp_path / "convgen-zstack").mkdir()
    (tmp_path / "convgen-zstack" / "mine.py").write_text("keep me")
    assert_one_line_error(invoke("plugins", "new", "zstack", "--dir", tmp_path), exit_code=3, contains=["already exists"])
    assert [p.name for p in (tmp_path / "convgen-zstack").iterdir()] == ["mine.py"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["convgen-zstack"]

    (tmp_path / "file").write_text("")
    assert_one_line_error(invoke("plugins", "new", "zstack", "--dir", tmp_path / "file"), exit_code=3, contains=["is a file"])


def test_bare_plugins_still_lists(tmp_path):
    result = invoke("plugins")
    assert result.exit_code == 0 and "convgen.default_plugins.recipes" in result.stdout
    assert "new" in invoke("plugins", "--help").stdout


def test_the_tutorial_plugin_grew_from_the_scaffold():
    """docs/writing-plugins.md says so: the same entry point, and the generated recipe kept as it was."""
    generated = scaffold.files("zstack")
    example = ROOT / "examples" / "convgen-zstack"
    entry_point = '[project.entry-points.convgen]\nzstack = "convgen_zstack.plugin"\n'
    assert entry_point in generated["pyproject.toml"] and entry_point in (example / "pyproject.toml").read_text()
    plugin = generated["src/convgen_zstack/plugin.py"]
    describe = plugin[plugin.index("def describe") : plugin.index("@convgen.hookimpl")].strip()
    assert describe in (example / "src" / "convgen_zstack" / "plugin.py").read_text()
